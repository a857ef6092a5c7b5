"""EventBridge resources: buses, rules and targets, in the SDK's own field names.

Targets arrive as JSON in the query (`EventTargets`, `Targets`) with PascalCase keys; the
pydantic models parse them and dump them back unchanged for GetRule and ListTargets.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_pascal

from alisim.eventbridge.patterns import EventPattern
from alisim.eventbridge.transform import ORIGINAL, BodyTransform, TransformError

RetryStrategy = Literal["BACKOFF_RETRY", "EXPONENTIAL_DECAY_RETRY"]
DEFAULT_RETRY_STRATEGY: RetryStrategy = "BACKOFF_RETRY"
HTTP_TARGET_TYPES = frozenset({"http", "https", "acs.api.destination", "acs.http"})


def retry_delays(strategy: RetryStrategy) -> list[float]:
    """Seconds before each retry, as documented (before `time_scale`).

    BACKOFF_RETRY: 3 retries, 10-20 s apart at random. EXPONENTIAL_DECAY_RETRY: 176 retries
    over a day, 1, 2, 4 … 256 s and then 512 s for the remaining 167.
    """
    if strategy == "EXPONENTIAL_DECAY_RETRY":
        return [float(min(2**i, 512)) for i in range(176)]
    return [random.uniform(10, 20) for _ in range(3)]


class _SdkModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_pascal, populate_by_name=True, extra="ignore", frozen=True
    )

    def wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)


class TargetParam(_SdkModel):
    resource_key: str = Field(min_length=1)
    form: str = Field(min_length=1)
    value: str | None = None
    template: str | None = None


class DeadLetterQueue(_SdkModel):
    arn: str | None = None
    network: str | None = None
    security_group_id: str | None = None
    v_switch_ids: str | None = None
    vpc_id: str | None = None


class ConcurrentConfig(_SdkModel):
    concurrency: int | None = Field(default=None, ge=1)


class Target(_SdkModel):
    id: str = Field(min_length=1, max_length=127)
    type: str = Field(min_length=1)
    endpoint: str | None = None
    push_retry_strategy: RetryStrategy | None = None
    errors_tolerance: Literal["ALL", "NONE"] | None = None
    param_list: list[TargetParam] = []
    dead_letter_queue: DeadLetterQueue | None = None
    concurrent_config: ConcurrentConfig | None = None

    def param(self, key: str) -> TargetParam | None:
        wanted = key.lower()
        return next((p for p in self.param_list if p.resource_key.lower() == wanted), None)

    @property
    def is_http(self) -> bool:
        return self.type.lower() in HTTP_TARGET_TYPES

    @property
    def url(self) -> str | None:
        """ParamList `url` (the console's HTTP target), else an http(s) Endpoint."""
        param = self.param("url")
        if param is not None and param.value:
            return param.value
        if self.endpoint and self.endpoint.lower().startswith(("http://", "https://")):
            return self.endpoint
        return None

    @property
    def retry_strategy(self) -> RetryStrategy:
        return self.push_retry_strategy or DEFAULT_RETRY_STRATEGY

    def body(self) -> BodyTransform:
        param = self.param("body")
        if param is None:
            return ORIGINAL
        return BodyTransform.build(param.form.upper(), param.value, param.template)

    def check(self) -> None:
        """Why this target cannot work, as a `ValueError`; PutTargets reports it per entry."""
        if not self.is_http:
            return
        url = self.url
        if not url:
            raise ValueError(f"target {self.id}: an HTTP target needs a ParamList 'url'")
        if not url.lower().startswith(("http://", "https://")):
            raise ValueError(f"target {self.id}: the url {url!r} is not http(s)")
        try:
            self.body()
        except TransformError as exc:
            raise ValueError(f"target {self.id}: {exc}") from None


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class EventBus:
    name: str
    description: str = ""
    created_ms: int = field(default_factory=now_ms)

    def arn(self, region: str, account_id: str) -> str:
        return f"acs:eventbridge:{region}:{account_id}:eventbus/{self.name}"


@dataclass
class Rule:
    bus: str
    name: str
    pattern: EventPattern
    pattern_text: str
    status: str = "ENABLE"
    description: str = ""
    created_ms: int = field(default_factory=now_ms)
    targets: dict[str, Target] = field(default_factory=dict)

    def arn(self, region: str, account_id: str) -> str:
        return f"acs:eventbridge:{region}:{account_id}:eventbus/{self.bus}/rule/{self.name}"

    @property
    def enabled(self) -> bool:
        return self.status == "ENABLE"
