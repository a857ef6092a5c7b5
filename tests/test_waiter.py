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

from alicloud_runbooks.cloud_assistant import (
    CommandClock,
    Invocation,
    output_delivered_wait,
    task_completed_wait,
)
from alicloud_runbooks.events import names
from alicloud_runbooks.reconciliation import Answer, RetryPolicy, StragglerPolicy
from alicloud_runbooks.stream import EventStream
from alicloud_runbooks.waiter import EventWait, Owner, WaitControl, wait_for_events
from local_stack.servers import FAST_EVENT_STORE, PrefectServer, free_port
from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def prefect(prefect_server) -> Iterator[Any]:
    with temporary_settings(updates={PREFECT_API_URL: prefect_server.api_url}):
        yield prefect_server


ACCOUNT = "1234567890123456"
REGION = "cn-hangzhou"


def event(
    name: str,
    instance: str,
    invocation: str | None = None,
    command: str | None = None,
    occurred: datetime | None = None,
    **labels: str,
) -> dict[str, Any]:
    now = occurred or datetime.now(UTC)
    related = []
    if invocation:
        related.append(
            {
                "prefect.resource.id": names.invocation_resource(invocation),
                "prefect.resource.role": "invocation",
            }
        )
    if command:
        related.append(
            {
                "prefect.resource.id": names.command_resource(command),
                "prefect.resource.role": "command",
            }
        )
    return {
        "id": str(uuid.uuid4()),
        "occurred": now.isoformat(),
        "event": name,
        "resource": {
            "prefect.resource.id": names.instance_resource(instance),
            names.ACCOUNT_LABEL: ACCOUNT,
            names.REGION_LABEL: REGION,
            **labels,
        },
        "related": related,
        "payload": {"acs": {"time": now.isoformat()}, "instanceId": instance},
    }


def post(server: Any, *events: dict[str, Any]) -> None:
    for start in range(0, len(events), 200):
        batch = list(events[start : start + 200])
        httpx.post(f"{server.api_url}/events", json=batch).raise_for_status()


def ids(n: int) -> list[str]:
    return [f"i-{uuid.uuid4().hex[:20]}" for _ in range(n)]


def heartbeat_spec(keys: list[str], timeout: float = 10, **changes: Any) -> EventWait:
    spec = EventWait(
        name="FirstHeartbeat",
        event=names.FIRST_HEARTBEAT,
        keys=keys,
        resource_of=names.instance_resource,
        since=datetime.now(UTC) - timedelta(minutes=5),
        timeout=timeout,
        reread_every=0.5,
    )
    for name, value in changes.items():
        setattr(spec, name, value)
    return spec


def live_only(spec: EventWait) -> EventWait:
    """Store reads that can find nothing (they look from a moment still to come): only the
    live stream can settle the keys."""
    spec.since = datetime.now(UTC) + timedelta(minutes=10)
    spec.reread_every = 600
    return spec


def invocation(keys: list[str], command: str | None = None) -> Invocation:
    return Invocation(
        invoke_id=f"t-{uuid.uuid4().hex[:12]}",
        command_id=command or f"c-{uuid.uuid4().hex[:12]}",
        instance_ids=keys,
        started_at=datetime.now(UTC),
    )


def clock(seconds: float) -> CommandClock:
    return CommandClock(timeout=seconds, grace=0, start_timeout=0)


async def never(keys: list[str]) -> dict[str, Answer]:
    raise AssertionError(f"reconciliation called for {keys}")


def online(keys: list[str]) -> dict[str, Answer]:
    return {k: Answer(data={"online": True}) for k in keys}


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


async def test_the_live_stream_alone_settles_a_wait(prefect) -> None:
    """With the store out of the way, a stream that delivers nothing fails this test."""
    keys = ids(3)
    async with EventStream([names.FIRST_HEARTBEAT]) as stream:
        assert stream.connected
        waiting = asyncio.create_task(
            wait_for_events(live_only(heartbeat_spec(keys, timeout=30)), never, stream=stream)
        )
        post(prefect, *(event(names.FIRST_HEARTBEAT, k) for k in keys))
        started = time.monotonic()
        result = await waiting
    assert time.monotonic() - started < 20
    assert sorted(result.by("event")) == sorted(keys)
    assert (result.live_events, result.stored_events) == (3, 0)
    assert all(s.live for s in result.settled.values())


