"""Stacks, their resources and their events as alisim keeps them, with ROS's status
vocabulary (`shared/notes/ros-and-mns-facts.md` §2)."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from alisim.ros.template.parse import ResourceSpec, Template

STACK_TYPE = "ALIYUN::ROS::Stack"


class StackStatus(StrEnum):
    CREATE_IN_PROGRESS = "CREATE_IN_PROGRESS"
    CREATE_FAILED = "CREATE_FAILED"
    CREATE_COMPLETE = "CREATE_COMPLETE"
    UPDATE_IN_PROGRESS = "UPDATE_IN_PROGRESS"
    UPDATE_FAILED = "UPDATE_FAILED"
    UPDATE_COMPLETE = "UPDATE_COMPLETE"
    DELETE_IN_PROGRESS = "DELETE_IN_PROGRESS"
    DELETE_FAILED = "DELETE_FAILED"
    DELETE_COMPLETE = "DELETE_COMPLETE"
    CREATE_ROLLBACK_IN_PROGRESS = "CREATE_ROLLBACK_IN_PROGRESS"
    CREATE_ROLLBACK_FAILED = "CREATE_ROLLBACK_FAILED"
    CREATE_ROLLBACK_COMPLETE = "CREATE_ROLLBACK_COMPLETE"
    ROLLBACK_IN_PROGRESS = "ROLLBACK_IN_PROGRESS"
    ROLLBACK_FAILED = "ROLLBACK_FAILED"
    ROLLBACK_COMPLETE = "ROLLBACK_COMPLETE"

    @property
    def in_progress(self) -> bool:
        return self.endswith("_IN_PROGRESS")

    @property
    def action(self) -> str:
        """`CREATE`, `UPDATE`, `CREATE_ROLLBACK`…: the status without its outcome."""
        return self.rsplit("_", 2 if self.in_progress else 1)[0]


UPDATABLE = {
    StackStatus.CREATE_COMPLETE,
    StackStatus.UPDATE_FAILED,
    StackStatus.UPDATE_COMPLETE,
    StackStatus.ROLLBACK_COMPLETE,
    StackStatus.ROLLBACK_FAILED,
}


class ResourceStatus(StrEnum):
    INIT_COMPLETE = "INIT_COMPLETE"
    CREATE_IN_PROGRESS = "CREATE_IN_PROGRESS"
    CREATE_COMPLETE = "CREATE_COMPLETE"
    CREATE_FAILED = "CREATE_FAILED"
    UPDATE_IN_PROGRESS = "UPDATE_IN_PROGRESS"
    UPDATE_COMPLETE = "UPDATE_COMPLETE"
    UPDATE_FAILED = "UPDATE_FAILED"
    DELETE_IN_PROGRESS = "DELETE_IN_PROGRESS"
    DELETE_COMPLETE = "DELETE_COMPLETE"
    DELETE_FAILED = "DELETE_FAILED"


@dataclass
class StackEvent:
    stack_id: str
    stack_name: str
    logical_id: str
    physical_id: str
    resource_type: str
    status: str
    reason: str
    created_at: float = field(default_factory=time.time)
    event_id: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass
class StackResource:
    """One resource of a stack (one copy, `Web[2]`, of a resource with `Count`)."""

    logical_id: str
    spec: ResourceSpec
    index: int | None = None
    status: ResourceStatus = ResourceStatus.INIT_COMPLETE
    reason: str = ""
    physical_id: str = ""
    properties: dict[str, Any] = field(default_factory=dict)
    attributes: dict[str, Any] = field(default_factory=dict)
    state: Any = None
    """What the resource type keeps (its own object)."""
    created_at: float | None = None
    updated_at: float | None = None
    progress: tuple[float, float] | None = None
    """(done, target) for GetStack's progress details (e.g. signals received of Count)."""

    @property
    def type(self) -> str:
        return self.spec.type

    @property
    def template_name(self) -> str:
        return self.spec.name

    @property
    def exists(self) -> bool:
        """Something was created that a delete or a rollback must remove."""
        if self.status in (ResourceStatus.INIT_COMPLETE, ResourceStatus.DELETE_COMPLETE):
            return False
        return bool(self.physical_id) or self.state is not None


@dataclass
class OperationError:
    """What failed, for GetStack's OperationInfo and the status reasons."""

    action: str
    code: str
    message: str
    logical_id: str = ""
    resource_type: str = ""
    request_id: str = ""


@dataclass
class Stack:
    stack_id: str
    name: str
    region: str
    template: Template
    template_body: str
    given: dict[str, str]
    """The parameter values the caller gave (UsePreviousParameters reuses them)."""
    values: dict[str, Any]
    """Every parameter's typed value."""
    disable_rollback: bool
    timeout_minutes: int
    notification_urls: list[str]
    tags: dict[str, str]
    deletion_protection: str = "Disabled"
    parallelism: int = 0
    caller: str = ""
    request_id: str = ""
    signal_base: str = ""
    """Where this stack's wait-condition signal URLs point (the host the caller reached)."""
    status: StackStatus = StackStatus.CREATE_IN_PROGRESS
    reason: str = ""
    created_at: float = field(default_factory=time.time)
    updated_at: float | None = None
    resources: dict[str, StackResource] = field(default_factory=dict)
    retired: list[StackResource] = field(default_factory=list)
    """Resources an update replaced or dropped that still exist (deleted with the stack)."""
    events: list[StackEvent] = field(default_factory=list)
    operation_error: OperationError | None = None
    task: asyncio.Task[None] | None = None
    cancel: asyncio.Event | None = None
    """Set by CancelUpdateStack; `cancel_type` says Quick or Safe."""
    cancel_type: str = "Safe"
