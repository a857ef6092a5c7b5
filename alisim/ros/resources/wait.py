"""`ALIYUN::ROS::WaitConditionHandle` and `ALIYUN::ROS::WaitCondition`.

The handle's `URL` is an HTTP endpoint on alisim (`POST /_ros/waitcondition?…&signature=…`,
`alisim/ros/signals.py`) that a command on an instance can `curl`, as its `CurlCli` does; the
SignalResource action signals it too. A signal is `{"status": "SUCCESS" | "FAILURE" |
"WARNING", "id": …, "data": …, "reason": …}` (status in any case, spaces ignored; without an
id, signals are numbered 1, 2, …; the same id again replaces the earlier signal).

The condition completes on `Count` SUCCESS signals, fails on the first FAILURE
(`WaitConditionFailure`) and after `Timeout` seconds, scaled by `time_scale`
(`WaitConditionTimeout: <n> of <Count> received`).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from alisim.ros.resources.base import Context, ResourceFailed, ResourceType, integer, text

if TYPE_CHECKING:
    from alisim.ros.models import Stack, StackResource

SIGNAL_PATH = "/_ros/waitcondition"
STATUSES = ("SUCCESS", "FAILURE", "WARNING")


class BadSignal(ValueError):
    """A signal that cannot be taken; the message says why."""


@dataclass
class Signal:
    status: str
    data: str
    reason: str
    at: float = field(default_factory=time.time)


@dataclass
class Handle:
    token: str
    signals: dict[str, Signal] = field(default_factory=dict)
    numbered: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def signal(self, status: Any, unique_id: Any = None, data: Any = "", reason: Any = "") -> str:
        normalized = str(status or "").strip().upper()
        if normalized not in STATUSES:
            raise BadSignal(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
        if unique_id in (None, ""):
            self.numbered += 1
            unique_id = self.numbered
        key = str(unique_id)
        if len(key) > 64:
            raise BadSignal("the signal id must be at most 64 characters")
        text_data = data if isinstance(data, str) else json.dumps(data)
        self.signals[key] = Signal(normalized, text_data, str(reason or ""))
        self.changed.set()
        self.changed = asyncio.Event()
        return key

    def count(self, status: str) -> int:
        return sum(1 for s in self.signals.values() if s.status == status)

    def forget_beyond(self, count: int) -> None:
        """Mode Full with Count: numbered signals above Count are dropped before an update."""
        for key in [k for k in self.signals if k.isdigit() and int(k) > count]:
            del self.signals[key]


def signal_url(stack: Stack, resource: StackResource, handle: Handle) -> str:
    query = urlencode(
        {
            "stackname": stack.name,
            "stackid": stack.stack_id,
            "resource": resource.logical_id,
            "signature": handle.token,
        }
    )
    return f"{stack.signal_base}{SIGNAL_PATH}?{query}"


class WaitConditionHandleType(ResourceType):
    name = "ALIYUN::ROS::WaitConditionHandle"
    attributes = frozenset({"URL", "Headers", "CurlCli", "WindowsCurlCli", "PowerShellCurlCli"})

    async def create(self, ctx: Context, props: dict[str, Any]) -> None:
        handle = Handle(token=secrets.token_urlsafe(24))
        ctx.resource.physical_id = str(uuid.uuid4())
        ctx.resource.state = handle
        url = signal_url(ctx.stack, ctx.resource, handle)
        headers = {"Content-Type": "application/json"}
        ctx.resource.attributes = {
            "URL": url,
            "Headers": headers,
            "CurlCli": f"curl -i -X POST -H 'Content-Type: application/json' '{url}'",
            "WindowsCurlCli": f'curl -i -X POST -H "Content-Type: application/json" "{url}"',
            "PowerShellCurlCli": "Invoke-WebRequest -UseBasicParsing -Method POST "
            f"-ContentType 'application/json' -Uri '{url}'",
        }

    async def update(self, ctx: Context, old: dict[str, Any], new: dict[str, Any]) -> None:
        handle: Handle = ctx.resource.state
        mode = text(new, "Mode", "Full")
        count = integer(new, "Count", -1)
        if mode == "Increment":
            handle.signals.clear()
            handle.numbered = 0
        elif count >= 0:
            handle.forget_beyond(count)
            handle.numbered = min(handle.numbered, count)


def handle_of(stack: Stack, physical_id: str) -> Handle:
    for resource in stack.resources.values():
        if resource.type == WaitConditionHandleType.name and resource.physical_id == physical_id:
            return resource.state
    raise ResourceFailed(
        "InvalidParameter", f"Handle {physical_id!r} is not a WaitConditionHandle of this stack."
    )


class WaitConditionType(ResourceType):
    name = "ALIYUN::ROS::WaitCondition"
    attributes = frozenset(
        {"Data", "ErrorData", "JoinedErrorData", "LastData", "LastErrorData", "JoinedLastErrorData"}
    )
    required = ("Handle", "Timeout")

    async def create(self, ctx: Context, props: dict[str, Any]) -> None:
        handle = handle_of(ctx.stack, text(props, "Handle") or "")
        count = integer(props, "Count", 1, 0)
        timeout = integer(props, "Timeout", 0, 1, 43200)
        ctx.resource.physical_id = str(uuid.uuid4())
        ctx.resource.state = handle
        await self._wait(ctx, handle, count, ctx.cloud.settings.scaled(timeout))

    async def _wait(self, ctx: Context, handle: Handle, count: int, seconds: float) -> None:
        deadline = asyncio.get_running_loop().time() + seconds
        while True:
            ctx.resource.progress = (min(handle.count("SUCCESS"), count), count)
            self._attributes(ctx, handle)
            failures = [s for s in handle.signals.values() if s.status == "FAILURE"]
            if failures:
                reasons = "; ".join(s.reason or s.data or "FAILURE" for s in failures)
                raise ResourceFailed("WaitConditionFailure", reasons)
            if handle.count("SUCCESS") >= count:
                return
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise ResourceFailed(
                    "WaitConditionTimeout", f"{handle.count('SUCCESS')} of {count} received"
                )
            try:
                async with asyncio.timeout(remaining):
                    await handle.changed.wait()
            except TimeoutError:
                continue

    @staticmethod
    def _attributes(ctx: Context, handle: Handle) -> None:
        data = {k: s.data for k, s in handle.signals.items() if s.status != "FAILURE"}
        errors = {k: s.data or s.reason for k, s in handle.signals.items() if s.status == "FAILURE"}
        ctx.resource.attributes = {
            "Data": json.dumps(data),
            "ErrorData": json.dumps(errors),
            "JoinedErrorData": "\n".join(errors.values()),
            "LastData": json.dumps(data),
            "LastErrorData": json.dumps(errors),
            "JoinedLastErrorData": "\n".join(errors.values()),
        }

    async def update(self, ctx: Context, old: dict[str, Any], new: dict[str, Any]) -> None:
        handle = handle_of(ctx.stack, text(new, "Handle") or "")
        ctx.resource.state = handle
        count = integer(new, "Count", 1, 0)
        await self._wait(
            ctx, handle, count, ctx.cloud.settings.scaled(integer(new, "Timeout", 0, 1, 43200))
        )
