"""Event windows: one triggered run per burst of events, not one run per event.

A reactive deployment's trigger is Reactive, `threshold: 1`, `within: W`, with no `for_each`.
Prefect fires it on the first matching event, so the run starts at once, and then ignores
every matching event until W seconds after that one: its next bucket opens at first + W
(prefect/server/events/triggers.py, `evaluate`). The run gets the window as a parameter
(`EventWindow`: the triggering event's time, W, and the event name and labels the trigger
matches), waits until the window has closed and the event store holds its events
(`settle_seconds`), reads every matching event of [start, start + W) from the store and acts
on all of them together: 100 instances failing at once are one run and one RunCommand. The
first event after the window fires the next run, so each event belongs to exactly one window.

The trigger and the window must agree (the same event, labels and W): prefect.yaml writes W
once, as a YAML anchor, and tests/test_reactions.py checks the rest.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from prefect.client.orchestration import get_client
from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter
from prefect.events.schemas.events import Event, Resource, ResourceSpecification
from pydantic import BaseModel, Field

SETTLE_ENV = "RUNBOOKS_WINDOW_SETTLE_SECONDS"
# Prefect's event persister writes every 5 s by default
# (PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL): an event received in the window's
# last moment is in the store a flush later.
DEFAULT_SETTLE_SECONDS = 6.0
PAGE_SIZE = 50


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
    def end(self) -> datetime:
        return self.start + timedelta(seconds=self.seconds)

    def matches(self, event: Event) -> bool:
        if event.event != self.event:
            return False
        if not self.start <= event.occurred < self.end:
            return False
        spec = ResourceSpecification(self.match)
        return spec.matches(Resource(root=dict(event.resource.root)))


def settle_seconds() -> float:
    """How long after the window closes its events are read: `RUNBOOKS_WINDOW_SETTLE_SECONDS`
    (at least the server's event persister flush interval), else 6 s."""
    raw = os.environ.get(SETTLE_ENV)
    return float(raw) if raw else DEFAULT_SETTLE_SECONDS


async def collect(window: EventWindow, settle: float | None = None) -> list[Event]:
    """Every event of the window, once it has closed and settled, oldest first, each once."""
    settle = settle_seconds() if settle is None else settle
    ready = window.end + timedelta(seconds=settle)
    wait = (ready - datetime.now(UTC)).total_seconds()
    if wait > 0:
        await asyncio.sleep(wait)
    return await read(window)


async def read(window: EventWindow) -> list[Event]:
    """The window's events in the store now (paged; the labels are matched here, as the
    trigger matches them)."""
    query = EventFilter(
        event=EventNameFilter(name=[window.event]),
        occurred=EventOccurredFilter(since=window.start, until=window.end),
    )
    found: dict[str, Event] = {}
    async with get_client() as client:
        page = await client.read_events(filter=query, limit=PAGE_SIZE)
        while True:
            for event in page.events:
                if window.matches(event):
                    found[str(event.id)] = event
            if not page.next_page:
                break
            page = await client.read_events_page(page.next_page)
    return sorted(found.values(), key=lambda e: e.occurred)


def resource_ids(events: Sequence[Event], prefix: str) -> list[str]:
    """The ids after `prefix` of the events' resources (`acs.ecs.instance.` -> instance ids),
    in the order they first came, each once."""
    ids = (e.resource.id.removeprefix(prefix) for e in events if e.resource.id.startswith(prefix))
    return list(dict.fromkeys(ids))
