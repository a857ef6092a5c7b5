"""Rate control for fleet runs, in the semantics of OOS's RateControl (README, "Fleet runs").

Pure planning and accounting, no Prefect flow code: which instances go in which batch, how
many may run at once, how many may fail, and the ledger that counts each instance's result
once. `flows/rollout.py` runs the plan.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, Field, model_validator

_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


def _amount(value: object) -> int | str:
    """A count (an int, or digits) or a percentage of the targets ("10%"), with a message that
    says which forms are accepted."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a count or a percentage: give e.g. 10 or '10%'")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value!r}: a count cannot be negative")
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return int(text)
        match = _PERCENT.match(text)
        if match:
            percent = float(match.group(1))
            if not 0 <= percent <= 100:
                raise ValueError(f"{value!r}: a percentage must be between 0% and 100%")
            return f"{match.group(1)}%"
    raise ValueError(
        f"{value!r} is not a count or a percentage: give a whole number (10) or a percentage "
        "of the targets ('10%')"
    )


Amount = Annotated[
    Annotated[int, Field(ge=0)] | Annotated[str, Field(pattern=r"^\d+(\.\d+)?%$")],
    BeforeValidator(_amount),
]
"""A count or a percentage of the targets, as OOS takes `Concurrency` and `MaxErrors`."""

Mode = Literal["batch", "concurrency"]
Approval = Literal["never", "first_batch", "every_batch"]


def _percent(amount: int | str) -> float | None:
    return float(amount[:-1]) if isinstance(amount, str) else None


def at_least_one(amount: int | str, total: int) -> int:
    """A batch size or a concurrency for `total` targets: a percentage rounds up, never to 0."""
    percent = _percent(amount)
    if percent is None:
        return max(1, int(amount))
    return max(1, math.ceil(percent * total / 100 - 1e-9))


def allowed_errors(amount: int | str, total: int) -> int:
    """How many instances may fail: a percentage of the targets rounds down (10% of 25 is 2)."""
    percent = _percent(amount)
    if percent is None:
        return int(amount)
    return math.floor(percent * total / 100 + 1e-9)


class RateControl(BaseModel):
    """How a fleet run spreads over its targets (OOS RateControl, side by side in the README).

    `mode="batch"`: batches of `batch_size` one after the other, each started when the one
    before has its results (and the pause has passed); `concurrency` caps the instances of a
    batch running at once (OOS's ConcurrencyInBatches; default: the whole batch).
    `mode="concurrency"`: a sliding window of `concurrency` instances (default 1): as each
    result comes in, the next instance starts.
    `max_errors`: the run starts nothing new once more instances than this have failed.
    """

    mode: Mode = Field(
        default="batch", description="batch: one batch after another; concurrency: a sliding window"
    )
    batch_size: Amount = Field(
        default="10%",
        description="Instances per batch (batch mode): a count or '10%' of the targets",
    )
    concurrency: Amount | None = Field(
        default=None,
        description="Instances running at once: the window (concurrency mode, default 1) or within "
        "a batch (batch mode, default the whole batch); a count or a percentage of the targets",
    )
    max_errors: Amount = Field(
        default=0,
        description="Failed instances tolerated before no new instance starts: a count or a "
        "percentage of the targets (rounded down); 0 stops at the first failure",
    )
    canary: int | None = Field(
        default=None,
        ge=1,
        description="Instances in a first batch of their own; any failure there stops the run",
    )
    pause_seconds: float = Field(default=0, ge=0, description="Seconds to wait between batches")
    approval: Approval = Field(
        default="never",
        description="Pause for an operator's approval (Prefect's resume form) after the first "
        "batch or after every batch, as OOS's FirstBatchPause / EveryBatchPause",
    )
    approval_timeout: float = Field(
        default=3600, gt=0, description="Seconds to wait for an approval before the run stops"
    )
    max_concurrency: int | None = Field(
        default=None,
        ge=1,
        description="Instances running commands at once across all fleet runs sharing "
        "`concurrency_limit` (a Prefect global concurrency limit, created with this value if "
        "missing); none: no limit across runs",
    )
    concurrency_limit: str = Field(
        default="runbooks-run-command",
        min_length=1,
        max_length=100,
        pattern=r"^[^/%&><]+$",
        description="Name of the Prefect global concurrency limit shared by fleet runs",
    )

    @model_validator(mode="after")
    def _meaningful(self) -> RateControl:
        for name in ("batch_size", "concurrency"):
            value = getattr(self, name)
            if value is not None and (value == 0 or _percent(value) == 0):
                raise ValueError(f"{name} must be at least 1 or a percentage above 0%")
        return self

    def _width(self, size: int, total: int) -> int:
        if self.concurrency is not None:
            return min(size, at_least_one(self.concurrency, total))
        return size if self.mode == "batch" else 1

    def plan(self, targets: Sequence[str]) -> Plan:
        """The batches, each with how many of its instances may run at once."""
        total = len(targets)
        rest = list(targets)
        batches: list[Batch] = []
        if self.canary and rest:
            canary, rest = rest[: self.canary], rest[self.canary :]
            batches.append(Batch(1, canary, self._width(len(canary), total), canary=True))
        if self.mode == "concurrency":
            if rest:
                batches.append(Batch(len(batches) + 1, rest, self._width(len(rest), total)))
        else:
            size = at_least_one(self.batch_size, total)
            for start in range(0, len(rest), size):
                chunk = rest[start : start + size]
                batches.append(Batch(len(batches) + 1, chunk, self._width(len(chunk), total)))
        return Plan(batches=batches, total=total, budget=allowed_errors(self.max_errors, total))

    def pauses_for_approval_after(self, batch: Batch) -> bool:
        return self.approval == "every_batch" or (
            self.approval == "first_batch" and batch.number == 1
        )


@dataclass(frozen=True)
class Batch:
    number: int
    instance_ids: list[str]
    width: int
    """How many of its instances may run at once (before any limit across runs)."""
    canary: bool = False

    @property
    def size(self) -> int:
        return len(self.instance_ids)


@dataclass(frozen=True)
class Plan:
    batches: list[Batch]
    total: int
    budget: int
    """Failures tolerated; one more stops the run."""


@dataclass
class Ledger:
    """Each instance's result counted once, whichever way it came (an event, reconciliation,
    or the end of its group), and the error budget against it."""

    total: int
    budget: int
    succeeded: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)

    def count(self, instance_id: str, ok: bool) -> bool:
        """Record a result; False if this instance's result was already counted."""
        if instance_id in self.succeeded or instance_id in self.failed:
            return False
        (self.succeeded if ok else self.failed).add(instance_id)
        return True

    def counted(self, instance_id: str) -> bool:
        return instance_id in self.succeeded or instance_id in self.failed

    @property
    def done(self) -> int:
        return len(self.succeeded) + len(self.failed)

    @property
    def exceeded(self) -> bool:
        return len(self.failed) > self.budget

    @property
    def budget_left(self) -> int:
        """Failures still tolerated (negative once exceeded)."""
        return self.budget - len(self.failed)
