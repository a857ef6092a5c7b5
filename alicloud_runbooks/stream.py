"""One live Prefect event subscription, shared by the waits of one batch.

It is opened *before* the action that causes the events (RunInstances, RunCommand), so none
slips between the call and the wait. Events go straight to the waits attached to it; what no
attached wait takes is kept, bounded, for a wait that attaches later (OutputDelivered events
arrive while the TaskCompleted wait is still on). A stream that cannot be narrowed by resource
when it opens (the heartbeats of instances not launched yet) is narrowed with `narrow()` as
soon as the ids are known, and then holds only their events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Protocol

from prefect.events.clients import get_events_subscriber
from prefect.events.filters import (
    EventFilter,
    EventNameFilter,
    EventRelatedFilter,
    EventResourceFilter,
)
from prefect.events.schemas.events import Event

logger = logging.getLogger(__name__)

BACKLOG_LIMIT = 50_000


class Consumer(Protocol):
    """A wait attached to a stream."""

    def offer(self, event: Event, *, live: bool, received_at: datetime) -> bool:
        """Take the event; True if it was for this consumer (settling or duplicate)."""
        ...

    def stream_gap(self) -> None:
        """The subscription dropped and reopened: events may have passed unseen."""
        ...


class EventStream:
    def __init__(
        self,
        events: Collection[str],
        log: logging.Logger | logging.LoggerAdapter | None = None,
        resource_ids: Collection[str] = (),
        related_ids: Collection[str] = (),
        reopen_every: float = 3.0,
        subscribe_timeout: float = 5.0,
        backlog_limit: int = BACKLOG_LIMIT,
    ) -> None:
        self.events = list(events)
        self.log = log or logger
        self.resource_ids: set[str] = set(resource_ids)
        self.related_ids = list(related_ids)
        self.reopen_every = reopen_every
        self.subscribe_timeout = subscribe_timeout
        self.backlog_limit = backlog_limit
        self.received = 0
        self.backlog_dropped = 0
        self.reconnects = 0
        self._backlog: OrderedDict[str, tuple[Event, datetime]] = OrderedDict()
        self._consumers: list[Consumer] = []
        self._connected = False
        self._ever_connected = False
        self._tried = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        """Whether the subscription is open right now."""
        return self._connected

    @property
    def consumers(self) -> tuple[Consumer, ...]:
        return tuple(self._consumers)

    @property
    def backlog_size(self) -> int:
        return len(self._backlog)

    def filter(self) -> EventFilter:
        return EventFilter(
            event=EventNameFilter(name=self.events),
            resource=EventResourceFilter(id=sorted(self.resource_ids))
            if self.resource_ids
            else None,
            related=EventRelatedFilter(id=self.related_ids) if self.related_ids else None,
        )

    async def __aenter__(self) -> EventStream:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        self._tried.clear()
        self._pump = asyncio.create_task(self._run())
        try:
            await asyncio.wait_for(self._tried.wait(), self.subscribe_timeout)
        except TimeoutError:
            self.log.warning(
                "The Prefect event stream did not open within %.0fs; waits will read the "
                "store and reconcile",
                self.subscribe_timeout,
            )

    async def close(self) -> None:
        """Stop listening (idempotent); what was kept stays readable."""
        if self._pump is not None:
            self._pump.cancel()
            await asyncio.gather(self._pump, return_exceptions=True)
            self._pump = None
        self._connected = False

    def narrow(self, resource_ids: Collection[str]) -> None:
        """Keep only these resources' events from now on, and forget the others kept so far.

        The subscription stays as it is: reopening it would leave a gap just when the
        events of a fresh launch arrive; other resources' events are dropped on arrival."""
        self.resource_ids = set(resource_ids)
        for event_id, (event, _) in list(self._backlog.items()):
            if event.resource.id not in self.resource_ids:
                del self._backlog[event_id]

    def attach(self, consumer: Consumer) -> None:
        """Hand the consumer what is kept for it, then every new event first."""
        self._consumers.append(consumer)
        for event_id, (event, arrived) in list(self._backlog.items()):
            if consumer.offer(event, live=True, received_at=arrived):
                del self._backlog[event_id]

    def detach(self, consumer: Consumer) -> None:
        with contextlib.suppress(ValueError):
            self._consumers.remove(consumer)

    def add(self, event: Event) -> None:
        if self.resource_ids and event.resource.id not in self.resource_ids:
            return
        self.received += 1
        arrived = datetime.now(UTC)
        if any(c.offer(event, live=True, received_at=arrived) for c in list(self._consumers)):
            return
        key = str(event.id)
        if key in self._backlog:
            return
        self._backlog[key] = (event, arrived)
        if len(self._backlog) > self.backlog_limit:
            self._backlog.popitem(last=False)
            self.backlog_dropped += 1

    async def _run(self) -> None:
        outage_logged = False
        while True:
            try:
                async with get_events_subscriber(
                    filter=self.filter(), reconnection_attempts=0
                ) as subscriber:
                    if self._ever_connected:
                        self.reconnects += 1
                        self.log.info("The Prefect event stream is connected again")
                        for consumer in list(self._consumers):
                            consumer.stream_gap()
                    self._connected = self._ever_connected = True
                    outage_logged = False
                    self._tried.set()
                    async for event in subscriber:
                        self.add(event)
            except asyncio.CancelledError:
                self._connected = False
                raise
            except Exception as exc:
                if not outage_logged:
                    self.log.warning(
                        "The Prefect event stream is unavailable (%s); relying on store reads "
                        "and reconciliation until it is back",
                        type(exc).__name__,
                    )
                    outage_logged = True
            self._connected = False
            self._tried.set()
            await asyncio.sleep(self.reopen_every)
