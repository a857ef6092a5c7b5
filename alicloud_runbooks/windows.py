"""Event windows: one triggered run per burst of events, not one run per event.

A reactive deployment's trigger is Reactive, `threshold: 1`, `within: W`, with no `for_each`.
Prefect keeps one bucket of W seconds per trigger (prefect/server/events/triggers.py,
`evaluate`): the first matching event fires it at once, so the run starts within the runner's
poll; every other event of that bucket is absorbed; the next bucket opens where this one ends,
and the first event in it fires the next run. When no event comes for a whole bucket, the
next event opens a fresh bucket at its own time.

The run is given its window (`EventWindow`: the triggering event's time `start`, W, and the
event name and labels the trigger matches). `bounds` works out the bucket Prefect fired in
from the previous run's window, recorded in the event store (`runbooks.window.opened`): the
bucket that follows it when the trigger falls in it, else a fresh one at `start`. The run
also takes events from just before `start` that the previous window did not cover (the
server evaluates a batch of events in arrival order, not by time, so an earlier event can
come second and be absorbed). It waits until the window has closed and the store holds its
events (`settle_seconds`), reads them all and acts on all of them together: 100 instances
failing at once are one run and one RunCommand. Each event is in exactly one window.

The trigger and the window must agree (the same event, labels and W): prefect.yaml writes W
and the labels once, as YAML anchors, and tests/test_deployments.py checks the rest.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from prefect.client.orchestration import get_client
from prefect.events import emit_event
from prefect.events.filters import (
    EventFilter,
    EventNameFilter,
    EventOccurredFilter,
    EventResourceFilter,
)
from prefect.events.schemas.events import Event, Resource, ResourceSpecification
from prefect.runtime import deployment
from pydantic import BaseModel, Field

SETTLE_ENV = "RUNBOOKS_WINDOW_SETTLE_SECONDS"
# Prefect's event persister writes every 5 s by default
# (PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL): an event received in the window's
# last moment is in the store a flush later.
DEFAULT_SETTLE_SECONDS = 6.0
PAGE_SIZE = 50
OPENED = "runbooks.window.opened"
RECORDS_LOOKBACK = timedelta(hours=1)
# How far before its trigger a fresh window reaches for events the server evaluated after the
# trigger though they occurred before it (one batch from the relay, evaluated in order).
OUT_OF_ORDER = timedelta(seconds=2)


class EventWindow(BaseModel):
    """The events a triggered run handles: those named `event` whose resource matches
    `match`, that occurred from `start` (the triggering event's time) for `seconds`."""

    event: str = Field(description="The event name, as in the trigger's `expect`.")
    start: datetime = Field(description="When the triggering event occurred.")
    seconds: float = Field(
        default=10, gt=0, le=3600, description="The window, as in the trigger's `within`."
    )
    match: dict[str, str | list[str]] = Field(
        default_factory=dict, description="The resource labels, as in the trigger's `match`."
    )
    trigger_event: str | None = Field(default=None, description="The triggering event's id.")

    @property
    def width(self) -> timedelta:
        return timedelta(seconds=self.seconds)

    def key(self) -> str:
        """The resource the window's records are kept under: the deployment when deployed
        (one trigger, one bucket), else the event and labels."""
        if deployment_id := deployment.get_id():
            return f"runbooks.window.deployment.{deployment_id}"
        spec = json.dumps([self.event, self.match, self.seconds], sort_keys=True)
        return f"runbooks.window.{hashlib.sha256(spec.encode()).hexdigest()[:16]}"

    def matches(self, event: Event) -> bool:
        """The trigger's `expect` and `match`, as Prefect evaluates them."""
        if event.event != self.event:
            return False
        spec = ResourceSpecification(self.match)
        return spec.matches(Resource(root=dict(event.resource.root)))


class Bounds(BaseModel):
    """The events of [since, end) are this run's."""

    since: datetime
    end: datetime


def bounds(window: EventWindow, previous_end: datetime | None) -> Bounds:
    """The bucket Prefect fired in, given where the previous window ended: the next bucket
    when the trigger falls in it, else a fresh one at the trigger. Since: the previous end, or
    `OUT_OF_ORDER` back when there is none (events absorbed out of order)."""
    start, width = window.start, window.width
    if previous_end is not None and previous_end <= start < previous_end + width:
        return Bounds(since=previous_end, end=previous_end + width)
    since = start - min(width, OUT_OF_ORDER)
    if previous_end is not None:
        since = max(since, previous_end)
    return Bounds(since=min(since, start), end=start + width)


async def previous_end(window: EventWindow) -> datetime | None:
    """Where the last window before this one ended, from the records in the store."""
    query = EventFilter(
        event=EventNameFilter(name=[OPENED]),
        occurred=EventOccurredFilter(since=window.start - RECORDS_LOOKBACK),
        resource=EventResourceFilter(id=[window.key()]),
    )
    ends: list[datetime] = []
    async with get_client() as client:
        page = await client.read_events(filter=query, limit=PAGE_SIZE)
        while True:
            for event in page.events:
                record = Bounds.model_validate(event.payload)
                start = datetime.fromisoformat(event.payload["start"])
                if start < window.start:
                    ends.append(record.end)
            if not page.next_page:
                break
            page = await client.read_events_page(page.next_page)
    return max(ends) if ends else None


async def open_window(window: EventWindow) -> Bounds:
    """This run's bounds, recorded for the next run."""
    found = bounds(window, await previous_end(window))
    emit_event(
        event=OPENED,
        resource={"prefect.resource.id": window.key(), "prefect.resource.name": window.event},
        payload={**found.model_dump(mode="json"), "start": window.start.isoformat()},
    )
    return found


def settle_seconds() -> float:
    """How long after the window closes its events are read: `RUNBOOKS_WINDOW_SETTLE_SECONDS`
    (at least the server's event persister flush interval), else 6 s."""
    raw = os.environ.get(SETTLE_ENV)
    return float(raw) if raw else DEFAULT_SETTLE_SECONDS


async def collect(window: EventWindow, settle: float | None = None) -> list[Event]:
    """Every event of the window, once it has closed and settled, oldest first, each once."""
    settle = settle_seconds() if settle is None else settle
    found = await open_window(window)
    ready = found.end + timedelta(seconds=settle)
    wait = (ready - datetime.now(UTC)).total_seconds()
    if wait > 0:
        await asyncio.sleep(wait)
    return await read(window, found)


async def read(window: EventWindow, found: Bounds) -> list[Event]:
    """The window's events in the store now (paged; the labels are matched here, as the
    trigger matches them)."""
    query = EventFilter(
        event=EventNameFilter(name=[window.event]),
        occurred=EventOccurredFilter(since=found.since, until=found.end),
    )
    events: dict[str, Event] = {}
    async with get_client() as client:
        page = await client.read_events(filter=query, limit=PAGE_SIZE)
        while True:
            for event in page.events:
                if window.matches(event) and found.since <= event.occurred < found.end:
                    events[str(event.id)] = event
            if not page.next_page:
                break
            page = await client.read_events_page(page.next_page)
    return sorted(events.values(), key=lambda e: e.occurred)


def resource_ids(events: Sequence[Event], prefix: str) -> list[str]:
    """The ids after `prefix` of the events' resources (`acs.ecs.instance.` -> instance ids),
    in the order they first came, each once."""
    ids = (e.resource.id.removeprefix(prefix) for e in events if e.resource.id.startswith(prefix))
    return list(dict.fromkeys(ids))
