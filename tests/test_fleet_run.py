"""fleet-run end to end: rate control (batches, percentages and counts, the error budget, the
canary, approvals, a global concurrency limit shared by two runs), progress and batch events,
through the real path: flows on the session's `prefect server start`, the official SDK
against alisim, events through EventBridge rules → the relay → Prefect."""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from alibabacloud_ecs20140526 import models as ecs

from alicloud_runbooks.rate_control import RateControl
from alicloud_runbooks.report import FleetReport
from alisim.config import zero_delay_settings
from flows.fleet_run import fleet_run
from flows.steps import CommandSpec
from local_stack.stack import LocalStack
from tests.helpers import wait_until
from tests.runbook_stack import with_command

REGION = "cn-hangzhou"


@pytest.fixture(scope="module")
def stack(prefect_server) -> Iterator[LocalStack]:
    local = LocalStack(sim_settings=zero_delay_settings())
    local.start(prefect=prefect_server)
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture
def cloud(stack: LocalStack) -> Iterator[LocalStack]:
    httpx.post(f"{stack.sim_url}/_alisim/reset").raise_for_status()
    httpx.patch(
        f"{stack.sim_url}/_alisim/settings", json=zero_delay_settings().model_dump()
    ).raise_for_status()
    stack.subscribe()
    with stack.prefect_client_settings():
        yield stack


def launch_ready(stack: LocalStack, count: int, tags: dict[str, str] | None = None) -> list[str]:
    """Instances launched outside the runbook, with their agents online."""
    client = stack.credentials().ecs_client()
    ids = client.run_instances(
        ecs.RunInstancesRequest(
            region_id=REGION,
            image_id="aliyun_3_x64",
            instance_type="ecs.g7.large",
            amount=count,
            tag=[ecs.RunInstancesRequestTag(key=k, value=v) for k, v in (tags or {}).items()],
        )
    ).body.instance_id_sets.instance_id_set

    def online() -> bool:
        found = client.describe_cloud_assistant_status(
            ecs.DescribeCloudAssistantStatusRequest(
                region_id=REGION, instance_id=ids, max_results=50
            )
        ).body.instance_cloud_assistant_status_set.instance_cloud_assistant_status
        return len(found) == count and all(s.cloud_assistant_status == "true" for s in found)

    wait_until(online)
    return ids


def failing_for(ids: list[str], then: str = "echo ok") -> str:
    """A script that fails (exit 1) on exactly these instances."""
    return f'case "$INSTANCE_ID" in {"|".join(ids)}) echo broken; exit 1;; esac\n{then}'


def run_fleet(stack: LocalStack, **params: Any) -> Any:
    """The flow's final state (it fails when the run stopped early); callable from a thread."""
    with stack.prefect_client_settings():
        params = with_command(fleet_run, params)
        return asyncio.run(fleet_run(credentials=stack.credentials(), return_state=True, **params))


def calls(stack: LocalStack, action: str) -> int:
    return stack.api_calls().get("Ecs", {}).get(action, 0)


def invoked(stack: LocalStack, instance_ids: list[str]) -> set[str]:
    """Instances on which alisim ran any command (its TaskCompleted events)."""
    found = httpx.get(
        f"{stack.sim_url}/_alisim/events",
        params={"type": "ecs:CloudAssistant:TaskCompleted", "limit": 10_000},
    ).json()["events"]
    ran = {e["data"]["instanceId"] for e in found}
    return ran & set(instance_ids)


