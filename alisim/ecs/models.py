"""ECS instance state as alisim keeps it."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path


class InstanceStatus(StrEnum):
    PENDING = "Pending"
    STARTING = "Starting"
    RUNNING = "Running"
    STOPPING = "Stopping"
    STOPPED = "Stopped"


@dataclass
class Instance:
    instance_id: str
    name: str
    hostname: str
    image_id: str
    instance_type: str
    os_type: str
    region: str
    zone: str
    root: Path
    agent_version: str
    tags: dict[str, str] = field(default_factory=dict)
    private_ip: str = ""
    vpc_id: str = ""
    vswitch_id: str = ""
    security_group_ids: list[str] = field(default_factory=list)
    user_data: bytes = b""
    user_data_task: asyncio.Task[None] | None = None
    status: InstanceStatus = InstanceStatus.PENDING
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    agent_online: bool = False
    last_heartbeat_at: float | None = None
    last_invoked_at: float | None = None
    invocation_count: int = 0
    deleted: bool = False
    lifecycle: asyncio.Task[None] | None = None

    @property
    def is_windows(self) -> bool:
        return self.os_type == "windows"

    @property
    def home(self) -> Path:
        """The instance's filesystem: absolute paths in a command land below it."""
        return self.root / "fs"
