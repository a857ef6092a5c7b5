"""The runbooks end to end: flows on a real Prefect server, the official SDKs against alisim,
events through alisim's EventBridge → the relay → Prefect, and faults injected on the way."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import httpx
import pytest
from alibabacloud_ecs20140526 import models as ecs

from flows.provision_and_run import provision_and_run
from flows.run_command import run_command
from flows.steps import CommandSpec
from tests.helpers import events_in_store, wait_until
from tests.runbook_stack import (
    BUCKET,
    describe_calls,
    faults,
    launch_ready,
    run,
    run_state,
    statuses,
)

LONG_SCRIPT = """\
echo "{{greeting}} from $INSTANCE_ID"
i=0; while [ $i -lt 2000 ]; do echo "line $i of a report longer than 24 KB"; i=$((i+1)); done
echo "the end"
"""
# Short deadlines so that reconciliation, when a test needs it, comes within seconds.
FAST = {"heartbeat_timeout": 3, "result_grace": 3, "delivery_timeout": 3}


def test_provision_and_run_settles_every_step_by_event_with_no_describe_call(cloud) -> None:
    report = run(
        provision_and_run,
        cloud,
        count=3,
        script=LONG_SCRIPT,
        parameters={"greeting": "hello"},
        output_bucket=BUCKET,
    )
    assert statuses(report) == [("Success", 0)] * 3
    for row in report.instances:
        assert row.settled_by == {"heartbeat": "event", "result": "event", "output": "event"}
        assert row.output_source == "oss"
        assert row.output.startswith(f"hello from {row.instance_id}\n")
        assert row.output.rstrip().endswith("the end")
        assert len(row.output) > 24 * 1024
        assert row.oss_uri == f"oss://{BUCKET}/runbooks/{report.invoke_ids[0]}/{row.instance_id}"
        assert row.heartbeat_seconds is not None
    assert [w.name for w in report.waits] == ["FirstHeartbeat", "TaskCompleted", "OutputDelivered"]
    assert describe_calls(cloud) == {}
    calls = cloud.api_calls()["Ecs"]
    assert calls["RunInstances"] == 1 and calls["RunCommand"] == 1 and calls["DeleteInstances"] == 1
    assert report.deleted


def test_the_run_is_visible_in_prefect_artifacts_and_events(cloud, prefect_server) -> None:
    state = run_state(provision_and_run, cloud, count=2, script="echo seen", output_bucket=BUCKET)
    assert state.is_completed()
    flow_run_id = str(state.state_details.flow_run_id)

    api = prefect_server.api_url

    def found() -> Any:
        artifacts = httpx.post(
            f"{api}/artifacts/filter",
            json={
                "artifacts": {"flow_run_id": {"any_": [flow_run_id]}},
                "limit": 50,
                "sort": "CREATED_DESC",
            },
        ).json()
        events = httpx.post(
            f"{api}/events/filter",
            json={
                "filter": {
                    "event": {"prefix": ["runbooks."]},
                    "related": {"id": [f"prefect.flow-run.{flow_run_id}"]},
                },
                "limit": 50,
            },
        ).json()["events"]
        names = {e["event"] for e in events}
        wanted = {"runbooks.wait.started", "runbooks.wait.finished", "runbooks.command.invoked"}
        if wanted <= names and len(artifacts) >= 2:
            return artifacts, events, httpx.get(f"{api}/flow_runs/{flow_run_id}").json()
        return None

    artifacts, events, flow_run = wait_until(found, timeout=20, interval=0.3)
    table = next(a for a in artifacts if a["type"] == "table")
    assert table["key"] == "provision-and-run"
    assert "settled_by" in table["data"] and "heartbeat: event" in table["data"]
    summary = next(a for a in artifacts if a["type"] == "markdown")
    assert "2 of 2 instances succeeded" in summary["data"]
    invoked = next(e for e in events if e["event"] == "runbooks.command.invoked")
    assert invoked["resource"]["prefect.resource.id"].startswith("acs.ecs.invocation.t-")
    # The secret never reaches the server with the flow run's parameters.
    secret = cloud.credentials().access_key_secret.get_secret_value()
    assert secret not in str(flow_run["parameters"])


def test_a_failing_command_fails_the_run_or_is_reported_by_policy(cloud) -> None:
    script = 'echo "about to fail" >&2; exit 3'
    state = run_state(provision_and_run, cloud, count=2, script=script, output_bucket=BUCKET)
    assert state.is_failed()
    message = state.message or str(state.result(raise_on_failure=False))
    assert "2 of 2 instances failed" in message
    report = run(
        provision_and_run,
        cloud,
        count=2,
        script=script,
        output_bucket=BUCKET,
        on_failure="continue",
    )
    assert statuses(report) == [("Failed", 3)] * 2
    assert all("about to fail" in (r.output or "") for r in report.instances)
    assert len(report.failed) == 2


def test_a_command_that_times_out_is_reported_as_timeout(cloud) -> None:
    report = run(
        provision_and_run,
        cloud,
        count=1,
        script="echo started; sleep 30",
        timeout=1,
        output_bucket=BUCKET,
        on_failure="continue",
    )
    row = report.instances[0]
    assert row.status == "Timeout"
    assert row.settled_by["result"] == "event"
    assert "started" in (row.output or "")


def test_dropped_heartbeats_are_settled_by_one_reconciliation_call(cloud) -> None:
    faults(
        cloud,
        delivery={"drop_rate": 1.0, "event_types": ["ecs:CloudAssistant:FirstHeartbeat"]},
    )
    report = run(provision_and_run, cloud, count=3, script="echo ok", output_bucket=BUCKET, **FAST)
    assert statuses(report) == [("Success", 0)] * 3
    for row in report.instances:
        assert row.settled_by == {
            "heartbeat": "reconciliation",
            "result": "event",
            "output": "event",
        }
    assert describe_calls(cloud) == {"DescribeCloudAssistantStatus": 1}


def test_dropped_task_completed_events_are_reconciled_with_the_right_status(cloud) -> None:
    faults(
        cloud,
        delivery={"drop_rate": 1.0, "event_types": ["ecs:CloudAssistant:TaskCompleted"]},
    )
    report = run(
        provision_and_run,
        cloud,
        count=3,
        script="echo partial; exit 7",
        timeout=2,
        output_bucket=BUCKET,
        on_failure="continue",
        **FAST,
    )
    assert statuses(report) == [("Failed", 7)] * 3
    assert {r.settled_by["result"] for r in report.instances} == {"reconciliation"}
    assert {r.settled_by["output"] for r in report.instances} == {"event"}
    assert describe_calls(cloud) == {"DescribeInvocations": 1}


def test_duplicated_and_reordered_events_are_counted_once(cloud) -> None:
    faults(cloud, delivery={"duplicate_rate": 1.0, "reorder_rate": 0.5, "reorder_hold_ms": 200})
    report = run(provision_and_run, cloud, count=4, script="echo ok", output_bucket=BUCKET)
    assert statuses(report) == [("Success", 0)] * 4
    assert len({r.instance_id for r in report.instances}) == 4
    for wait in report.waits:
        assert (wait.instances, wait.by_event, wait.unsettled) == (4, 4, 0)
    assert describe_calls(cloud) == {}


def test_with_the_relay_unreachable_every_wait_ends_by_reconciliation(cloud) -> None:
    from alicloud_runbooks.subscribe import subscribe
    from local_stack.servers import free_port

    subscribe(
        cloud.credentials().eventbridge_client(),
        target_url=f"http://127.0.0.1:{free_port()}/eventbridge",
        token=cloud.token,
        dead_letter_arn="acs:mns:cn-hangzhou::/queues/x",
    )
    report = run(
        provision_and_run,
        cloud,
        count=2,
        script="echo ok",
        timeout=2,
        output_bucket=BUCKET,
        **FAST,
    )
    assert statuses(report) == [("Success", 0)] * 2
    for row in report.instances:
        assert set(row.settled_by.values()) == {"reconciliation"}
        assert row.output_source == "oss"
    assert describe_calls(cloud) == {
        "DescribeCloudAssistantStatus": 1,
        "DescribeInvocations": 2,
    }


def test_an_agent_too_old_for_first_heartbeat_is_a_clear_error(cloud) -> None:
    httpx.patch(
        f"{cloud.sim_url}/_alisim/settings", json={"agent_versions": {"linux": "1.0.1.100"}}
    ).raise_for_status()
    state = run_state(provision_and_run, cloud, count=1, script="echo ok", **FAST)
    assert state.is_failed()
    report = run(provision_and_run, cloud, count=1, script="echo ok", on_failure="continue", **FAST)
    row = report.instances[0]
    assert row.status == "NoHeartbeat"
    assert "1.0.1.100" in row.error and "later than 1.0.2.569" in row.error
    assert describe_calls(cloud).get("DescribeInvocationResults") is None


def test_a_retried_flow_run_reuses_its_instances(cloud) -> None:
    # RunCommand fails once (not retried by the SDK), so Prefect retries the whole flow run.
    faults(
        cloud,
        api=[{"product": "Ecs", "action": "RunCommand", "error": "InternalError", "count": 1}],
    )
    flaky = provision_and_run.with_options(retries=1, retry_delay_seconds=0)
    report = asyncio.run(
        flaky(
            credentials=cloud.credentials(),
            count=3,
            command=CommandSpec(script="echo ok", output_bucket=BUCKET),
        )
    )
    assert statuses(report) == [("Success", 0)] * 3
    calls = cloud.api_calls()["Ecs"]
    # The retry finds the launch in its persisted result (and RunInstances' ClientToken
    # would give the same instances back anyway); RunCommand failed, so it runs again.
    assert calls["RunInstances"] == 1 and calls["RunCommand"] == 2
    listed = (
        cloud.credentials()
        .ecs_client()
        .describe_instances(ecs.DescribeInstancesRequest(region_id="cn-hangzhou", max_results=100))
    )
    assert listed.body.total_count in (0, None) or len(listed.body.instances.instance) == 0
    created = httpx.get(
        f"{cloud.sim_url}/_alisim/events", params={"type": "ecs:CloudAssistant:FirstHeartbeat"}
    ).json()["events"]
    assert len(created) == 3


def test_run_command_on_instances_chosen_by_tag_or_id(cloud) -> None:
    def tagged(tag: str, count: int) -> list[str]:
        return launch_ready(cloud, count, tag=[ecs.RunInstancesRequestTag(key="fleet", value=tag)])

    web, db = tagged("web", 2), tagged("db", 1)
    by_tag = run(run_command, cloud, script="echo $INSTANCE_ID", tags={"fleet": "web"})
    assert sorted(r.instance_id for r in by_tag.instances) == sorted(web)
    assert all(r.output.strip() == r.instance_id for r in by_tag.instances)
    assert all(r.output_source == "inline" for r in by_tag.instances)
    by_id = run(
        run_command, cloud, script="echo $INSTANCE_ID", instance_ids=db, output_bucket=BUCKET
    )
    assert [(r.instance_id, r.status, r.output_source) for r in by_id.instances] == [
        (db[0], "Success", "oss")
    ]


def test_wrong_credentials_give_one_clear_error_without_the_secret(cloud) -> None:
    from alicloud_runbooks.blocks import AlibabaCloudCredentials

    wrong = cloud.credentials().model_copy(
        update={
            "access_key_secret": AlibabaCloudCredentials(
                access_key_id="x", access_key_secret="definitely-wrong-secret"
            ).access_key_secret
        }
    )
    state = asyncio.run(
        provision_and_run(
            credentials=wrong, count=1, command=CommandSpec(script="echo"), return_state=True
        )
    )
    assert state.is_failed()
    with pytest.raises(Exception) as raised:
        state.result()
    text = str(raised.value)
    # GetCallerIdentity comes first unless the account of this key id is already known.
    assert "failed: SignatureDoesNotMatch" in text
    assert "check the credentials block" in text
    assert "definitely-wrong-secret" not in text
    assert "string to sign" not in text
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_when_oss_delivery_fails_the_inline_output_is_used_and_marked_truncated(cloud) -> None:
    report = run(
        provision_and_run, cloud, count=2, script=LONG_SCRIPT, output_bucket="no-such-bucket"
    )
    assert statuses(report) == [("Success", 0)] * 2
    for row in report.instances:
        assert row.settled_by["output"] == "event"
        assert row.output_source == "inline-truncated"
        assert row.oss_uri is None
        assert len(row.output.encode()) <= 24 * 1024
        assert row.row()["output_preview"].endswith("[inline, truncated at 24 KB]")
    assert describe_calls(cloud) == {"DescribeInvocationResults": 1}


def test_the_output_wait_starts_with_the_result_wait(cloud, prefect_server) -> None:
    """The OutputDelivered wait is on before the first result comes, so no delivery waits
    for the last TaskCompleted to be noticed; every key still settles by event."""
    state = run_state(provision_and_run, cloud, count=2, script="sleep 1", output_bucket=BUCKET)
    assert state.is_completed()
    flow_run_id = str(state.state_details.flow_run_id)

    def waits() -> dict[tuple[str, str], str] | None:
        events = httpx.post(
            f"{prefect_server.api_url}/events/filter",
            json={
                "filter": {
                    "event": {"prefix": ["runbooks.wait."]},
                    "related": {"id": [f"prefect.flow-run.{flow_run_id}"]},
                },
                "limit": 50,
            },
        ).json()["events"]
        found = {
            (e["event"], e["resource"]["prefect.resource.name"]): e["occurred"] for e in events
        }
        wanted = {
            ("runbooks.wait.started", "OutputDelivered"),
            ("runbooks.wait.finished", "TaskCompleted"),
        }
        return found if wanted <= set(found) else None

    found = wait_until(waits, timeout=20, interval=0.3)
    output_started = found[("runbooks.wait.started", "OutputDelivered")]
    results_finished = found[("runbooks.wait.finished", "TaskCompleted")]
    assert datetime.fromisoformat(output_started) < datetime.fromisoformat(results_finished)
    report = state.result()
    delivery = next(w for w in report.waits if w.name == "OutputDelivered")
    assert (delivery.by_event, delivery.by_reconciliation) == (2, 0)
    assert describe_calls(cloud) == {}


def test_results_are_taken_while_the_next_runcommand_is_still_being_retried(
    cloud, prefect_server
) -> None:
    """RunCommand goes out off the flow's event loop: while the second batch's call is being
    throttled and retried, the first batch's TaskCompleted events are already in the run (on
    the loop they would wait for the whole task)."""
    ids = [i for n in (50, 50, 1) for i in launch_ready(cloud, n)]  # two RunCommand batches
    faults(
        cloud,
        api=[{"product": "Ecs", "action": "RunCommand", "after": 1, "count": 3}],
    )
    started = datetime.now().timestamp()
    state = run_state(run_command, cloud, instance_ids=ids, script="echo ok")
    assert state.is_completed()
    flow_run_id = str(state.state_details.flow_run_id)
    log = httpx.get(f"{cloud.sim_url}/_alisim/call-log", params={"since": started}).json()
    run_commands = [c["time"] for c in log["calls"] if c["action"] == "RunCommand"]
    assert len(run_commands) == 5  # the first batch, then the second: 3 throttled, 1 taken

    def arrivals() -> list[float] | None:
        events = events_in_store(
            prefect_server,
            event={"name": ["runbooks.wait.settled"]},
            related={"id": [f"prefect.flow-run.{flow_run_id}"]},
        )
        times = [
            datetime.fromisoformat(entry["arrived"]).timestamp()
            for e in events
            if e["payload"]["wait"] == "TaskCompleted"
            for entry in e["payload"]["settled"]
        ]
        return times if len(times) == len(ids) else None

    first_in = min(wait_until(arrivals, timeout=20, interval=0.3))
    assert first_in < max(run_commands), "no result was taken before the last RunCommand"
