"""Events that must reach Prefect before the caller goes on.

`emit_event` hands an event to a background worker that sends it later, or never if the
process exits first. A stop request that `restart-stopped` must find, or the event that opens
a suspended run's deadline window, is posted here instead: on return Prefect has accepted it.
"""

from __future__ import annotations

from collections.abc import Sequence

from prefect.client.orchestration import get_client
from prefect.events import Event


def _body(events: Sequence[Event]) -> list[dict[str, object]]:
    return [event.model_dump(mode="json") for event in events]


def post_events(events: Sequence[Event]) -> None:
    with get_client(sync_client=True) as client:
        client._client.post("/events", json=_body(events)).raise_for_status()


async def apost_events(events: Sequence[Event]) -> None:
    async with get_client() as client:
        (await client._client.post("/events", json=_body(events))).raise_for_status()
