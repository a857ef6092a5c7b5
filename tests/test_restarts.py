"""The loop guard's "did a runbook ask for this stop?" read from a real Prefect event store,
with only the Stopped state changes the relay's rule forwards."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import httpx
from prefect.settings import PREFECT_API_URL, temporary_settings

from alicloud_runbooks import restarts
from alicloud_runbooks.events import names
from tests.helpers import wait_until


def _event(name: str, instance_id: str, at: datetime, **labels: str) -> dict:
    return {
        "id": str(uuid.uuid4()),
        "event": name,
        "occurred": at.isoformat(),
        "resource": {"prefect.resource.id": names.instance_resource(instance_id), **labels},
    }


def _stopped(instance_id: str, at: datetime) -> dict:
    return _event(
        names.INSTANCE_STATE_CHANGE, instance_id, at, **{names.INSTANCE_STATE_LABEL: "Stopped"}
    )


def _store(prefect_server, events: list[dict]) -> None:
    httpx.post(f"{prefect_server.api_url}/events", json=events).raise_for_status()
    ids = [e["id"] for e in events]

    def stored() -> bool:
        body = {"filter": {"id": {"id": ids}, "occurred": {"since": "2020-01-01T00:00:00Z"}}}
        found = httpx.post(f"{prefect_server.api_url}/events/filter", json=body).json()
        return len(found["events"]) == len(ids)

    wait_until(stored, timeout=30)


def _asked(prefect_server, stopped: dict[str, datetime]) -> set[str]:
    with temporary_settings(updates={PREFECT_API_URL: prefect_server.api_url}):
        return asyncio.run(restarts.asked_to_stop(list(stopped), stopped))


def test_a_stop_request_is_answered_by_the_first_stop_after_it(prefect_server) -> None:
    now = datetime.now(UTC)
    resized, again, never, old = (f"i-{uuid.uuid4().hex[:12]}" for _ in range(4))
    request_at, first_stop, second_stop = (now - timedelta(minutes=m) for m in (30, 29, 5))
    _store(
        prefect_server,
        [
            # A runbook asked, the instance stopped: that stop was asked for …
            _event(restarts.STOP_REQUESTED, resized, request_at),
            _stopped(resized, first_stop),
            # … started again by hand, it stops once more: that one nobody asked for.
            _event(restarts.STOP_REQUESTED, again, request_at),
            _stopped(again, first_stop),
            _stopped(again, second_stop),
            # Stopped without a request.
            _stopped(never, second_stop),
            # A request older than the hour the guard looks back.
            _event(restarts.STOP_REQUESTED, old, now - timedelta(minutes=90)),
            _stopped(old, second_stop),
        ],
    )
    stops = {resized: first_stop, again: second_stop, never: second_stop, old: second_stop}
    assert _asked(prefect_server, stops) == {resized}
    assert _asked(prefect_server, {again: first_stop}) == {again}
