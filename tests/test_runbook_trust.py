"""Runbooks that never misjudge: late starts, failing reconciliation, forged events, lost
events and Prefect restarts, each through the real path (SDKs → alisim, alisim → relay →
`prefect server start`, flows on that server)."""

from __future__ import annotations

import asyncio
import signal
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from alibabacloud_ecs20140526 import models as ecs

from alisim.config import zero_delay_settings
from flows.provision_and_run import provision_and_run
from flows.run_command import run_command
from flows.steps import CommandSpec
from local_stack.servers import FAST_EVENT_STORE, PrefectServer
from local_stack.stack import LocalStack
from tests.helpers import wait_until
from tests.runbook_stack import (
    BUCKET,
    REGION,
    api_calls,
    describe_calls,
    faults,
    launch_ready,
    run,
    run_state,
    settings,
    statuses,
)


def running_invocation(stack: LocalStack, instance_id: str) -> Any:
    """The invocation running on this instance, once there is one."""
    client = stack.credentials().ecs_client()

    def found() -> Any:
        body = client.describe_invocations(
            ecs.DescribeInvocationsRequest(region_id=REGION, instance_id=instance_id)
        ).body
        for invocation in body.invocations.invocation or []:
            for ii in invocation.invoke_instances.invoke_instance:
                if ii.instance_id == instance_id and ii.invocation_status == "Running":
                    return invocation
        return None

    return wait_until(found, timeout=30, interval=0.1)


def test_a_command_that_starts_late_is_waited_for_not_killed(cloud) -> None:
    """One command slot for three instances: the third starts 6 s after RunCommand, past
    `timeout + result_grace`. Its deadline runs from its start, so it finishes, unstopped."""
    settings(cloud, max_concurrent_commands=1)
    report = run(
        provision_and_run,
        cloud,
        count=3,
        script="sleep 3",
        timeout=4,
        result_grace=1,
        output_bucket=BUCKET,
    )
    assert statuses(report) == [("Success", 0)] * 3
    assert report.stopped == []
    assert api_calls(cloud, "StopInvocation") == 0
    assert not any(r.error for r in report.instances)


def test_a_command_that_cannot_finish_in_time_is_stopped_and_its_final_status_reported(
    cloud,
) -> None:
    """The second instance's command starts 4 s late; with `start_timeout=1` it cannot end by
    the wait's limit (7 s), so the runbook stops it and reports the Terminated that follows."""
    settings(cloud, max_concurrent_commands=1)
    report = run(
        provision_and_run,
        cloud,
        count=2,
        script="sleep 4",
        timeout=5,
        result_grace=1,
        start_timeout=1,
        on_failure="continue",
    )
    by_status = {r.status: r for r in report.instances}
    assert set(by_status) == {"Success", "Terminated"}
    stopped = by_status["Terminated"]
    assert report.stopped == [stopped.instance_id]
    assert stopped.exit_code is not None
    assert stopped.error.startswith("stopped by the runbook: no final status within 7s")
    assert "last seen Running" in stopped.error
    assert api_calls(cloud, "StopInvocation") == 1
    assert "Stopped by the runbook" in report.markdown()


