"""The times of API calls and published events, for benches that measure from outside the
runbooks (`GET /_alisim/call-log`): when a runbook called RunCommand, say, against when the
last FirstHeartbeat was published. Bounded: the oldest entries go first."""

from __future__ import annotations

import time
from collections import deque
from typing import Any


class CallLog:
    def __init__(self, limit: int) -> None:
        self.calls: deque[dict[str, Any]] = deque(maxlen=limit)
        self.events: deque[dict[str, Any]] = deque(maxlen=limit)

    def call(self, product: str, action: str) -> None:
        self.calls.append({"product": product, "action": action, "time": time.time()})

    def event(self, event: dict[str, Any]) -> None:
        self.events.append(
            {"type": event.get("type"), "subject": event.get("subject", ""), "time": time.time()}
        )

    def clear(self) -> None:
        self.calls.clear()
        self.events.clear()

    def since(self, moment: float) -> dict[str, list[dict[str, Any]]]:
        return {
            "calls": [c for c in self.calls if c["time"] >= moment],
            "events": [e for e in self.events if e["time"] >= moment],
        }
