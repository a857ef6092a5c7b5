"""The events a run emits about what settled its waits: how a run and the Alibaba events
that settled it lead to each other.

A relayed Alibaba event cannot name the run it settles (the relay does not know it, and the
event is immutable: its id is the UUIDv5 of the source event, so Prefect keeps the first copy
and drops any other). So the run emits its own events: `runbooks.wait.settled`, one per up to
`KEYS_PER_EVENT` settled keys, emitted inside the run (Prefect relates them to the flow run and
task run). Each relates, per key, the key's resource (`acs.ecs.instance.<id>`, role `instance`)
and, when an event settled it, that Alibaba event (`prefect.event.<id>`, role `settled-by`).

- From a run: its `runbooks.wait.settled` events (related `prefect.flow-run.<id>`) name the
  Alibaba events; the run's summary artifact links to each one's page.
- From an Alibaba event: the `runbooks.wait.settled` event relating `prefect.event.<its id>`
  (or its instance) relates the flow run.
"""

from __future__ import annotations

from typing import Any

from prefect.events import emit_event

from alicloud_runbooks.waiter import EventWait, Settlement

EVENT = "runbooks.wait.settled"
KEYS_PER_EVENT = 40
"""Two related resources per key; Prefect allows 100 per event and the run context adds a few."""


def event_resource(event_id: str) -> str:
    return f"prefect.event.{event_id}"


class SettledEvents:
    """Collects one wait's settlements and emits them in bounded batches."""

    def __init__(self, spec: EventWait, wait_resource: dict[str, str]) -> None:
        self.spec = spec
        self.resource = wait_resource
        self.pending: list[Settlement] = []
        self.emitted = 0

    def add(self, settlement: Settlement) -> None:
        self.pending.append(settlement)
        if len(self.pending) >= KEYS_PER_EVENT:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        related: list[dict[str, str]] = []
        settled: list[dict[str, Any]] = []
        for s in batch:
            related.append(
                {
                    "prefect.resource.id": self.spec.resource_of(s.key),
                    "prefect.resource.role": "instance",
                    "prefect.resource.name": s.key,
                }
            )
            entry: dict[str, Any] = {"key": s.key, "by": s.by}
            if s.event_id:
                related.append(
                    {
                        "prefect.resource.id": event_resource(s.event_id),
                        "prefect.resource.role": "settled-by",
                        "prefect.resource.name": f"{self.spec.event} {s.key}",
                    }
                )
                entry["event_id"] = s.event_id
                if s.relayed_at is not None:
                    entry["occurred"] = s.relayed_at.isoformat()
                if s.received_at is not None:
                    entry["arrived"] = s.received_at.isoformat()
            settled.append(entry)
        emit_event(
            event=EVENT,
            resource=self.resource,
            related=related,
            payload={"wait": self.spec.name, "event": self.spec.event, "settled": settled},
        )
        self.emitted += 1