async def test_paging_reads_every_stored_event_past_the_first_page(prefect) -> None:
    keys = ids(120)
    # Older than the minute a new subscription replays: only the store has them.
    occurred = datetime.now(UTC) - timedelta(minutes=3)
    post(prefect, *(event(names.FIRST_HEARTBEAT, k, occurred=occurred) for k in keys))
    await_stored(prefect, names.FIRST_HEARTBEAT, keys)
    spec = heartbeat_spec(keys, timeout=30, reread_every=600)
    result = await wait_for_events(spec, never)
    assert sorted(result.settled) == sorted(keys)
    assert (result.stored_events, result.live_events, result.store_reads) == (120, 0, 1)


def await_stored(server: Any, name: str, keys: list[str]) -> None:
    """Until Prefect's persister has written the events of these keys."""

    def count() -> bool:
        page = httpx.post(
            f"{server.api_url}/events/filter",
            json={
                "filter": {
                    "event": {"name": [name]},
                    "resource": {"id": [names.instance_resource(k) for k in keys]},
                    "occurred": {"since": (datetime.now(UTC) - timedelta(hours=1)).isoformat()},
                },
                "limit": 50,
            },
        ).json()
        return page["total"] >= len(keys)

    wait_until(count, timeout=20, interval=0.2)


async def test_a_deadline_leads_to_one_reconciliation_of_the_missing_keys(prefect) -> None:
    keys = ids(3)
    post(prefect, event(names.FIRST_HEARTBEAT, keys[0]))
    asked: list[list[str]] = []

    async def reconcile(missing: list[str]) -> dict[str, Answer]:
        asked.append(missing)
        return online(missing[:1])

    started = time.monotonic()
    result = await wait_for_events(heartbeat_spec(keys, timeout=1.5), reconcile)
    assert time.monotonic() - started < 6
    assert asked == [sorted(keys[1:])]
    assert result.settled[keys[0]].by == "event"
    assert result.settled[sorted(keys[1:])[0]].by == "reconciliation"
    assert result.unsettled == [sorted(keys[1:])[1]]
    assert result.deadline_rounds == 1 and result.straggler_rounds == 0


async def test_stragglers_are_reconciled_once_the_events_go_quiet(prefect) -> None:
    keys = ids(6)
    lost = keys[-1]
    asked: list[list[str]] = []

    async def reconcile(missing: list[str]) -> dict[str, Answer]:
        asked.append(missing)
        return online(missing)

    waiting = asyncio.create_task(wait_for_events(heartbeat_spec(keys, timeout=60), reconcile))
    post(prefect, *(event(names.FIRST_HEARTBEAT, k) for k in keys[:-1]))
    started = time.monotonic()
    result = await waiting
    assert time.monotonic() - started < 15  # not the 60 s deadline
    assert asked == [[lost]]
    assert result.settled[lost].by == "reconciliation"
    assert sorted(result.by("event")) == sorted(keys[:-1])
    assert (result.straggler_rounds, result.deadline_rounds) == (1, 0)


async def test_a_running_command_keeps_its_key_open_until_a_final_answer(prefect) -> None:
    keys = ids(2)
    answers: list[str] = []

    async def reconcile(missing: list[str]) -> dict[str, Answer]:
        now = datetime.now(UTC)
        status = "Running" if len(answers) < 2 else "Success"
        answers.append(status)
        return {
            k: Answer(
                data={"status": status},
                final=status == "Success",
                recheck_at=now + timedelta(seconds=0.5),
            )
            for k in missing
        }

    spec = heartbeat_spec(keys, timeout=0.5, limit=30)
    result = await wait_for_events(spec, reconcile)
    assert answers == ["Running", "Running", "Success"]
    assert {s.data["status"] for s in result.settled.values()} == {"Success"}
    assert not result.unsettled


async def test_a_command_still_running_at_the_limit_stays_unsettled(prefect) -> None:
    keys = ids(1)

    async def reconcile(missing: list[str]) -> dict[str, Answer]:
        later = datetime.now(UTC) + timedelta(seconds=60)
        return {
            k: Answer(data={"status": "Running"}, final=False, recheck_at=later) for k in missing
        }

    started = time.monotonic()
    result = await wait_for_events(heartbeat_spec(keys, timeout=0.5, limit=2), reconcile)
    assert time.monotonic() - started < 10
    assert result.unsettled == keys and not result.settled
    assert result.last_known[keys[0]] == {"status": "Running"}