def test_a_failing_reconciliation_keeps_event_results_and_publishes_the_report(
    cloud, prefect_server
) -> None:
    ids = launch_ready(cloud, 6)
    lost = ids[:2]
    faults(
        cloud,
        delivery={
            "drop_rate": 1.0,
            "event_types": ["ecs:CloudAssistant:TaskCompleted"],
            "contains": lost,
        },
        api=[{"product": "Ecs", "action": "DescribeInvocations", "error": "Throttling.User"}],
    )
    state = run_state(
        run_command, cloud, script="echo done", instance_ids=ids, timeout=2, result_grace=1
    )
    assert state.is_failed()
    message = str(state.result(raise_on_failure=False))
    assert "2 of 6 instances failed" in message
    flow_run_id = str(state.state_details.flow_run_id)
    table = wait_until(lambda: _artifact(prefect_server, flow_run_id, "table"), timeout=20)
    rows = {row["instance"]: row for row in _table(table)}
    for instance_id in ids[2:]:
        assert (rows[instance_id]["status"], rows[instance_id]["settled_by"]) == (
            "Success",
            "result: event",
        )
    for instance_id in lost:
        assert rows[instance_id]["status"] == "Unknown"
        assert "DescribeInvocations failed" in rows[instance_id]["error"]
        assert "Throttling.User" in rows[instance_id]["error"]
    summary = wait_until(lambda: _artifact(prefect_server, flow_run_id, "markdown"), timeout=20)
    assert "reconciliation failed" in summary["data"]


def test_a_forged_event_does_not_decide_a_result(cloud) -> None:
    ids = launch_ready(cloud, 1)
    outcome: dict[str, Any] = {}

    def forge() -> None:
        invocation = running_invocation(cloud, ids[0])
        for account, command in (("999999999999", "c-madeup"), (_account(cloud), "c-madeup")):
            outcome[account] = _post_task_completed(
                cloud, account, ids[0], invocation.invoke_id, command
            )

    forger = threading.Thread(target=forge)
    forger.start()
    report = run(
        run_command,
        cloud,
        script="sleep 4; exit 1",
        instance_ids=ids,
        timeout=20,
        on_failure="continue",
    )
    forger.join()
    assert outcome["999999999999"] == 403  # the relay's account allow-list
    assert outcome[_account(cloud)] == 200  # an allowed account, but not the run's command
    assert statuses(report) == [("Failed", 1)]
    assert report.instances[0].settled_by["result"] == "event"
    assert report.waits[0].foreign >= 1


def test_ten_percent_lost_events_cost_seconds_not_the_deadline(cloud) -> None:
    faults(cloud, delivery={"drop_rate": 0.1})
    started = datetime.now(UTC)
    report = run(
        provision_and_run,
        cloud,
        count=30,
        script="echo ok",
        output_bucket=BUCKET,
        heartbeat_timeout=120,
        result_grace=120,
        delivery_timeout=120,
    )
    seconds = (datetime.now(UTC) - started).total_seconds()
    assert statuses(report) == [("Success", 0)] * 30
    assert seconds < 90  # far inside any deadline: stragglers were reconciled early
    assert all(w.unsettled == 0 for w in report.waits)
    calls = describe_calls(cloud)
    assert calls.get("DescribeCloudAssistantStatus", 0) <= 3
    assert calls.get("DescribeInvocations", 0) <= 6


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_prefect_restart_mid_run_still_ends_every_instance_right(how: signal.Signals) -> None:
    with PrefectServer(extra_env=FAST_EVENT_STORE) as prefect:
        stack = LocalStack(sim_settings=zero_delay_settings())
        stack.start(prefect=prefect)
        try:
            stack.credentials().oss_bucket(BUCKET).create_bucket()
            with stack.prefect_client_settings():
                restarted = threading.Event()

                def restart() -> None:
                    instance = wait_until(lambda: _first_instance(stack), timeout=60)
                    running_invocation(stack, instance)
                    prefect.kill(how)
                    prefect.start()
                    restarted.set()

                restarter = threading.Thread(target=restart)
                restarter.start()
                report = run(
                    provision_and_run,
                    stack,
                    count=3,
                    script="sleep 6; echo done",
                    timeout=30,
                    result_grace=10,
                    delivery_timeout=30,
                    output_bucket=BUCKET,
                )
                restarter.join()
        finally:
            stack.stop()
    assert restarted.is_set()
    assert statuses(report) == [("Success", 0)] * 3
    assert all((r.output or "").strip() == "done" for r in report.instances)


