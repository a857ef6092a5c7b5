"""The runbooks on Prefect's own scale-out (`runbooks up --backend scale-out`): PostgreSQL,
Redis, two API servers without services, one services process, and two relay replicas behind
a round-robin front. One stack for the module (it takes about 25 s to start)."""

from __future__ import annotations

import copy
import io
import os
import signal
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from alisim.config import zero_delay_settings
from flows.provision_and_run import provision_and_run
from local_stack.demo import _start, _stop
from local_stack.scale_out import MissingServer, ScaleOutPrefect, postgres_bin
from local_stack.stack import LocalStack
from tests import samples
from tests.helpers import wait_until
from tests.runbook_stack import BUCKET, api_calls, describe_calls, run, statuses


@pytest.fixture(scope="module")
def started() -> Iterator[tuple[LocalStack, ScaleOutPrefect, str]]:
    """What `runbooks up --backend scale-out` starts, and what it printed; stopped as it
    stops, and then no process of it is left."""
    scale_out = ScaleOutPrefect()
    local = LocalStack(sim_settings=zero_delay_settings())
    out = io.StringIO()
    pids: dict[str, int] = {}
    try:
        _start(local, out, scale_out)
        pids = scale_out.pids()
        yield local, scale_out, out.getvalue()
    finally:
        _stop(local, out, scale_out)
    assert [name for name, pid in pids.items() if _alive(pid)] == []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def scale_out(started: tuple[LocalStack, ScaleOutPrefect, str]) -> ScaleOutPrefect:
    return started[1]


@pytest.fixture(scope="module")
def stack(started: tuple[LocalStack, ScaleOutPrefect, str]) -> LocalStack:
    """The runbook tests' `stack` (and so their `cloud`), on the scale-out Prefect."""
    return started[0]


def test_up_prints_every_process_it_started_and_where(started) -> None:
    stack, scale_out, printed = started
    pids = scale_out.pids()
    assert set(pids) == {"postgres", "redis", "api-1", "api-2", "services"}
    assert all(_alive(pid) for pid in pids.values())
    for name, what in (
        ("postgres", f"PostgreSQL       127.0.0.1:{scale_out.postgres.port} (pid"),
        ("redis", f"Redis            {scale_out.redis.url(0)}"),
        ("api-1", f"Prefect API 1    {scale_out.api_urls[0]} --no-services (pid"),
        ("api-2", f"Prefect API 2    {scale_out.api_urls[1]} --no-services (pid"),
        ("services", "Prefect services `prefect server services start` (pid"),
    ):
        line = next(line for line in printed.splitlines() if what in line)
        assert f"pid {pids[name]}" in line
    for index, replica in enumerate(stack.relay_replicas, start=1):
        assert f"relay replica {index}  {replica.url} -> {scale_out.api_urls[index - 1]}" in printed


def _accepted(replica_url: str) -> int:
    return httpx.get(f"{replica_url}/healthz", timeout=10).json()["accepted_events"]


