"""The event waiter (design contract 3): wait for one Prefect event per key, without polling.

Subscribe first, then read what is already stored since the action that causes the events,
then listen; re-read the store now and then (the live stream drops events under bursts and
cannot see events stored moments before it connected). One subscription serves every key of
the batch. When the deadline passes, one batched reconciliation settles the keys still open.
Each key's settlement says whether an event or reconciliation settled it, and when.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from prefect.client.orchestration import get_client
from prefect.events.clients import get_events_subscriber
from prefect.events.filters import (
    EventFilter,
    EventNameFilter,
    EventOccurredFilter,
    EventRelatedFilter,
    EventResourceFilter,
)
from prefect.events.schemas.events import Event
from pydantic import BaseModel

logger = logging.getLogger(__name__)

PAGE_SIZE = 50  # the most /api/events/filter returns per page

Reconciler = Callable[[list[str]], Awaitable[dict[str, dict[str, Any]]]]
"""Settle what it can of the given keys with one batched API call per API; return data per key."""


class Settlement(BaseModel):
    key: str
    by: Literal["event", "reconciliation"]
    settled_at: datetime
    received_at: datetime | None = None
    source_time: datetime | None = None
    event_id: str | None = None
    data: dict[str, Any] = {}

    @property
    def reaction_ms(self) -> float | None:
        """Source event time to the moment the wait settled the key: the flow acting on it."""
        if self.source_time is None or self.by != "event":
            return None
        return (self.settled_at - self.source_time).total_seconds() * 1000

    @property
    def delivery_ms(self) -> float | None:
        """Source event time to its arrival in the flow's process (the event path alone)."""
        if self.source_time is None or self.received_at is None:
            return None
        return (self.received_at - self.source_time).total_seconds() * 1000


class WaitResult(BaseModel):
    name: str
    started_at: datetime
    finished_at: datetime
    settled: dict[str, Settlement]
    unsettled: list[str]
    live_events: int = 0
    stored_events: int = 0
    store_reads: int = 0
    ignored: int = 0
    subscribed: bool = False

    def by(self, how: Literal["event", "reconciliation"]) -> list[str]:
        return [k for k, s in self.settled.items() if s.by == how]


@dataclass
class EventWait:
    """What to wait for: `event` on each key's resource, optionally tied to related ids."""

    name: str
    event: str
    keys: Collection[str]
    resource_of: Callable[[str], str]
    since: datetime
    timeout: float
    related: Collection[str] = ()
    accept: Callable[[Event], bool] = field(default=lambda event: True)
    reread_every: float = 3.0
    subscribe_timeout: float = 5.0

    def __post_init__(self) -> None:
        self._by_resource = {self.resource_of(key): key for key in self.keys}

    def key_of(self, event: Event) -> str | None:
        key = self._by_resource.get(event.resource.id)
        if key is None:
            return None
        if self.related and not any(r.id in self.related for r in event.related):
            return None
        return key

    def filter(self, keys: Collection[str], since: datetime | None = None) -> EventFilter:
        now = datetime.now(UTC)
        return EventFilter(
            occurred=EventOccurredFilter(since=since or self.since, until=now + timedelta(days=1)),
            event=EventNameFilter(name=[self.event]),
            resource=EventResourceFilter(id=[self.resource_of(k) for k in keys]),
            related=EventRelatedFilter(id=list(self.related)) if self.related else None,
        )


def _source_time(event: Event) -> datetime | None:
    raw = (event.payload.get("acs") or {}).get("time")
    if not isinstance(raw, str):
        return None
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class EventStream:
    """One live subscription to some event names, opened *before* the action that causes the
    events, so none is published between the action and the subscription. Events are kept in
    arrival order; each wait scans them from the start, so several waits (TaskCompleted, then
    OutputDelivered) can share one stream."""

    def __init__(
        self,
        events: Collection[str],
        log: logging.Logger | logging.LoggerAdapter | None = None,
        resource_ids: Collection[str] = (),
        related_ids: Collection[str] = (),
        reopen_every: float = 3.0,
        subscribe_timeout: float = 5.0,
    ) -> None:
        self.events = list(events)
        self.log = log or logger
        self.resource_ids = list(resource_ids)
        self.related_ids = list(related_ids)
        self.reopen_every = reopen_every
        self.subscribe_timeout = subscribe_timeout
        self.received: list[Event] = []
        self.arrived_at: dict[str, datetime] = {}
        self.connected = False
        self._seen: set[str] = set()
        self._arrived = asyncio.Event()
        self._tried = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None

    def filter(self) -> EventFilter:
        return EventFilter(
            event=EventNameFilter(name=self.events),
            resource=EventResourceFilter(id=self.resource_ids) if self.resource_ids else None,
            related=EventRelatedFilter(id=self.related_ids) if self.related_ids else None,
        )

    async def __aenter__(self) -> EventStream:
        self._pump = asyncio.create_task(self._run())
        try:
            await asyncio.wait_for(self._tried.wait(), self.subscribe_timeout)
        except TimeoutError:
            self.log.warning(
                "The Prefect event stream did not open within %.0fs; waits will read the "
                "store and reconcile",
                self.subscribe_timeout,
            )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop listening (idempotent); what was received stays readable."""
        if self._pump is not None:
            self._pump.cancel()
            await asyncio.gather(self._pump, return_exceptions=True)
            self._pump = None

    async def _run(self) -> None:
        while True:
            try:
                async with get_events_subscriber(
                    filter=self.filter(), reconnection_attempts=2
                ) as subscriber:
                    self.connected = True
                    self._tried.set()
                    async for event in subscriber:
                        self.add(event)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.log.warning(
                    "The Prefect event stream is unavailable (%s); relying on store reads and "
                    "reconciliation",
                    type(exc).__name__,
                )
            self._tried.set()
            await asyncio.sleep(self.reopen_every)

    def add(self, event: Event) -> None:
        if str(event.id) in self._seen:
            return
        self._seen.add(str(event.id))
        self.arrived_at[str(event.id)] = datetime.now(UTC)
        self.received.append(event)
        self._arrived.set()

    async def arrival(self, timeout: float) -> None:
        """Return when an event arrives or after `timeout` seconds."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._arrived.wait(), timeout)
        self._arrived.clear()


