"""ROS's state: the stacks, the records of VPC-like resources, and the waits of resources on
other services (an instance Running, an invocation finished), woken by the events those
services publish (`on_event`), as ROS itself would learn of them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from alisim.ros.engine import Engine
from alisim.ros.models import Stack
from alisim.ros.resources.network import Network

if TYPE_CHECKING:
    from alisim.cloud import Cloud

log = logging.getLogger("alisim.ros")

# The keys of other services' events that a wait can be woken by.
_EVENT_KEYS = ("resourceId", "invokeId", "instanceId")


class RosService:
    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud
        self.stacks: dict[str, Stack] = {}
        self.network = Network(cloud.settings.region)
        self.engine = Engine(cloud)
        self._watchers: dict[str, set[asyncio.Event]] = {}

    # ----- stacks
    def by_name(self, name: str) -> Stack | None:
        return next((s for s in self.stacks.values() if s.name == name), None)

    def start(self, stack: Stack, work: Any) -> None:
        """Run an operation on the stack in the background (the API answers at once)."""
        stack.task = asyncio.get_running_loop().create_task(self._guarded(stack, work))

    async def _guarded(self, stack: Stack, work: Any) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("ROS stack %s: the operation failed inside alisim", stack.stack_id)

    def forget(self, stack: Stack) -> None:
        self.stacks.pop(stack.stack_id, None)

    # ----- waits on other services
    def on_event(self, event: dict[str, Any]) -> None:
        data = event.get("data")
        if not isinstance(data, dict) or not self._watchers:
            return
        for key in _EVENT_KEYS:
            value = data.get(key)
            if isinstance(value, str):
                for waiter in self._watchers.get(value, ()):
                    waiter.set()

    async def until(self, keys: list[str], settled: Callable[[], bool]) -> None:
        """Wait until `settled()`, checking again whenever an event about one of `keys`
        (an instance or invocation id) is published."""
        while not settled():
            woken = asyncio.Event()
            for key in keys:
                self._watchers.setdefault(key, set()).add(woken)
            try:
                await woken.wait()
            finally:
                for key in keys:
                    waiters = self._watchers.get(key)
                    if waiters is not None:
                        waiters.discard(woken)
                        if not waiters:
                            del self._watchers[key]

    # ----- the service list's hooks
    def summary(self) -> dict[str, int]:
        return {"stacks": len(self.stacks)}

    async def shutdown(self) -> None:
        tasks = [s.task for s in self.stacks.values() if s.task is not None and not s.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