def _stored(api_url: str, ids: list[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(ids), 50):
        body = {"filter": {"id": {"id": ids[start : start + 50]}}, "limit": 50}
        response = httpx.post(f"{api_url}/events/filter", json=body, timeout=30)
        response.raise_for_status()
        found |= {e["id"] for e in response.json()["events"]}
    return found


def test_provision_and_run_on_postgres_redis_and_two_api_servers(cloud, scale_out) -> None:
    report = run(provision_and_run, cloud, count=3, script="echo scaled", output_bucket=BUCKET)
    assert statuses(report) == [("Success", 0)] * 3
    for row in report.instances:
        assert row.settled_by == {"heartbeat": "event", "result": "event", "output": "event"}
        assert (row.output or "").strip() == "scaled"
    assert describe_calls(cloud) == {}
    # Both relay replicas took pushes, each to its own API server; both servers see one database.
    assert all(_accepted(r.url) > 0 for r in cloud.relay_replicas)
    runs = [
        httpx.post(f"{api}/flow_runs/filter", json={"limit": 200}, timeout=30).json()
        for api in scale_out.api_urls
    ]
    assert {r["id"] for r in runs[0]} == {r["id"] for r in runs[1]} != set()


def _heartbeat(stack: LocalStack) -> dict[str, Any]:
    event = copy.deepcopy(samples.FIRST_HEARTBEAT)
    event["id"] = str(uuid.uuid4())
    event["aliyunaccountid"] = stack.sim_settings.account_id
    return event


class Pusher(threading.Thread):
    """A steady push of events to the relay front, one event a request, as EventBridge does;
    keeps the ids the relay acknowledged with a 2xx and counts the other answers."""

    def __init__(self, stack: LocalStack) -> None:
        super().__init__(daemon=True)
        self.stack = stack
        self.acknowledged: list[str] = []
        self.refused = 0
        self.done = threading.Event()

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.stack.token}"}
        with httpx.Client(timeout=15) as client:
            while not self.done.is_set():
                try:
                    answer = client.post(
                        self.stack.relay_url, json=_heartbeat(self.stack), headers=headers
                    )
                except httpx.HTTPError:
                    self.refused += 1
                    continue
                if answer.is_success:
                    self.acknowledged.extend(answer.json()["ids"])
                else:
                    self.refused += 1


def test_every_event_the_relay_acknowledged_survives_a_sigkill_of_prefect(stack, scale_out) -> None:
    pusher = Pusher(stack)
    pusher.start()
    try:
        wait_until(lambda: len(pusher.acknowledged) >= 30, timeout=30)
        scale_out.kill_prefect(signal.SIGKILL)
        before_restart = len(pusher.acknowledged)
        # While Prefect is down, the relay answers 503 and acknowledges nothing.
        wait_until(lambda: pusher.refused >= 3, timeout=30)
        scale_out.start_prefect()
        wait_until(lambda: len(pusher.acknowledged) >= before_restart + 30, timeout=60)
    finally:
        pusher.done.set()
        pusher.join(timeout=30)
    acknowledged = list(pusher.acknowledged)
    assert len(set(acknowledged)) == len(acknowledged) > before_restart
    try:
        wait_until(
            lambda: set(acknowledged) <= _stored(scale_out.api_urls[1], acknowledged),
            timeout=60,
            interval=0.5,
        )
    except AssertionError:
        lost = set(acknowledged) - _stored(scale_out.api_urls[1], acknowledged)
        pytest.fail(f"{len(lost)} of {len(acknowledged)} acknowledged events were never stored")


def test_a_rolling_relay_restart_during_a_run_loses_no_push(cloud) -> None:
    """Replica 0 is down while the results come (the front sends every push to replica 1),
    then comes back, then replica 1 restarts: EventBridge sees no failed push."""
    restarted = threading.Event()

    def restart() -> None:
        # RunCommand was called: the results come `sleep 3` later, with replica 0 down.
        wait_until(lambda: api_calls(cloud, "RunCommand") >= 1, timeout=60)
        cloud.stop_relay_replica(0)
        taken = _accepted(cloud.relay_replicas[1].url)
        wait_until(lambda: _accepted(cloud.relay_replicas[1].url) >= taken + 3, timeout=30)
        cloud.start_relay_replica(0)
        cloud.stop_relay_replica(1)
        cloud.start_relay_replica(1)
        restarted.set()

    restarter = threading.Thread(target=restart)
    restarter.start()
    report = run(
        provision_and_run,
        cloud,
        count=3,
        script="sleep 3; echo done",
        timeout=30,
        output_bucket=BUCKET,
    )
    restarter.join()
    assert restarted.is_set()
    assert statuses(report) == [("Success", 0)] * 3
    for row in report.instances:
        assert row.settled_by == {"heartbeat": "event", "result": "event", "output": "event"}
    assert describe_calls(cloud) == {}
    failed = httpx.get(f"{cloud.sim_url}/_alisim/deliveries", params={"outcome": "failed"})
    assert failed.json()["deliveries"] == []


def test_a_missing_server_binary_fails_with_the_apt_line_to_install_it() -> None:
    with pytest.raises(MissingServer, match=r"apt-get install -y postgresql"):
        postgres_bin("no-such-postgres-program")
