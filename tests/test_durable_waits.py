"""Waits that hold no process: a served `run-command` deployment suspends while its command
runs, no process of the run is left, and Prefect resumes it by the relayed TaskCompleted (or
at the deadline, when the event is lost); the resumed run repeats no side effect."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

from alisim.config import zero_delay_settings
from local_stack.servers import FAST_EVENT_STORE, PrefectServer
from local_stack.serving import ServedDeployments
from local_stack.stack import LocalStack
from tests.helpers import wait_until
from tests.runbook_stack import BUCKET, faults, launch_ready

ROOT = Path(__file__).resolve().parents[1]
BLOCK = "durable-alisim"


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[LocalStack]:
    """A stack of its own (Prefect, alisim, relay) and the deployments served from
    prefect.yaml by `deployments.serve`, polling every second."""
    prefect = PrefectServer(
        home=tmp_path_factory.mktemp("durable-home"),
        extra_env={
            **FAST_EVENT_STORE,
            "PREFECT_SERVER_EVENTS_PROACTIVE_GRANULARITY": "PT1S",
        },
    )
    stack = LocalStack(sim_settings=zero_delay_settings())
    try:
        prefect.start()
        stack.start(prefect=prefect)
        stack.credentials().oss_bucket(BUCKET).create_bucket()
        with ServedDeployments(stack, BLOCK):
            yield stack
    finally:
        stack.stop()
        prefect.stop()


def start_run(stack: LocalStack, instance_ids: list[str], **command: Any) -> str:
    """Start a `run-command` run; the keyword arguments are its `command` (a CommandSpec)."""
    parameters = {"instance_ids": instance_ids, "command": command}

    async def create() -> str:
        async with get_client() as client:
            deployment = await client.read_deployment_by_name("run-command/run-command")
            run = await client.create_flow_run_from_deployment(
                deployment.id, parameters={"credentials_block": BLOCK, **parameters}
            )
            return str(run.id)

    with temporary_settings(updates={PREFECT_API_URL: stack.api_url}):
        return asyncio.run(create())


def state(stack: LocalStack, run_id: str) -> dict[str, Any]:
    return httpx.get(f"{stack.api_url}/flow_runs/{run_id}", timeout=30).json()["state"]


def states(stack: LocalStack, run_id: str) -> list[str]:
    history = httpx.get(
        f"{stack.api_url}/flow_run_states/", params={"flow_run_id": run_id}, timeout=30
    ).json()
    return [s["name"] for s in sorted(history, key=lambda s: s["timestamp"])]


def processes_of(run_id: str) -> list[int]:
    """Processes running this flow run (the runner gives each its id in the environment)."""
    found = []
    marker = f"PREFECT__FLOW_RUN_ID={run_id}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def table(stack: LocalStack, run_id: str) -> list[dict[str, Any]]:
    artifacts = httpx.post(
        f"{stack.api_url}/artifacts/filter",
        json={"artifacts": {"flow_run_id": {"any_": [run_id]}, "type": {"any_": ["table"]}}},
        timeout=30,
    ).json()
    data = artifacts[0]["data"]
    return json.loads(data) if isinstance(data, str) else data


def resumed_by(stack: LocalStack, run_id: str) -> list[str]:
    """Which of the run's resume automations fired: `events` or `deadline`."""
    found = httpx.post(
        f"{stack.api_url}/events/filter",
        json={
            "filter": {
                "event": {"name": ["prefect.automation.triggered"]},
                "occurred": {"since": "2026-01-01T00:00:00Z"},
            },
            "limit": 50,
        },
        timeout=30,
    ).json()["events"]
    names = [e["resource"].get("prefect.resource.name", "") for e in found]
    prefix = f"runbooks-resume-{run_id}-"
    return sorted(n.rsplit("-", 1)[-1] for n in names if n.startswith(prefix))


def finished(stack: LocalStack, run_id: str, timeout: float = 240) -> dict[str, Any]:
    """The run's final state; on timeout, what it went through, to say where it stuck."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = state(stack, run_id)
        if current["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return current
        time.sleep(0.5)
    raise AssertionError(
        f"run {run_id} not finished after {timeout}s: states {states(stack, run_id)}, "
        f"resume automations fired: {resumed_by(stack, run_id)}, logs:\n{logs_of(stack, run_id)}"
    )


def logs_of(stack: LocalStack, run_id: str) -> str:
    found = httpx.post(
        f"{stack.api_url}/logs/filter",
        json={"logs": {"flow_run_id": {"any_": [run_id]}}, "sort": "TIMESTAMP_ASC"},
        timeout=30,
    ).json()
    return "\n".join(f"{r['timestamp']} {r['message']}" for r in found)


def invocations(stack: LocalStack) -> int:
    return httpx.get(f"{stack.sim_url}/_alisim/health", timeout=10).json()["invocations"]


def automations_of(stack: LocalStack, run_id: str) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{stack.api_url}/automations/related-to/prefect.flow-run.{run_id}", timeout=30
    )
    return response.json() if response.status_code == 200 else []


def test_a_long_wait_suspends_holds_no_process_and_is_resumed_by_the_events(served) -> None:
    httpx.post(f"{served.sim_url}/_alisim/faults", json={}).raise_for_status()
    ids = launch_ready(served, 2)
    before = invocations(served)
    run_id = start_run(
        served,
        ids,
        script="sleep 12; echo done",
        timeout=60,
        suspend_after=3,
        output_bucket=BUCKET,
    )
    suspended = wait_until(
        lambda: state(served, run_id)["name"] == "Suspended", timeout=300, interval=0.3
    )
    assert suspended
    # The run's process has exited: nothing holds a slot while the command runs.
    wait_until(lambda: not processes_of(run_id), timeout=30, interval=0.3)
    assert state(served, run_id)["name"] == "Suspended"
    assert len(automations_of(served, run_id)) == 2
    done = finished(served, run_id)
    assert done["type"] == "COMPLETED", done
    assert resumed_by(served, run_id) == ["events"]
    history = states(served, run_id)
    assert "Suspended" in history and "Resuming" in history
    rows = table(served, run_id)
    assert [(r["status"], r["exit_code"]) for r in rows] == [("Success", 0)] * 2
    assert {r["settled_by"] for r in rows} == {"result: event, output: event"}
    assert all("done" in r["output_preview"] for r in rows)
    assert invocations(served) - before == 1  # RunCommand was not repeated on resume
    assert automations_of(served, run_id) == []


def test_a_lost_event_is_settled_when_the_deadline_resumes_the_run(served) -> None:
    ids = launch_ready(served, 1)
    faults(
        served,
        delivery={"drop_rate": 1.0, "event_types": ["ecs:CloudAssistant:TaskCompleted"]},
    )
    describe_before = served.api_calls().get("Ecs", {}).get("DescribeInvocations", 0)
    run_id = start_run(
        served,
        ids,
        script="sleep 2; echo done",
        timeout=15,
        result_grace=5,
        suspend_after=3,
    )
    wait_until(lambda: state(served, run_id)["name"] == "Suspended", timeout=300, interval=0.3)
    done = finished(served, run_id)
    assert done["type"] == "COMPLETED", done
    assert resumed_by(served, run_id) == ["deadline"]
    rows = table(served, run_id)
    assert [(r["status"], r["exit_code"]) for r in rows] == [("Success", 0)]
    assert rows[0]["settled_by"] == "result: reconciliation"
    describe = served.api_calls()["Ecs"].get("DescribeInvocations", 0) - describe_before
    assert describe == 1