async def test_a_failing_reconciliation_is_retried_then_given_up_keeping_events(prefect) -> None:
    keys = ids(3)
    post(prefect, event(names.FIRST_HEARTBEAT, keys[0]))
    calls: list[int] = []

    async def flaky(missing: list[str]) -> dict[str, Answer]:
        calls.append(len(missing))
        if len(calls) < 3:
            raise ConnectionError("endpoint down")
        return online(missing)

    spec = heartbeat_spec(keys, timeout=1, stragglers=StragglerPolicy(rounds=0))
    spec.retry = RetryPolicy(first_delay=0.2)
    result = await wait_for_events(spec, flaky)
    assert len(calls) == 3
    assert sorted(result.by("reconciliation")) == sorted(keys[1:])

    async def down(missing: list[str]) -> dict[str, Answer]:
        raise ConnectionError("endpoint down")

    keys = ids(3)
    post(prefect, event(names.FIRST_HEARTBEAT, keys[0]))
    spec = heartbeat_spec(keys, timeout=1, stragglers=StragglerPolicy(rounds=0))
    spec.retry = RetryPolicy(first_delay=0.2)
    result = await wait_for_events(spec, down)
    assert result.settled[keys[0]].by == "event"
    assert result.unsettled == sorted(keys[1:])
    assert result.reconcile_error == "endpoint down"


async def test_events_from_another_account_region_or_command_are_ignored(prefect) -> None:
    keys = ids(4)
    mine = invocation(keys)
    stranger = event(names.TASK_COMPLETED, keys[0], mine.invoke_id, mine.command_id)
    stranger["resource"][names.ACCOUNT_LABEL] = "999999999999"
    elsewhere = event(names.TASK_COMPLETED, keys[1], mine.invoke_id, mine.command_id)
    elsewhere["resource"][names.REGION_LABEL] = "us-west-1"
    made_up = event(names.TASK_COMPLETED, keys[2], mine.invoke_id, "c-madeup")
    genuine = event(names.TASK_COMPLETED, keys[3], mine.invoke_id, mine.command_id)
    post(prefect, stranger, elsewhere, made_up, genuine)
    spec = task_completed_wait(
        [mine], datetime.now(UTC) - timedelta(minutes=5), clock(2), Owner(ACCOUNT, REGION)
    )

    async def nothing(missing: list[str]) -> dict[str, Answer]:
        return {}

    result = await wait_for_events(spec, nothing)
    assert list(result.by("event")) == [keys[3]]
    assert result.unsettled == sorted(keys[:3])
    assert sum(result.foreign.values()) >= 3
    reasons = " ".join(result.foreign)
    assert "account 999999999999" in reasons and "region us-west-1" in reasons
    assert "c-madeup" in reasons


async def test_filters_keep_other_invocations_and_in_progress_deliveries_out(prefect) -> None:
    keys = ids(2)
    mine, other = invocation(keys), invocation(keys)
    status = names.DELIVERY_STATUS_LABEL
    post(
        prefect,
        event(names.TASK_COMPLETED, keys[0], other.invoke_id, other.command_id),
        event(names.OUTPUT_DELIVERED, keys[0], mine.invoke_id, **{status: "InProgress"}),
        event(names.TASK_COMPLETED, keys[0], mine.invoke_id, mine.command_id),
        event(names.OUTPUT_DELIVERED, keys[0], mine.invoke_id, **{status: "Finished"}),
    )
    since = datetime.now(UTC) - timedelta(minutes=5)
    first = mine.model_copy(update={"instance_ids": keys[:1]})
    done = await wait_for_events(task_completed_wait([first], since, clock(5)), never)
    assert list(done.settled) == [keys[0]]

    async def nothing(missing: list[str]) -> dict[str, Answer]:
        return {}

    delivered = await wait_for_events(output_delivered_wait([first], keys[:1], since, 5), nothing)
    assert delivered.settled[keys[0]].data["acs"]
    second = mine.model_copy(update={"instance_ids": keys[1:]})
    other_wait = await wait_for_events(task_completed_wait([second], since, clock(1)), nothing)
    assert other_wait.unsettled == [keys[1]]


