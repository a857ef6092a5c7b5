"""Cloud Assistant commands and invocations, with the documented status vocabulary."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

FINAL = {"Success", "Failed", "Timeout", "Cancelled", "Terminated", "Invalid", "Aborted", "Error"}
FAILED_CLASS = {"Failed", "Timeout", "Invalid", "Aborted", "Error"}
STOPPED_CLASS = {"Cancelled", "Terminated"}

INLINE_OUTPUT_LIMIT = 24 * 1024


@dataclass
class Command:
    command_id: str
    name: str
    type: str
    content: bytes
    description: str = ""
    working_dir: str = ""
    timeout: int = 60
    enable_parameter: bool = False
    parameter_names: list[str] = field(default_factory=list)
    keep: bool = True
    tags: dict[str, str] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)
    invoke_times: int = 0


@dataclass
class InvokeInstance:
    instance_id: str
    status: str = "Pending"
    exit_code: int | None = None
    output: bytes = b""
    output_total: int = 0
    start_time: float | None = None
    finish_time: float | None = None
    stop_time: float | None = None
    update_time: float = field(default_factory=time.time)
    error_code: str = ""
    error_info: str = ""
    repeats: int = 0
    oss_status: str = ""
    oss_uri: str = ""
    oss_error_code: str = ""
    oss_error_info: str = ""
    oss_status_code: str = ""
    created_at: float = field(default_factory=time.time)
    stop_requested: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    @property
    def final(self) -> bool:
        return self.status in FINAL

    @property
    def dropped(self) -> int:
        return max(0, self.output_total - INLINE_OUTPUT_LIMIT)

    @property
    def inline_output(self) -> bytes:
        return self.output[:INLINE_OUTPUT_LIMIT]

    @property
    def record_status(self) -> str:
        """`InvokeRecordStatus` / `InstanceInvokeStatus`: the older, coarser vocabulary."""
        if self.status == "Success":
            return "Finished"
        if self.status in FAILED_CLASS:
            return "Failed"
        if self.status in STOPPED_CLASS:
            return "Stopped"
        return self.status


@dataclass
class Invocation:
    invoke_id: str
    command: Command
    instances: dict[str, InvokeInstance]
    parameters: dict[str, str]
    timeout: int
    working_dir: str
    username: str
    oss_output_delivery: str
    tags: dict[str, str] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)
    repeat_mode: str = "Once"

    @property
    def status(self) -> str:
        """The overall `InvocationStatus`, by the documented aggregation rules."""
        statuses = {ii.status for ii in self.instances.values()}
        for transient in ("Pending", "Running", "Stopping"):
            if transient in statuses:
                return transient
        if statuses <= STOPPED_CLASS:
            return "Stopped"
        if statuses <= STOPPED_CLASS | {"Success"}:
            return "Success"
        if statuses <= STOPPED_CLASS | FAILED_CLASS:
            return "Failed"
        return "PartialFailed"

    @property
    def invoke_status(self) -> str:
        """The deprecated `InvokeStatus`, still read by older runbooks."""
        return {
            "Pending": "Running",
            "Running": "Running",
            "Stopping": "Running",
            "Success": "Finished",
            "Failed": "Failed",
            "PartialFailed": "PartialFinished",
            "Stopped": "Stopped",
        }[self.status]