def _first_instance(stack: LocalStack) -> str | None:
    body = (
        stack.credentials()
        .ecs_client()
        .describe_instances(ecs.DescribeInstancesRequest(region_id=REGION, max_results=10))
        .body
    )
    found = body.instances.instance or []
    return found[0].instance_id if found else None


def _account(stack: LocalStack) -> str:
    return stack.sim_settings.account_id


def _post_task_completed(
    stack: LocalStack, account: str, instance_id: str, invoke_id: str, command_id: str
) -> int:
    now = datetime.now(UTC).isoformat()
    event = {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": "acs.ecs",
        "type": "ecs:CloudAssistant:TaskCompleted",
        "subject": f"acs:ecs:{REGION}:{account}:instance/{instance_id}",
        "time": now,
        "aliyunaccountid": account,
        "aliyunregionid": REGION,
        "data": {
            "instanceId": instance_id,
            "invokeId": invoke_id,
            "commandId": command_id,
            "invocationStatus": "Success",
            "exitCode": "0",
            "startTime": now,
            "finishTime": now,
        },
    }
    return httpx.post(
        stack.relay_url, json=event, headers={"Authorization": f"Bearer {stack.token}"}
    ).status_code


def _artifact(prefect_server: Any, flow_run_id: str, kind: str) -> dict[str, Any] | None:
    found = httpx.post(
        f"{prefect_server.api_url}/artifacts/filter",
        json={"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 20},
    ).json()
    # A markdown artifact is the run's summary (the failed instances' outputs are markdown too).
    wanted = [a for a in found if a["type"] == kind]
    if kind == "markdown":
        wanted = [a for a in wanted if (a["key"] or "").endswith("-summary")]
    return next(iter(wanted), None)


def _table(artifact: dict[str, Any]) -> list[dict[str, Any]]:
    import json

    data = artifact["data"]
    return json.loads(data) if isinstance(data, str) else data


def test_alisim_gone_mid_run_still_publishes_the_report(prefect_server) -> None:
    stack = LocalStack(sim_settings=zero_delay_settings())
    stack.start(prefect=prefect_server)
    try:
        with stack.prefect_client_settings():
            ids = launch_ready(stack, 3)
            # Its results never come: alisim would publish Terminated as it shuts down.
            faults(stack, delivery={"drop_rate": 1.0, "contains": ids})

            def kill() -> None:
                running_invocation(stack, ids[0])
                assert stack.sim is not None
                stack.sim.stop()

            killer = threading.Thread(target=kill)
            killer.start()
            state = run_state(
                run_command,
                stack,
                script="sleep 3",
                instance_ids=ids,
                timeout=3,
                result_grace=1,
            )
            killer.join()
    finally:
        stack.stop()
    assert state.is_failed()
    flow_run_id = str(state.state_details.flow_run_id)
    table = wait_until(lambda: _artifact(prefect_server, flow_run_id, "table"), timeout=20)
    rows = _table(table)
    assert sorted(r["instance"] for r in rows) == sorted(ids)
    assert {r["status"] for r in rows} == {"Unknown"}
    assert all("EndpointUnreachable" in r["error"] for r in rows)


def test_a_run_that_ends_early_stops_its_commands_before_deleting_instances(
    cloud, prefect_server
) -> None:
    short = provision_and_run.with_options(timeout_seconds=8)
    state = asyncio.run(
        short(
            credentials=cloud.credentials(),
            count=2,
            command=CommandSpec(script="sleep 60", timeout=120),
            return_state=True,
        )
    )
    assert state.is_failed() or state.is_crashed()
    assert api_calls(cloud, "StopInvocation") == 1
    assert api_calls(cloud, "DeleteInstances") == 1
    flow_run_id = str(state.state_details.flow_run_id)
    summary = wait_until(lambda: _artifact(prefect_server, flow_run_id, "markdown"), timeout=20)
    assert "The run ended early" in summary["data"]
    assert "Stopped by the runbook" in summary["data"]