def artifacts(prefect_server: Any, flow_run_id: str) -> list[dict[str, Any]]:
    return httpx.post(
        f"{prefect_server.api_url}/artifacts/filter",
        json={"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 50},
    ).json()


def _is(artifact: dict[str, Any], kind: str) -> bool:
    """Of this type; a markdown one is the run's summary (outputs are markdown too)."""
    key = artifact["key"] or ""
    return artifact["type"] == kind and (kind != "markdown" or key.endswith("-summary"))


def artifact(prefect_server: Any, flow_run_id: str, kind: str) -> dict[str, Any]:
    return wait_until(
        lambda: next((a for a in artifacts(prefect_server, flow_run_id) if _is(a, kind)), None),
        timeout=20,
        interval=0.2,
    )


def table(prefect_server: Any, flow_run_id: str) -> dict[str, dict[str, Any]]:
    data = artifact(prefect_server, flow_run_id, "table")["data"]
    rows = json.loads(data) if isinstance(data, str) else data
    return {row["instance"]: row for row in rows}


def run_id(state: Any) -> str:
    return str(state.state_details.flow_run_id)


def logs(prefect_server: Any, flow_run_id: str) -> list[str]:
    found = httpx.post(
        f"{prefect_server.api_url}/logs/filter",
        json={"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200},
    ).json()
    return [entry["message"] for entry in found]


def batch_events(prefect_server: Any, flow_run_id: str) -> list[dict[str, Any]]:
    return httpx.post(
        f"{prefect_server.api_url}/events/filter",
        json={
            "filter": {
                "event": {"prefix": ["runbooks.batch."]},
                "related": {"id": [f"prefect.flow-run.{flow_run_id}"]},
            },
            "limit": 50,
        },
    ).json()["events"]


def test_the_run_stops_after_the_batch_that_exceeds_the_error_budget(cloud, prefect_server) -> None:
    """30 instances, batches of 20% (6), max_errors 10% (3): two failures in each of the first
    two batches make 4 > 3, so batch 3 never starts and its 18 instances are NotStarted."""
    ids = launch_ready(cloud, 30)
    broken = [ids[0], ids[3], ids[6], ids[10]]
    state = run_fleet(
        cloud,
        script=failing_for(broken),
        instance_ids=ids,
        rate_control={"batch_size": "20%", "max_errors": "10%"},
    )
    assert state.is_failed()
    message = str(state.result(raise_on_failure=False))
    assert "error budget is exceeded after batch 2: 4 instances failed, 3 allowed" in message
    assert "18 were not started" in message
    flow_run_id = run_id(state)
    rows = table(prefect_server, flow_run_id)
    assert [rows[i]["status"] for i in ids[12:]] == ["NotStarted"] * 18
    assert {i for i in ids[:12] if rows[i]["status"] == "Failed"} == set(broken)
    assert all(rows[i]["status"] == "Success" for i in ids[:12] if i not in broken)
    # The cloud agrees: two RunCommand calls, nothing ran on the instances never started.
    assert calls(cloud, "RunCommand") == 2
    assert invoked(cloud, ids) == set(ids[:12])
    summary = artifact(prefect_server, flow_run_id, "markdown")["data"]
    assert "**Stopped:** the error budget is exceeded after batch 2" in summary
    assert "## Not started (18)" in summary
    # The progress artifact ends at 100%: every instance is settled or known not to start.
    progress = artifact(prefect_server, flow_run_id, "progress")
    assert progress["data"] == 100
    assert progress["description"].startswith("fleet-run stopped: the error budget is exceeded")
    assert "8 succeeded, 4 failed, 18 not started, of 30" in progress["description"]
    said = wait_until(
        lambda: (
            (found := logs(prefect_server, flow_run_id))
            and any(m.startswith("Stopped: the error budget is exceeded") for m in found)
            and found
        ),
        timeout=20,
        interval=0.3,
    )
    assert any("error budget exceeded (4 failed, 3 allowed)" in m for m in said)


def test_batch_sizes_and_budgets_as_counts_and_percentages_on_a_tag_group(
    cloud, prefect_server
) -> None:
    """By tag: 10 instances of env=staging among 13. A count (4 → 4, 4, 2) and a percentage
    (25% → 3, 3, 3, 1); max_errors 1 tolerates one failure; the rest never run."""
    staging = launch_ready(cloud, 10, {"env": "staging"})
    others = launch_ready(cloud, 3, {"env": "prod"})
    by_count = run_fleet(
        cloud,
        script=failing_for([staging[5]]),
        tags={"env": "staging"},
        rate_control=RateControl(batch_size=4, max_errors=1),
    )
    assert by_count.is_completed()
    report: FleetReport = by_count.result()
    assert sorted(r.instance_id for r in report.instances) == sorted(staging)
    assert [b.instances for b in report.batches] == [4, 4, 2]
    assert [b.run_command_calls for b in report.batches] == [1, 1, 1]
    assert report.error_budget == 1 and len(report.errors) == 1 and not report.not_started
    assert report.stopped_reason is None
    by_percent = run_fleet(
        cloud, script="echo ok", tags={"env": "staging"}, rate_control={"batch_size": "25%"}
    )
    report = by_percent.result()
    assert [b.instances for b in report.batches] == [3, 3, 3, 1]
    assert all(r.status == "Success" for r in report.instances)
    assert invoked(cloud, others) == set()
    # Progress: the artifact exists and ends at 100%, written per batch and as results
    # settle, but bounded (not one write per instance).
    flow_run_id = run_id(by_percent)
    progress = artifact(prefect_server, flow_run_id, "progress")
    assert progress["key"] == "fleet-run-progress"
    assert progress["data"] == 100
    assert "10 succeeded, 0 failed, 0 not started, of 10" in progress["description"]
    # Creation, a forced write at each batch's start and end, the final one, and at most one
    # a second in between: one write per settled instance would be 10 more.
    seconds = (report.finished_at - report.started_at).total_seconds()
    bound = 1 + 2 * len(report.batches) + 1 + math.ceil(seconds)
    assert 2 <= report.progress_writes <= bound
    # One started and one finished event per batch, the finished one related to its
    # invocation.
    events = wait_until(
        lambda: (found := batch_events(prefect_server, flow_run_id)) and len(found) == 8 and found,
        timeout=20,
        interval=0.3,
    )
    finished = sorted(
        (e for e in events if e["event"] == "runbooks.batch.finished"),
        key=lambda e: e["payload"]["number"],
    )
    assert [e["resource"]["prefect.resource.id"] for e in finished] == [
        f"runbooks.batch.{flow_run_id}.{n}" for n in (1, 2, 3, 4)
    ]
    for event, batch in zip(finished, report.batches, strict=True):
        related = {r["prefect.resource.id"] for r in event["related"]}
        assert f"acs.ecs.invocation.{batch.invoke_ids[0]}" in related
        assert event["payload"]["remaining"] == 10 - sum(
            b.instances for b in report.batches[: batch.number]
        )


def test_a_failing_canary_stops_the_run_whatever_the_budget(cloud, prefect_server) -> None:
    ids = launch_ready(cloud, 8)
    state = run_fleet(
        cloud,
        script=failing_for([ids[1]]),
        instance_ids=ids,
        rate_control={"canary": 2, "batch_size": 3, "max_errors": "50%"},
    )
    assert state.is_failed()
    assert "the canary batch failed on 1 of 2 instances" in str(
        state.result(raise_on_failure=False)
    )
    rows = table(prefect_server, run_id(state))
    assert [rows[i]["status"] for i in ids] == ["Success", "Failed"] + ["NotStarted"] * 6
    assert invoked(cloud, ids) == set(ids[:2])
    # A canary that passes opens the way to the batches.
    passed = run_fleet(
        cloud, script="echo ok", instance_ids=ids, rate_control={"canary": 2, "batch_size": 3}
    )
    report = passed.result()
    assert [(b.instances, b.canary) for b in report.batches] == [
        (2, True),
        (3, False),
        (3, False),
    ]


def test_a_window_never_runs_more_than_its_concurrency(cloud, tmp_path: Path) -> None:
    """Concurrency mode, a window of 3 over 9 instances, the first slow (6 s): never more than 3
    commands at once, and the window slides (others start while the slow one runs)."""
    ids = launch_ready(cloud, 9)
    work = f'case "$INSTANCE_ID" in {ids[0]}) sleep 6;; *) sleep 0.3;; esac'
    report = run_fleet(
        cloud,
        script=concurrency_probe(tmp_path, work),
        instance_ids=ids,
        rate_control={"mode": "concurrency", "concurrency": 3},
    ).result()
    assert all(r.status == "Success" for r in report.instances)
    assert max(observed(tmp_path)) == 3
    # Groups started as slots freed: the 8 quick ones all ran while the slow one did.
    ended = [instance for what, instance, _ in probe_log(tmp_path) if what == "end"]
    assert ended[-1] == ids[0]
    assert calls(cloud, "RunCommand") > 3


def concurrency_probe(folder: Path, work: str) -> str:
    """A script that logs its start and end with how many commands run at that moment on
    the whole 'cloud' (alisim runs them as processes on this machine), working in between."""
    running = folder / "running"
    running.mkdir(exist_ok=True)
    return (
        f'touch "{running}/$INSTANCE_ID"\n'
        f'echo "start $INSTANCE_ID $(ls "{running}" | wc -l)" >> "{folder}/log"\n'
        f"{work}\n"
        f'echo "end $INSTANCE_ID $(ls "{running}" | wc -l)" >> "{folder}/log"\n'
        f'rm -f "{running}/$INSTANCE_ID"\n'
    )


def probe_log(folder: Path) -> list[tuple[str, str, int]]:
    return [
        (what, instance, int(count))
        for what, instance, count in (
            line.split() for line in (folder / "log").read_text().splitlines()
        )
    ]


def observed(folder: Path) -> list[int]:
    return [count for _, _, count in probe_log(folder)]


def test_two_fleet_runs_share_a_global_concurrency_limit(
    cloud, prefect_server, tmp_path: Path
) -> None:
    """Two runs at once, each with a window of 3, share a limit of 4 (created by the first
    that needs it): together they never run more than 4 commands, though alone each runs 3."""
    name = f"test-fleet-{uuid.uuid4().hex[:8]}"
    ids = launch_ready(cloud, 16)
    script = concurrency_probe(tmp_path, "sleep 1")
    control = {
        "mode": "concurrency",
        "concurrency": 3,
        "max_concurrency": 4,
        "concurrency_limit": name,
    }
    states: dict[int, Any] = {}
    spans: dict[int, tuple[float, float]] = {}

    def one(n: int, targets: list[str]) -> None:
        started = time.monotonic()
        states[n] = run_fleet(cloud, script=script, instance_ids=targets, rate_control=control)
        spans[n] = (started, time.monotonic())

    threads = [
        threading.Thread(target=one, args=(0, ids[:8])),
        threading.Thread(target=one, args=(1, ids[8:])),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=240)
    assert all(s.is_completed() for s in states.values()), states
    reports = [states[n].result() for n in (0, 1)]
    assert all(r.status == "Success" for report in reports for r in report.instances)
    assert [r.concurrency_limit_slots for r in reports] == [4, 4]
    # They overlapped, so the limit was shared, not taken in turns by runs one after another.
    assert spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1]
    seen = observed(tmp_path)
    assert max(seen) <= 4, f"at most 4 commands at once across both runs, saw {max(seen)}"
    assert max(seen) >= 3
    limit = httpx.get(f"{prefect_server.api_url}/v2/concurrency_limits/{name}").json()
    assert (limit["limit"], limit["active_slots"]) == (4, 0)
    httpx.delete(f"{prefect_server.api_url}/v2/concurrency_limits/{name}")


def _paused_run(prefect_server: Any, since: datetime) -> str | None:
    found = httpx.post(
        f"{prefect_server.api_url}/flow_runs/filter",
        json={
            "flow_runs": {
                "state": {"type": {"any_": ["PAUSED"]}},
                "start_time": {"after_": since.isoformat()},
            },
            "limit": 5,
        },
    ).json()
    return found[0]["id"] if found else None


def test_an_operator_approves_one_batch_and_stops_the_next(cloud, prefect_server) -> None:
    """approval='every_batch': the run pauses (Prefect's pause with an input form) after each
    batch; resumed with proceed=true it goes on, with proceed=false it stops there."""
    ids = launch_ready(cloud, 6)
    since = datetime.now(UTC)
    outcome: dict[str, Any] = {}
    runner = threading.Thread(
        target=lambda: outcome.setdefault(
            "state",
            run_fleet(
                cloud,
                script="echo ok",
                instance_ids=ids,
                rate_control={"batch_size": 2, "approval": "every_batch"},
            ),
        )
    )
    runner.start()
    for answer in ({"proceed": True, "note": "looks good"}, {"proceed": False, "note": "enough"}):
        flow_run_id = wait_until(lambda: _paused_run(prefect_server, since), timeout=60)

        def resumed(run: str = flow_run_id, given: dict[str, Any] = answer) -> bool:
            # The pause's input form is saved just after the Paused state: until then the
            # server refuses the input, so the answer is given until it is accepted.
            response = httpx.post(
                f"{prefect_server.api_url}/flow_runs/{run}/resume", json={"run_input": given}
            )
            return response.status_code < 300 and response.json().get("status") == "ACCEPT"

        wait_until(resumed, timeout=30, interval=0.3)
        wait_until(lambda: _paused_run(prefect_server, since) is None, timeout=30)
    runner.join(timeout=120)
    state = outcome["state"]
    assert state.is_failed()
    assert "the operator stopped the run before batch 3 (enough)" in str(
        state.result(raise_on_failure=False)
    )
    rows = table(prefect_server, run_id(state))
    assert [rows[i]["status"] for i in ids] == ["Success"] * 4 + ["NotStarted"] * 2
    assert invoked(cloud, ids) == set(ids[:4])


def test_a_fleet_run_that_ends_early_stops_its_commands_and_says_so(cloud, prefect_server) -> None:
    """The flow's timeout in the middle of a window: the commands still running are stopped,
    the partial report is published, and the progress says the run ended early."""
    ids = launch_ready(cloud, 4)
    short = fleet_run.with_options(timeout_seconds=6)
    with cloud.prefect_client_settings():
        state = asyncio.run(
            short(
                credentials=cloud.credentials(),
                command=CommandSpec(script="sleep 60", timeout=120),
                instance_ids=ids,
                rate_control={"mode": "concurrency", "concurrency": 2},
                return_state=True,
            )
        )
    assert state.is_failed() or state.is_crashed()
    assert calls(cloud, "RunCommand") == 1
    assert calls(cloud, "StopInvocation") == 1
    flow_run_id = run_id(state)
    summary = artifact(prefect_server, flow_run_id, "markdown")["data"]
    assert "The run ended early" in summary
    assert "Stopped by the runbook" in summary
    assert "## Not started (2)" in summary
    progress = artifact(prefect_server, flow_run_id, "progress")
    assert progress["data"] == 0
    assert "ended early" in progress["description"]
