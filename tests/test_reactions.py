"""Runbooks that start themselves, through the real path: a real event in alisim (a command
fails, an instance stops, agents come up) → EventBridge → the relay → `prefect server start`
→ the trigger of a deployment served by `deployments.serve` → the run. Each fires one run per
window of events and acts on the window's instances in one batch."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from alibabacloud_ecs20140526 import models as ecs

from alicloud_runbooks.events import names
from alicloud_runbooks.restarts import MANAGED_TAG
from alisim.config import zero_delay_settings
from flows.run_command import run_command
from flows.steps import CommandSpec
from local_stack.servers import FAST_EVENT_STORE, PrefectServer
from local_stack.serving import ServedDeployments
from local_stack.stack import LocalStack
from tasks.instances import stop_instances
from tests.helpers import wait_until
from tests.runbook_stack import BUCKET, REGION, api_calls, launch

BLOCK = "reactive-alisim"
DIAGNOSTICS = "collect-diagnostics-on-failed-command"
RESTART = "restart-stopped-instances"
BOOTSTRAP = "run-command-on-first-heartbeat"
FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[LocalStack]:
    """A stack of its own, the deployments served with the diagnostics and restart triggers
    on (the bootstrap trigger is switched on by its own test), and a window read 1.5 s after
    it closes (the server's event persister flushes every 0.5 s here)."""
    prefect = PrefectServer(
        home=tmp_path_factory.mktemp("reactive-home"),
        extra_env=FAST_EVENT_STORE,
    )
    stack = LocalStack(sim_settings=zero_delay_settings())
    try:
        prefect.start()
        stack.start(prefect=prefect)
        stack.credentials().oss_bucket(BUCKET).create_bucket()
        with ServedDeployments(
            stack,
            BLOCK,
            enable_triggers=[DIAGNOSTICS, RESTART],
            extra_env={"RUNBOOKS_WINDOW_SETTLE_SECONDS": "1.5"},
        ):
            yield stack
    finally:
        stack.stop()
        prefect.stop()


# -- Prefect API helpers ----------------------------------------------------------------------


def api(stack: LocalStack, method: str, path: str, **kwargs: Any) -> Any:
    response = httpx.request(method, f"{stack.api_url}{path}", timeout=30, **kwargs)
    response.raise_for_status()
    return response.json() if response.content else None


def deployment(stack: LocalStack, flow: str, name: str) -> dict[str, Any]:
    return api(stack, "GET", f"/deployments/name/{flow}/{name}")


def runs_of(stack: LocalStack, deployment_id: str) -> list[dict[str, Any]]:
    return api(
        stack,
        "POST",
        "/flow_runs/filter",
        json={"deployments": {"id": {"any_": [deployment_id]}}, "sort": "START_TIME_ASC"},
    )


def new_runs(stack: LocalStack, deployment_id: str, before: set[str]) -> list[dict[str, Any]]:
    return [r for r in runs_of(stack, deployment_id) if r["id"] not in before]


def finished_runs(
    stack: LocalStack, deployment_id: str, before: set[str], timeout: float = 180
) -> list[dict[str, Any]]:
    """The deployment's runs since `before`, once there is at least one and all are final."""

    def done() -> list[dict[str, Any]] | None:
        runs = new_runs(stack, deployment_id, before)
        return runs if runs and all(r["state"]["type"] in FINAL for r in runs) else None

    return wait_until(done, timeout=timeout, interval=0.5)


def artifact(stack: LocalStack, run_id: str, key: str) -> Any:
    found = api(
        stack,
        "POST",
        "/artifacts/filter",
        json={"artifacts": {"flow_run_id": {"any_": [run_id]}, "key": {"any_": [key]}}},
    )
    assert found, f"no artifact {key} on run {run_id}"
    data = found[0]["data"]
    return json.loads(data) if isinstance(data, str) else data


def logs_of(stack: LocalStack, run_id: str) -> str:
    found = api(
        stack,
        "POST",
        "/logs/filter",
        json={"logs": {"flow_run_id": {"any_": [run_id]}}, "sort": "TIMESTAMP_ASC"},
    )
    return "\n".join(r["message"] for r in found)


def stored(stack: LocalStack, event: str, **filters: Any) -> list[dict[str, Any]]:
    body = {
        "filter": {
            "event": {"name": [event]},
            "occurred": {"since": "2026-01-01T00:00:00Z"},
            **filters,
        },
        "limit": 50,
    }
    return api(stack, "POST", "/events/filter", json=body)["events"]


def set_automation(stack: LocalStack, name: str, enabled: bool) -> None:
    (found,) = [a for a in api(stack, "POST", "/automations/filter", json={}) if a["name"] == name]
    api(stack, "PATCH", f"/automations/{found['id']}", json={"enabled": enabled})


# -- cloud helpers ----------------------------------------------------------------------------


def run_in_process(stack: LocalStack, ids: list[str], **command: Any) -> None:
    """A runbook (`run-command`) run here: its commands carry the runbooks' tags."""
    with stack.prefect_client_settings():
        asyncio.run(
            run_command(
                CommandSpec(**command), ids, on_failure="continue", credentials=stack.credentials()
            )
        )


def invocations_named(stack: LocalStack, name: str) -> list[Any]:
    client = stack.credentials().ecs_client()
    body = client.describe_invocations(
        ecs.DescribeInvocationsRequest(region_id=REGION, page_size=50)
    ).body
    return [i for i in body.invocations.invocation if i.command_name == name]


def statuses(stack: LocalStack, ids: list[str]) -> dict[str, str]:
    client = stack.credentials().ecs_client()
    body = client.describe_instances(
        ecs.DescribeInstancesRequest(region_id=REGION, instance_ids=json.dumps(ids))
    ).body
    return {i.instance_id: i.status for i in body.instances.instance}


def ready(stack: LocalStack, count: int, **request: Any) -> list[str]:
    return stack.launch_ready(count, **request)


# -- collect-diagnostics --------------------------------------------------------------------


def test_twenty_failed_runbook_commands_get_one_diagnostics_run_and_one_runcommand(
    served,
) -> None:
    diagnostics = deployment(served, "collect-diagnostics", "collect-diagnostics")
    before = {r["id"] for r in runs_of(served, diagnostics["id"])}
    ids = ready(served, 20)
    (foreign,) = ready(served, 1)
    # A command no runbook started fails in the same burst: no diagnostics for it.
    client = served.credentials().ecs_client()
    client.run_command(
        ecs.RunCommandRequest(
            region_id=REGION,
            type="RunShellScript",
            command_content="exit 5",
            instance_id=[foreign],
            name="someone-elses",
        )
    )
    run_in_process(served, ids, script="echo broken; exit 3", name="nightly-patch")
    (run,) = finished_runs(served, diagnostics["id"], before)
    assert run["state"]["type"] == "COMPLETED", logs_of(served, run["id"])
    (failed,) = invocations_named(served, "nightly-patch")
    table = artifact(served, run["id"], "diagnostics-of-failed-invocations")
    assert sorted(r["instance"] for r in table) == sorted(ids)
    assert {r["failed_invocation"] for r in table} == {failed.invoke_id}
    assert {(r["failed_status"], r["diagnostics_status"]) for r in table} == {("Failed", "Success")}
    # One RunCommand of the read-only script covered the twenty instances.
    (diag,) = invocations_named(served, "collect-diagnostics")
    assert sorted(i.instance_id for i in diag.invoke_instances.invoke_instance) == sorted(ids)
    assert {r["diagnostics_invocation"] for r in table} == {diag.invoke_id}

    # Each result is linked to the failed invocation by an event related to it.
    def linked_now() -> list[dict[str, Any]]:
        return stored(
            served,
            "runbooks.diagnostics.collected",
            related={"id": [names.invocation_resource(failed.invoke_id)]},
        )

    # The run emits them as it ends; Prefect stores them a moment later.
    wait_until(lambda: len(linked_now()) >= len(ids), timeout=60, interval=0.5)
    linked = linked_now()
    assert sorted(e["resource"]["prefect.resource.id"] for e in linked) == sorted(
        names.instance_resource(i) for i in ids
    )
    assert all(
        {
            "prefect.resource.id": names.invocation_resource(failed.invoke_id),
            "prefect.resource.role": "failed-invocation",
        }
        in e["related"]
        for e in linked
    )
    assert "== memory" in linked[0]["payload"]["output_tail"]


def test_the_diagnostics_command_failing_starts_no_diagnostics(served) -> None:
    """The loop guard: a failed `collect-diagnostics` command fires nothing; a failure after
    it still does, and its run covers only that instance."""
    diagnostics = deployment(served, "collect-diagnostics", "collect-diagnostics")
    before = {r["id"] for r in runs_of(served, diagnostics["id"])}
    guarded, watched = ready(served, 2)
    run_in_process(served, [guarded], script="exit 1", name="collect-diagnostics")
    # Its failure is in Prefect (so the trigger has seen it) before the next one happens.
    wait_until(
        lambda: [
            e
            for e in stored(served, names.TASK_COMPLETED)
            if e["resource"]["prefect.resource.id"] == names.instance_resource(guarded)
        ],
        timeout=60,
        interval=0.5,
    )
    run_in_process(served, [watched], script="exit 2", name="deploy-app")
    (run,) = finished_runs(served, diagnostics["id"], before)
    table = artifact(served, run["id"], "diagnostics-of-failed-invocations")
    assert [r["instance"] for r in table] == [watched]
    fired_by = [
        e["payload"]["triggering_event"]["resource"]["prefect.resource.id"]
        for e in stored(served, "prefect.automation.triggered")
        if e["resource"].get("prefect.resource.name") == DIAGNOSTICS
    ]
    assert names.instance_resource(guarded) not in fired_by
    assert names.instance_resource(watched) in fired_by


# -- restart-stopped --------------------------------------------------------------------------


@pytest.fixture
def restarting(served) -> Iterator[dict[str, Any]]:
    """restart-stopped set to start instances again, at most once per instance per hour."""
    found = deployment(served, "restart-stopped", "restart-stopped")
    original = found["parameters"]
    api(
        served,
        "PATCH",
        f"/deployments/{found['id']}",
        json={"parameters": {**original, "action": "start", "max_restarts_per_hour": 1}},
    )
    try:
        yield found
    finally:
        api(served, "PATCH", f"/deployments/{found['id']}", json={"parameters": original})


def test_managed_instances_stopped_unasked_are_started_again_once_per_hour(
    served, restarting
) -> None:
    managed_tag = [ecs.RunInstancesRequestTag(key=MANAGED_TAG, value="true")]
    first, second, asked = ready(served, 3, tag=managed_tag)
    (unmanaged,) = ready(served, 1)
    before = {r["id"] for r in runs_of(served, restarting["id"])}
    starts = api_calls(served, "StartInstances")
    client = served.credentials().ecs_client()
    # One burst: three stopped by hand, one by a runbook (which marks its stop).
    client.stop_instances(
        ecs.StopInstancesRequest(region_id=REGION, instance_id=[first, second, unmanaged])
    )
    with served.prefect_client_settings():
        stop_instances(served.credentials(), [asked], reason="resize")
    (run,) = finished_runs(served, restarting["id"], before)
    assert run["state"]["type"] == "COMPLETED", logs_of(served, run["id"])
    verdicts = {
        r["instance_id"]: r["action"] for r in artifact(served, run["id"], "restart-stopped")
    }
    assert verdicts == {first: "start", second: "start", unmanaged: "none", asked: "none"}
    assert api_calls(served, "StartInstances") - starts == 1  # one call for the batch
    wait_until(
        lambda: statuses(served, [first, second]) == {first: "Running", second: "Running"},
        timeout=60,
        interval=0.5,
    )
    assert statuses(served, [unmanaged, asked]) == {unmanaged: "Stopped", asked: "Stopped"}

    # It stops again within the hour: the loop guard reports it and leaves it stopped.
    before |= {run["id"]}
    client.stop_instances(ecs.StopInstancesRequest(region_id=REGION, instance_id=[first]))
    (again,) = finished_runs(served, restarting["id"], before)
    (row,) = artifact(served, again["id"], "restart-stopped")
    assert (row["instance_id"], row["action"], row["restarts_last_hour"]) == (first, "report", 1)
    assert "loop guard" in row["reason"]
    assert api_calls(served, "StartInstances") - starts == 1
    assert statuses(served, [first]) == {first: "Stopped"}

    def reported() -> list[Any]:
        return stored(
            served,
            "runbooks.instance.stopped-unasked",
            resource={"id": [names.instance_resource(first)]},
        )

    # The run emits it as it ends; Prefect stores it a moment later.
    wait_until(lambda: len(reported()) >= 1, timeout=60, interval=0.5)
    assert len(reported()) == 1


# -- the FirstHeartbeat bootstrap ---------------------------------------------------------


@pytest.fixture
def bootstrap(served) -> Iterator[dict[str, Any]]:
    set_automation(served, BOOTSTRAP, True)
    try:
        yield deployment(served, "run-command", "run-command")
    finally:
        set_automation(served, BOOTSTRAP, False)


def test_instances_coming_up_together_are_bootstrapped_in_one_run(served, bootstrap) -> None:
    before = {r["id"] for r in runs_of(served, bootstrap["id"])}
    started = datetime.now(UTC)
    ids = launch(served.credentials().ecs_client(), 20)
    (run,) = finished_runs(served, bootstrap["id"], before)
    assert run["state"]["type"] == "COMPLETED", logs_of(served, run["id"])
    assert datetime.fromisoformat(run["parameters"]["window"]["start"]) >= started
    table = artifact(served, run["id"], "run-command")
    assert sorted(r["instance"] for r in table) == sorted(ids)
    assert {r["status"] for r in table} == {"Success"}
    assert all("done" in r["output_preview"] for r in table)
    (invocation,) = invocations_named(served, "bootstrap")
    assert len(invocation.invoke_instances.invoke_instance) == 20
    assert len(new_runs(served, bootstrap["id"], before)) == 1
