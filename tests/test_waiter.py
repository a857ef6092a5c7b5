"""The event waiter (contract 3) against a real Prefect server: events stored before the wait,
live events, filters, deadlines with one reconciliation, a shared stream, Prefect away, and the
ephemeral server. Events are posted as the relay posts them (`POST /api/events`)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from alicloud_runbooks.cloud_assistant import output_delivered_wait, task_completed_wait
from alicloud_runbooks.events import names
from alicloud_runbooks.servers import free_port
from alicloud_runbooks.waiter import EventStream, EventWait, wait_for_events

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def prefect(prefect_server) -> Iterator[Any]:
    with temporary_settings(updates={PREFECT_API_URL: prefect_server.api_url}):
        yield prefect_server


def event(name: str, instance: str, invocation: str | None = None, **labels: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    related = (
        [
            {
                "prefect.resource.id": names.invocation_resource(invocation),
                "prefect.resource.role": "invocation",
            }
        ]
        if invocation
        else []
    )
    return {
        "id": str(uuid.uuid4()),
        "occurred": now.isoformat(),
        "event": name,
        "resource": {"prefect.resource.id": names.instance_resource(instance), **labels},
        "related": related,
        "payload": {"acs": {"time": now.isoformat()}, "instanceId": instance},
    }


def post(server: Any, *events: dict[str, Any]) -> None:
    httpx.post(f"{server.api_url}/events", json=list(events)).raise_for_status()


def ids(n: int) -> list[str]:
    return [f"i-{uuid.uuid4().hex[:20]}" for _ in range(n)]


def heartbeat_spec(keys: list[str], timeout: float = 10) -> EventWait:
    return EventWait(
        name="FirstHeartbeat",
        event=names.FIRST_HEARTBEAT,
        keys=keys,
        resource_of=names.instance_resource,
        since=datetime.now(UTC) - timedelta(minutes=5),
        timeout=timeout,
        reread_every=0.5,
    )


async def never(keys: list[str]) -> dict[str, dict[str, Any]]:
    raise AssertionError(f"reconciliation called for {keys}")


async def test_events_stored_before_the_wait_and_live_events_both_settle(prefect) -> None:
    keys = ids(4)
    post(prefect, *(event(names.FIRST_HEARTBEAT, k) for k in keys[:2]))

    async def later() -> None:
        await asyncio.sleep(0.3)  # the events come while the wait is on, as in a real run
        post(prefect, *(event(names.FIRST_HEARTBEAT, k) for k in keys[2:]))

    sender = asyncio.create_task(later())
    result = await wait_for_events(heartbeat_spec(keys), never)
    await sender
    assert sorted(result.settled) == sorted(keys)
    assert result.by("event") and not result.by("reconciliation") and not result.unsettled
    assert result.subscribed
    assert result.live_events + result.stored_events == 4
    assert all(s.source_time is not None for s in result.settled.values())


async def test_a_deadline_leads_to_one_reconciliation_of_the_missing_keys(prefect) -> None:
    keys = ids(3)
    post(prefect, event(names.FIRST_HEARTBEAT, keys[0]))
    asked: list[list[str]] = []

    async def reconcile(missing: list[str]) -> dict[str, dict[str, Any]]:
        asked.append(missing)
        return {missing[0]: {"online": True}}

    started = time.monotonic()
    result = await wait_for_events(heartbeat_spec(keys, timeout=1.5), reconcile)
    assert time.monotonic() - started < 6
    assert asked == [sorted(keys[1:])]
    assert result.settled[keys[0]].by == "event"
    assert result.settled[sorted(keys[1:])[0]].by == "reconciliation"
    assert result.unsettled == [sorted(keys[1:])[1]]


async def test_filters_keep_other_invocations_and_in_progress_deliveries_out(prefect) -> None:
    keys, mine, other = ids(2), f"t-{uuid.uuid4().hex[:12]}", f"t-{uuid.uuid4().hex[:12]}"
    status = names.DELIVERY_STATUS_LABEL
    post(
        prefect,
        event(names.TASK_COMPLETED, keys[0], other),
        event(names.OUTPUT_DELIVERED, keys[0], mine, **{status: "InProgress"}),
        event(names.TASK_COMPLETED, keys[0], mine),
        event(names.OUTPUT_DELIVERED, keys[0], mine, **{status: "Finished"}),
    )
    since = datetime.now(UTC) - timedelta(minutes=5)
    done = await wait_for_events(task_completed_wait(keys[:1], [mine], since, 5), never)
    assert list(done.settled) == [keys[0]]

    async def nothing(missing: list[str]) -> dict[str, dict[str, Any]]:
        return {}

    delivered = await wait_for_events(output_delivered_wait(keys[:1], [mine], since, 5), nothing)
    assert delivered.settled[keys[0]].data["acs"]
    other_wait = await wait_for_events(task_completed_wait(keys[1:], [mine], since, 1), nothing)
    assert other_wait.unsettled == [keys[1]]


async def test_one_stream_opened_before_the_action_serves_two_waits(prefect) -> None:
    keys, invocation = ids(3), f"t-{uuid.uuid4().hex[:12]}"
    since = datetime.now(UTC)
    async with EventStream([names.TASK_COMPLETED, names.OUTPUT_DELIVERED]) as stream:
        assert stream.connected
        post(prefect, *(event(names.TASK_COMPLETED, k, invocation) for k in keys))
        post(
            prefect,
            *(
                event(
                    names.OUTPUT_DELIVERED,
                    k,
                    invocation,
                    **{names.DELIVERY_STATUS_LABEL: "Finished"},
                )
                for k in keys
            ),
        )
        first = await wait_for_events(
            task_completed_wait(keys, [invocation], since, 10), never, stream=stream
        )
        second = await wait_for_events(
            output_delivered_wait(keys, [invocation], since, 10), never, stream=stream
        )
    assert sorted(first.settled) == sorted(second.settled) == sorted(keys)
    assert first.live_events + first.stored_events == 3


async def test_with_prefect_unreachable_the_wait_still_ends_by_reconciliation() -> None:
    keys = ids(2)

    async def reconcile(missing: list[str]) -> dict[str, dict[str, Any]]:
        return {k: {"online": True} for k in missing}

    dead = f"http://127.0.0.1:{free_port()}/api"
    with temporary_settings(updates={PREFECT_API_URL: dead}):
        spec = heartbeat_spec(keys, timeout=1)
        spec.subscribe_timeout = 1
        started = time.monotonic()
        result = await wait_for_events(spec, reconcile)
    assert time.monotonic() - started < 15
    assert not result.subscribed
    assert sorted(result.by("reconciliation")) == sorted(keys)


def test_the_waiter_works_with_the_ephemeral_prefect_server(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import asyncio, uuid
        from datetime import UTC, datetime, timedelta
        from prefect.client.orchestration import get_client
        from alicloud_runbooks.events import names
        from alicloud_runbooks.waiter import EventWait, wait_for_events

        async def main():
            key = "i-ephemeral0000000001"
            now = datetime.now(UTC)
            async with get_client() as client:
                response = await client._client.post("/events", json=[{
                    "id": str(uuid.uuid4()), "occurred": now.isoformat(),
                    "event": names.FIRST_HEARTBEAT,
                    "resource": {"prefect.resource.id": names.instance_resource(key)},
                    "payload": {"acs": {"time": now.isoformat()}},
                }])
                response.raise_for_status()
            spec = EventWait(
                name="FirstHeartbeat", event=names.FIRST_HEARTBEAT, keys=[key],
                resource_of=names.instance_resource, since=now - timedelta(minutes=1),
                timeout=30, reread_every=1,
            )
            async def never(keys):
                raise SystemExit("reconciled")
            result = await wait_for_events(spec, never)
            print("settled by", result.settled[key].by)

        asyncio.run(main())
        """
    )
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") or k == "PREFECT_HOME"
    }
    env.update(
        PREFECT_HOME=str(tmp_path),
        PREFECT_SERVER_ALLOW_EPHEMERAL_MODE="true",
        PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL="0.5",
        PYTHONPATH=str(ROOT),
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "settled by event" in done.stdout