async def test_one_stream_opened_before_the_action_serves_two_waits(prefect) -> None:
    keys = ids(3)
    mine = invocation(keys)
    since = datetime.now(UTC)
    async with EventStream([names.TASK_COMPLETED, names.OUTPUT_DELIVERED]) as stream:
        assert stream.connected
        post(
            prefect,
            *(event(names.TASK_COMPLETED, k, mine.invoke_id, mine.command_id) for k in keys),
        )
        post(
            prefect,
            *(
                event(
                    names.OUTPUT_DELIVERED,
                    k,
                    mine.invoke_id,
                    **{names.DELIVERY_STATUS_LABEL: "Finished"},
                )
                for k in keys
            ),
        )
        first = await wait_for_events(
            task_completed_wait([mine], since, clock(10)), never, stream=stream
        )
        second = await wait_for_events(
            output_delivered_wait([mine], keys, since, 10), never, stream=stream
        )
    assert sorted(first.settled) == sorted(second.settled) == sorted(keys)
    assert first.live_events + first.stored_events == 3


async def test_two_waits_on_one_stream_each_wake_on_their_own_events(prefect) -> None:
    keys = ids(3)
    mine = invocation(keys)
    async with EventStream([names.TASK_COMPLETED, names.OUTPUT_DELIVERED]) as stream:
        # No straggler rounds: only a wake-up on its own events ends a wait before 30 s.
        quiet = StragglerPolicy(rounds=0)
        completed = task_completed_wait([mine], datetime.now(UTC), clock(30), stragglers=quiet)
        delivered = output_delivered_wait([mine], keys, datetime.now(UTC), 30, stragglers=quiet)
        results = asyncio.gather(
            wait_for_events(live_only(completed), never, stream=stream),
            wait_for_events(live_only(delivered), never, stream=stream),
        )
        finished = {names.DELIVERY_STATUS_LABEL: "Finished"}
        waits = asyncio.ensure_future(results)
        await asyncio.wait_for(_until(lambda: _all_listening(stream, 2)), 20)
        started = time.monotonic()
        for k in keys:
            post(
                prefect,
                event(names.TASK_COMPLETED, k, mine.invoke_id, mine.command_id),
                event(names.OUTPUT_DELIVERED, k, mine.invoke_id, **finished),
            )
        first, second = await waits
    assert time.monotonic() - started < 20
    assert sorted(first.by("event")) == sorted(second.by("event")) == sorted(keys)


async def test_a_narrowed_stream_keeps_only_its_resources(prefect) -> None:
    keys, others = ids(2), ids(30)
    async with EventStream([names.FIRST_HEARTBEAT]) as stream:
        post(prefect, *(event(names.FIRST_HEARTBEAT, k) for k in others))
        await asyncio.wait_for(_until(lambda: stream.backlog_size >= 30), 20)
        stream.narrow([names.instance_resource(k) for k in keys])
        assert stream.backlog_size == 0
        post(prefect, *(event(names.FIRST_HEARTBEAT, k) for k in others + keys))
        result = await wait_for_events(
            live_only(heartbeat_spec(keys, timeout=30)), never, stream=stream
        )
        assert sorted(result.by("event")) == sorted(keys)
        assert stream.backlog_size == 0


def _all_listening(stream: EventStream, count: int) -> bool:
    """Every wait attached to the stream is asleep, waiting for events."""
    consumers = stream.consumers
    return len(consumers) == count and all(getattr(c, "listening", False) for c in consumers)


async def _until(predicate: Any) -> None:
    while not predicate():
        await asyncio.sleep(0.05)


async def test_with_prefect_unreachable_the_wait_still_ends_by_reconciliation() -> None:
    keys = ids(2)

    async def reconcile(missing: list[str]) -> dict[str, Answer]:
        return online(missing)

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
        PYTHONPATH=str(ROOT),
        **FAST_EVENT_STORE,
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "settled by event" in done.stdout


