"""What happens when an event does not come: the rules every wait follows (contract 3).

1. **Deadlines.** Each key has one. When it passes, the store is read once more (the live
   stream drops events in bursts), then a single batched call asks the API about every key
   still due (DescribeCloudAssistantStatus, DescribeInvocations, GetStack …).
2. **Only a final answer settles a key.** A command still `Pending`, `Running` or `Stopping`
   keeps its key open, with a new deadline from what the API said (when it started, plus its
   own timeout and a grace), never past the wait's limit. At the limit the key ends
   *unsettled*, with the last answer kept, and the caller decides (stop the command, report).
3. **Stragglers.** When the batch's events have gone quiet while some keys are open (no new
   settlement for an interval derived from the arrivals so far, at least `min_quiet` seconds),
   the open keys are looked up in the store and then reconciled early with one batched call,
   a bounded number of times with growing intervals. A lost event then costs seconds, not the
   whole deadline; the happy path (every event arrives) makes no call at all.
4. **Failures.** A reconciliation that fails is retried with back-off, listening to events in
   between. If it still fails, keys that events settled keep their results and the rest end
   unsettled with the error: the runbook publishes its report either way.

The waiter (`alicloud_runbooks.waiter`) applies these rules; the Cloud Assistant waits
(`alicloud_runbooks.cloud_assistant`) say what is final and when to ask again.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel

logger = logging.getLogger(__name__)


class Answer(BaseModel):
    """What the API says about one key."""

    data: dict[str, Any]
    final: bool = True
    recheck_at: datetime | None = None
    """For a non-final answer: when the key is worth asking about again (its new deadline)."""
    status: str | None = None
    """A word for logs and reports (`Running`, `offline`)."""


Reconciler = Callable[[list[str]], Awaitable[dict[str, Answer]]]
"""Ask the API about these keys with as few batched calls as it allows; keys it does not know
are left out of the answer."""


def _always(exc: Exception) -> bool:
    return True


@dataclass(frozen=True)
class StragglerPolicy:
    """When a quiet batch is reconciled early. `rounds=0` turns it off."""

    min_quiet: float = 2.0
    gap_factor: float = 4.0
    growth: float = 2.0
    rounds: int = 3

    def quiet_interval(self, settled_at: Sequence[float], rounds_done: int) -> float:
        """Silence that makes the open keys stragglers: several times the usual gap between
        the batch's arrivals (90th percentile), at least `min_quiet`, growing each round."""
        gaps = sorted(b - a for a, b in itertools.pairwise(settled_at))
        usual = gaps[int(0.9 * (len(gaps) - 1))] if gaps else 0.0
        return max(self.min_quiet, self.gap_factor * usual) * self.growth**rounds_done


@dataclass(frozen=True)
class RetryPolicy:
    """How a failing reconciliation is retried before its keys are given up."""

    attempts: int = 4
    first_delay: float = 1.0
    growth: float = 2.0
    max_delay: float = 8.0
    retryable: Callable[[Exception], bool] = field(default=_always)

    def delays(self) -> list[float]:
        delays, delay = [], self.first_delay
        for _ in range(self.attempts - 1):
            delays.append(delay)
            delay = min(delay * self.growth, self.max_delay)
        return delays


async def reconcile_with_retry(
    reconcile: Reconciler,
    still_open: Callable[[], list[str]],
    policy: RetryPolicy,
    pause: Callable[[float], Awaitable[None]],
    log: logging.Logger | logging.LoggerAdapter = logger,
    what: str = "reconciliation",
) -> dict[str, Answer]:
    """Call `reconcile` on the keys still open, retrying with back-off; `pause` listens to
    events meanwhile, so keys that settle by event are not asked about again."""
    delays = policy.delays()
    attempt = 0
    while True:
        keys = still_open()
        if not keys:
            return {}
        try:
            return await reconcile(keys)
        except Exception as exc:
            if attempt >= len(delays) or not policy.retryable(exc):
                raise
            log.warning(
                "%s failed (attempt %d of %d): %s; retrying in %.0fs",
                what,
                attempt + 1,
                policy.attempts,
                exc,
                delays[attempt],
            )
            await pause(delays[attempt])
            attempt += 1
