"""The event log: every event alisim publishes, in order, readable at `/_alisim/events`.

Listeners (EventBridge rule delivery, CloudMonitor pushes) are called on publish, in the
server's event loop.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

Listener = Callable[[dict[str, Any]], None]


class EventLog:
    def __init__(self, limit: int) -> None:
        self._events: deque[tuple[int, dict[str, Any]]] = deque(maxlen=limit)
        self._seq = 0
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def publish(self, event: dict[str, Any]) -> None:
        self._seq += 1
        self._events.append((self._seq, event))
        for listener in self._listeners:
            listener(event)

    def clear(self) -> None:
        self._events.clear()

    @property
    def last_seq(self) -> int:
        return self._seq

    def query(
        self,
        *,
        after: int = 0,
        type: str | None = None,
        subject_contains: str | None = None,
        limit: int = 1000,
    ) -> list[tuple[int, dict[str, Any]]]:
        found: list[tuple[int, dict[str, Any]]] = []
        for seq, event in self._events:
            if seq <= after:
                continue
            if type is not None and event.get("type") != type:
                continue
            if subject_contains is not None and subject_contains not in str(
                event.get("subject", "")
            ) + str(event.get("data", "")):
                continue
            found.append((seq, event))
            if len(found) >= limit:
                break
        return found