async def test_the_stream_says_when_it_is_down_and_comes_back_by_itself() -> None:
    """`connected` is the connection now; the stream comes back by itself, and an event sent
    while it reconnects still settles its key (live, or by a store read)."""
    with (
        PrefectServer(extra_env=FAST_EVENT_STORE) as server,
        temporary_settings(updates={PREFECT_API_URL: server.api_url}),
    ):
        keys = ids(2)
        spec = heartbeat_spec(keys, timeout=120, reread_every=3)
        spec.stragglers = StragglerPolicy(rounds=0)
        async with EventStream([names.FIRST_HEARTBEAT], reopen_every=0.5) as stream:
            assert stream.connected
            waiting = asyncio.create_task(wait_for_events(spec, never, stream=stream))
            post(server, event(names.FIRST_HEARTBEAT, keys[0]))
            await asyncio.wait_for(_until(lambda: stream.received >= 1), 20)
            await asyncio.to_thread(server.kill)
            await asyncio.wait_for(_until(lambda: not stream.connected), 20)
            await asyncio.to_thread(server.start)
            # Stored while the stream is still reconnecting.
            post(server, event(names.FIRST_HEARTBEAT, keys[1]))
            await asyncio.wait_for(_until(lambda: stream.connected), 30)
            result = await asyncio.wait_for(waiting, 60)
        assert stream.reconnects == 1
        assert sorted(result.by("event")) == sorted(keys)


async def test_two_invocations_on_the_same_instances_each_get_their_own_events(prefect) -> None:
    """Two commands on the same instances at once, one stream: neither wait takes (or counts
    as foreign) the other's TaskCompleted."""
    keys = ids(2)
    first, second = invocation(keys), invocation(keys)
    sent = {
        inv.invoke_id: [event(names.TASK_COMPLETED, k, inv.invoke_id, inv.command_id) for k in keys]
        for inv in (first, second)
    }
    quiet = StragglerPolicy(rounds=0)
    async with EventStream([names.TASK_COMPLETED]) as stream:
        specs = [
            live_only(task_completed_wait([inv], datetime.now(UTC), clock(30), stragglers=quiet))
            for inv in (first, second)
        ]
        running = asyncio.ensure_future(
            asyncio.gather(*(wait_for_events(spec, never, stream=stream) for spec in specs))
        )
        await asyncio.wait_for(_until(lambda: _all_listening(stream, 2)), 20)
        post(prefect, *sent[second.invoke_id], *sent[first.invoke_id])
        results = await asyncio.wait_for(running, 20)
    for result, inv in zip(results, (first, second), strict=True):
        assert sorted(result.by("event")) == sorted(keys)
        assert not result.foreign
        assert {s.event_id for s in result.settled.values()} <= {
            e["id"] for e in sent[inv.invoke_id]
        }


async def test_an_output_wait_started_with_the_results_takes_early_deliveries(prefect) -> None:
    """The OutputDelivered wait starts before the results (`WaitControl`): a delivery that
    comes before its instance's result settles at once, live; each key's deadline runs from
    its arming, so a key armed late is not reconciled for the time it waited to be due; a
    withdrawn key ends the wait without being awaited."""
    first, early, late, no_output = keys = ids(4)
    mine = invocation(keys)
    finished = {names.DELIVERY_STATUS_LABEL: "Finished"}
    asked: list[list[str]] = []

    async def counted(missing: list[str]) -> dict[str, Answer]:
        asked.append(missing)
        return {}

    control = WaitControl()
    settled_at: dict[str, float] = {}
    async with EventStream([names.TASK_COMPLETED, names.OUTPUT_DELIVERED]) as stream:
        spec = output_delivered_wait([mine], keys, datetime.now(UTC), timeout=1.5)
        spec.control = control
        spec.reread_every = 0.3
        spec.on_settle = lambda s: settled_at.setdefault(s.key, time.monotonic())
        waiting = asyncio.create_task(wait_for_events(spec, counted, stream=stream))
        control.arm([first])
        post(prefect, event(names.OUTPUT_DELIVERED, first, mine.invoke_id, **finished))
        # Delivered before its TaskCompleted: the race the early start is for.
        post(prefect, event(names.OUTPUT_DELIVERED, early, mine.invoke_id, **finished))
        await asyncio.to_thread(wait_until, lambda: early in settled_at, 10, 0.05)
        armed_early = time.monotonic()
        control.arm([early])
        control.withdraw([no_output])
        # `late` becomes due after longer than the wait's timeout since it started.
        await asyncio.sleep(2.0)
        control.arm([late])
        await asyncio.sleep(0.5)  # its delivery comes a moment after its result, as it does
        post(prefect, event(names.OUTPUT_DELIVERED, late, mine.invoke_id, **finished))
        result = await waiting
    assert sorted(result.by("event")) == sorted([first, early, late])
    assert settled_at[early] <= armed_early
    assert result.settled[early].live
    assert asked == []  # no reconciliation: nothing was late from its own arming
    assert result.unsettled == []
    assert no_output not in result.settled
