"""What decides whether a stopped instance is started again: it carries the managed tag, no
runbook asked for the stop, and the loop guard allows it.

Both facts come from the Prefect event store, not from memory, so they hold across runs,
processes and restarts of the server that serves the deployments:
- a runbook that stops instances emits `runbooks.instance.stop-requested` for each one first
  (`tasks.instances.stop_instances`); a Stopped event with such a request since the
  instance's previous Stopped event was asked for;
- each restart emits `runbooks.instance.restarted`; at most `max_per_hour` of them per
  instance in the last hour (the loop guard: an instance that stops again at once is reported,
  not started forever).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Literal

from prefect.client.orchestration import get_client
from prefect.events.filters import (
    EventFilter,
    EventNameFilter,
    EventOccurredFilter,
    EventResourceFilter,
)
from prefect.events.schemas.events import Event
from pydantic import BaseModel

from alicloud_runbooks.events import names

STOP_REQUESTED = "runbooks.instance.stop-requested"
RESTARTED = "runbooks.instance.restarted"
STOPPED_UNASKED = "runbooks.instance.stopped-unasked"
MANAGED_TAG = "runbooks:managed"
GUARD_PERIOD = timedelta(hours=1)
STORE_IDS_PER_QUERY = 50
PAGE_SIZE = 50

Action = Literal["start", "report"]


class Decision(BaseModel):
    instance_id: str
    state: str | None
    managed: bool
    asked: bool
    restarts_last_hour: int
    action: Literal["start", "report", "none"]
    reason: str


def decide(
    instance_id: str,
    *,
    state: str | None,
    managed: bool,
    asked: bool,
    restarts_last_hour: int,
    max_per_hour: int,
    action: Action,
) -> Decision:
    """One instance's verdict; `none` means nothing to do, `report` that it stays stopped."""

    def verdict(what: Literal["start", "report", "none"], reason: str) -> Decision:
        return Decision(
            instance_id=instance_id,
            state=state,
            managed=managed,
            asked=asked,
            restarts_last_hour=restarts_last_hour,
            action=what,
            reason=reason,
        )

    if state is None:
        return verdict("none", "gone (deleted)")
    if not managed:
        return verdict("none", f"not tagged {MANAGED_TAG}=true")
    if asked:
        return verdict("none", "a runbook asked for the stop")
    if state != "Stopped":
        return verdict("none", f"{state} now")
    if restarts_last_hour >= max_per_hour:
        return verdict(
            "report",
            f"loop guard: {restarts_last_hour} restarts in the last hour (at most {max_per_hour})",
        )
    if action == "report":
        return verdict("report", "stopped without a runbook asking (report only)")
    return verdict("start", "stopped without a runbook asking")


async def stored_events(
    event_names: Sequence[str], instance_ids: Sequence[str], since: datetime, until: datetime
) -> list[Event]:
    """The events of these names about these instances (resource `acs.ecs.instance.<id>`)
    stored between `since` and `until`."""
    found: dict[str, Event] = {}
    async with get_client() as client:
        for start in range(0, len(instance_ids), STORE_IDS_PER_QUERY):
            chunk = instance_ids[start : start + STORE_IDS_PER_QUERY]
            query = EventFilter(
                event=EventNameFilter(name=list(event_names)),
                occurred=EventOccurredFilter(since=since, until=until),
                resource=EventResourceFilter(id=[names.instance_resource(i) for i in chunk]),
            )
            page = await client.read_events(filter=query, limit=PAGE_SIZE)
            while True:
                found.update((str(e.id), e) for e in page.events)
                if not page.next_page:
                    break
                page = await client.read_events_page(page.next_page)
    return sorted(found.values(), key=lambda e: e.occurred)


def _instance(event: Event) -> str:
    return event.resource.id.removeprefix(names.instance_resource(""))


async def restarts_since(instance_ids: Sequence[str], now: datetime) -> Counter[str]:
    """Restarts per instance in the hour before `now`, from the store."""
    events = await stored_events([RESTARTED], instance_ids, now - GUARD_PERIOD, now)
    return Counter(_instance(e) for e in events)


async def asked_to_stop(instance_ids: Sequence[str], stopped: dict[str, datetime]) -> set[str]:
    """The instances whose stop (at `stopped[id]`) a runbook asked for: a stop request since
    the instance's previous Stopped state (the first stop after a request answers it), within
    the last hour. Only Stopped events are needed, the one state the relay's rule must carry."""
    if not instance_ids:
        return set()
    since = min(stopped.values()) - GUARD_PERIOD
    until = max(stopped.values())
    events = await stored_events(
        [STOP_REQUESTED, names.INSTANCE_STATE_CHANGE], instance_ids, since, until
    )
    asked: set[str] = set()
    for instance_id in instance_ids:
        at = stopped[instance_id]
        mine = [e for e in events if _instance(e) == instance_id and e.occurred <= at]
        earlier_stops = [
            e.occurred
            for e in mine
            if e.event == names.INSTANCE_STATE_CHANGE
            and e.resource.get(names.INSTANCE_STATE_LABEL) == "Stopped"
            and e.occurred < at
        ]
        after = max(earlier_stops) if earlier_stops else at - GUARD_PERIOD
        if any(e.event == STOP_REQUESTED and e.occurred >= after for e in mine):
            asked.add(instance_id)
    return asked