class _Waiting:
    def __init__(self, spec: EventWait, log: logging.Logger | logging.LoggerAdapter) -> None:
        self.spec = spec
        self.log = log
        self.open: set[str] = set(spec.keys)
        self.settled: dict[str, Settlement] = {}
        self.live = self.stored = self.reads = self.ignored = 0

    def offer(self, event: Event, *, live: bool, received_at: datetime | None = None) -> None:
        if event.event != self.spec.event:
            return
        key = self.spec.key_of(event)
        if key is None or not self.spec.accept(event):
            return
        if key not in self.open:
            self.ignored += 1
            return
        self.open.discard(key)
        if live:
            self.live += 1
        else:
            self.stored += 1
        now = datetime.now(UTC)
        self.settled[key] = Settlement(
            key=key,
            by="event",
            settled_at=now,
            received_at=received_at or now,
            source_time=_source_time(event),
            event_id=str(event.id),
            data=dict(event.payload),
        )

    async def read_store(self) -> None:
        if not self.open:
            return
        self.reads += 1
        try:
            async with get_client() as client:
                page = await client.read_events(
                    filter=self.spec.filter(sorted(self.open)), limit=PAGE_SIZE
                )
                while True:
                    for event in page.events:
                        self.offer(event, live=False)
                    if not page.next_page or not self.open:
                        break
                    page = await client.read_events_page(page.next_page)
        except Exception as exc:
            self.log.warning(
                "%s: could not read stored events (%s: %s)", self.spec.name, type(exc).__name__, exc
            )


async def wait_for_events(
    spec: EventWait,
    reconcile: Reconciler | None = None,
    log: logging.Logger | logging.LoggerAdapter | None = None,
    stream: EventStream | None = None,
) -> WaitResult:
    """Wait until every key has its event or the deadline passes; then reconcile the rest.

    Pass the `stream` opened before the action; without one, the wait opens its own,
    filtered to its keys (events stored before it connected are found by the store reads).
    """
    log = log or logger
    if stream is None:
        own = EventStream(
            [spec.event],
            log,
            resource_ids=[spec.resource_of(k) for k in spec.keys],
            related_ids=spec.related,
            reopen_every=spec.reread_every,
            subscribe_timeout=spec.subscribe_timeout,
        )
        async with own:
            return await wait_for_events(spec, reconcile, log, own)

    started = datetime.now(UTC)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + spec.timeout
    state = _Waiting(spec, log)
    cursor = 0

    def scan() -> None:
        nonlocal cursor
        while cursor < len(stream.received):
            event = stream.received[cursor]
            state.offer(event, live=True, received_at=stream.arrived_at.get(str(event.id)))
            cursor += 1

    scan()
    await state.read_store()
    next_read = loop.time() + spec.reread_every
    while state.open and loop.time() < deadline:
        await stream.arrival(max(0.0, min(next_read, deadline) - loop.time()))
        scan()
        if state.open and loop.time() >= next_read:
            await state.read_store()
            next_read = loop.time() + spec.reread_every
    scan()
    if state.open:
        await state.read_store()
    if state.open and reconcile is not None:
        missing = sorted(state.open)
        log.info(
            "%s: no event for %d of %d after %.0fs; reconciling with one batched call",
            spec.name,
            len(missing),
            len(state.settled) + len(missing),
            spec.timeout,
        )
        found = await reconcile(missing)
        now = datetime.now(UTC)
        for key, data in found.items():
            if key in state.open:
                state.open.discard(key)
                state.settled[key] = Settlement(
                    key=key, by="reconciliation", settled_at=now, data=data
                )
    return WaitResult(
        name=spec.name,
        started_at=started,
        finished_at=datetime.now(UTC),
        settled=state.settled,
        unsettled=sorted(state.open),
        live_events=state.live,
        stored_events=state.stored,
        store_reads=state.reads,
        ignored=state.ignored,
        subscribed=stream.connected,
    )
