"""Fault injection: throttle or fail API calls; drop, duplicate, delay or reorder event pushes;
make ROS resources fail, take longer or never finish."""

from __future__ import annotations

import random
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from alisim.errors import ApiError

_ERRORS: dict[str, tuple[int, str]] = {
    "Throttling.User": (400, "Request was denied due to user flow control."),
    "Throttling": (400, "Request was denied due to request throttling."),
    "ServiceUnavailable": (503, "The request has failed due to a temporary failure of the server."),
    "InternalError": (500, "The request processing has failed due to some unknown error."),
    # A RAM user without the permission (ECS's wording).
    "Forbidden.RAM": (
        403,
        "User not authorized to operate on the specified resource, or this API doesn't "
        "support RAM.",
    ),
}


class ApiFault(BaseModel):
    """Fail calls to `action` (`*` for all) of `product` (`*` for all) with `error`."""

    product: str = "*"
    action: str = "*"
    error: Literal[
        "Throttling.User", "Throttling", "ServiceUnavailable", "InternalError", "Forbidden.RAM"
    ] = "Throttling.User"
    rate: float = Field(default=1.0, ge=0, le=1)
    count: int | None = Field(default=None, ge=1, description="Stop after failing this many.")
    after: int = Field(
        default=0, ge=0, description="Let this many matching calls through before failing."
    )
    retry_after_ms: int = Field(default=100, ge=0)


class DeliveryFault(BaseModel):
    """Misbehave on EventBridge and CloudMonitor pushes, as a lossy network would."""

    drop_rate: float = Field(default=0.0, ge=0, le=1, description="Skip the push, as if lost.")
    duplicate_rate: float = Field(default=0.0, ge=0, le=1, description="Push it twice.")
    delay_ms: int = Field(default=0, ge=0, description="Hold each push this long first.")
    delay_rate: float = Field(default=1.0, ge=0, le=1, description="Share of pushes delayed.")
    reorder_rate: float = Field(
        default=0.0, ge=0, le=1, description="Hold a push and send it after the next one."
    )
    reorder_hold_ms: int = Field(
        default=1000, ge=0, description="Release a held push if no next one comes by then."
    )
    event_types: list[str] = Field(
        default_factory=list,
        description="Misbehave only on these event types, e.g. ecs:CloudAssistant:TaskCompleted "
        "(empty: on every event).",
    )

    contains: list[str] = Field(
        default_factory=list,
        description="Misbehave only on events whose pushed body mentions one of these strings, "
        "e.g. some instance ids (empty: on every event).",
    )

    def applies_to(self, event_type: str, body: str = "") -> bool:
        if self.event_types and event_type not in self.event_types:
            return False
        return not self.contains or any(text in body for text in self.contains)


class RosFault(BaseModel):
    """Make a ROS resource operation fail, take longer or hang (its stack then times out).
    A filter left empty matches any stack, resource or type."""

    stack_name: str | None = None
    logical_id: str | None = Field(
        default=None, description="The template's name (Web) or one copy of a Count (Web[1])."
    )
    resource_type: str | None = Field(default=None, description="e.g. ALIYUN::ECS::Instance")
    operation: Literal["create", "update", "delete"] = "create"
    reason: str | None = Field(
        default=None, min_length=1, description="Fail with this message (after any delay)."
    )
    code: str = Field(default="InjectedFault", min_length=1, description="The error code.")
    delay_seconds: float = Field(
        default=0, ge=0, description="Simulated seconds first, scaled by time_scale."
    )
    hang: bool = Field(default=False, description="Never finish (until the stack times out).")
    count: int | None = Field(default=None, ge=1, description="Apply this many times.")

    @model_validator(mode="after")
    def _does_something(self) -> RosFault:
        if self.reason is None and not self.delay_seconds and not self.hang:
            raise ValueError("a ROS fault needs a reason, a delay_seconds or hang")
        return self

    def matches(
        self, stack: str, logical_id: str, template_name: str, resource_type: str, operation: str
    ) -> bool:
        return (
            self.operation == operation
            and self.stack_name in (None, stack)
            and self.logical_id in (None, logical_id, template_name)
            and self.resource_type in (None, resource_type)
            and (self.count is None or self.count > 0)
        )


class FaultPlan(BaseModel):
    api: list[ApiFault] = []
    delivery: DeliveryFault = DeliveryFault()
    ros: list[RosFault] = []


class Faults:
    def __init__(self) -> None:
        self.plan = FaultPlan()
        self.injected = 0

    def replace(self, plan: FaultPlan) -> None:
        self.plan = plan

    def check_api(self, product: str, action: str) -> None:
        for fault in self.plan.api:
            if fault.product not in ("*", product) or fault.action not in ("*", action):
                continue
            if fault.count is not None and fault.count <= 0:
                continue
            if fault.after > 0:
                fault.after -= 1
                continue
            if random.random() >= fault.rate:
                continue
            if fault.count is not None:
                fault.count -= 1
            self.injected += 1
            status, message = _ERRORS[fault.error]
            retry_after = fault.retry_after_ms if fault.error.startswith("Throttling") else None
            raise ApiError(fault.error, message, status, retry_after_ms=retry_after)

    def ros_fault(
        self,
        *,
        stack: str,
        logical_id: str,
        template_name: str,
        resource_type: str,
        operation: str,
    ) -> RosFault | None:
        """The first ROS fault for this resource operation, counted as injected."""
        for fault in self.plan.ros:
            if fault.matches(stack, logical_id, template_name, resource_type, operation):
                if fault.count is not None:
                    fault.count -= 1
                self.injected += 1
                return fault
        return None
