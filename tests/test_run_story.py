"""The story of a run, as an operator reads it in Prefect: progress while a wait is long, a
warning when events stop coming and the relay is down, the failed instances' outputs and a
link that downloads them, the events that settled each step and the way back from an event to
its run, and one traceback per failure. Flows on a real Prefect server against alisim."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

import httpx
import pytest

from alisim.config import zero_delay_settings
from flows.provision_and_run import provision_and_run
from flows.run_command import run_command
from local_stack.stack import LocalStack, flush_prefect_clients
from tests.helpers import events_in_store as events
from tests.helpers import wait_until
from tests.runbook_stack import BUCKET, faults, launch_ready, run_state


def run_id(state: Any) -> str:
    return str(state.state_details.flow_run_id)


def logs(prefect_server: Any, flow_run_id: str) -> list[dict[str, Any]]:
    """The run's log records in Prefect (its flow run's and its task runs')."""
    flush_prefect_clients()
    found: list[dict[str, Any]] = []
    while True:
        page = httpx.post(
            f"{prefect_server.api_url}/logs/filter",
            json={
                "logs": {"flow_run_id": {"any_": [flow_run_id]}},
                "sort": "TIMESTAMP_ASC",
                "limit": 200,
                "offset": len(found),
            },
        ).json()
        found += page
        if len(page) < 200:
            return found


def logged(prefect_server: Any, flow_run_id: str, pattern: str) -> list[str]:
    return [
        r["message"] for r in logs(prefect_server, flow_run_id) if re.search(pattern, r["message"])
    ]


def artifacts(prefect_server: Any, flow_run_id: str) -> list[dict[str, Any]]:
    return httpx.post(
        f"{prefect_server.api_url}/artifacts/filter",
        json={"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 100},
    ).json()


def related(event: dict[str, Any], role: str) -> list[str]:
    return [
        r["prefect.resource.id"] for r in event["related"] if r["prefect.resource.role"] == role
    ]


# -- progress while waiting ------------------------------------------------------------------


def test_a_slow_wait_logs_its_progress_and_keeps_a_progress_artifact(
    cloud, prefect_server, monkeypatch
) -> None:
    monkeypatch.setenv("RUNBOOKS_PROGRESS_SECONDS", "1")
    ids = launch_ready(cloud, 2)
    state = run_state(run_command, cloud, script="sleep 4; echo done", instance_ids=ids)
    assert state.is_completed()
    flow_run_id = run_id(state)
    lines = wait_until(
        lambda: logged(prefect_server, flow_run_id, r"^TaskCompleted: \d+ of 2 settled"),
        timeout=20,
    )
    # A steady, modest cadence: about one a second over a four-second wait, no more.
    assert 2 <= len(lines) <= 6, lines
    assert all(
        re.fullmatch(r"TaskCompleted: [01] of 2 settled; [12] open; .*; stream connected", x)
        for x in lines
    ), lines
    assert lines[0].startswith("TaskCompleted: 0 of 2 settled; 2 open; no event yet in")
    progress = [a for a in artifacts(prefect_server, flow_run_id) if a["type"] == "progress"]
    # One per wait that lasted past a line; the short OutputDelivered wait has none.
    assert [a["key"] for a in progress] == ["wait-taskcompleted"]
    assert progress[0]["data"] == 100
    assert progress[0]["description"] == "TaskCompleted: done, 2 of 2 settled"
    # A short wait says nothing more than its start and its end.
    assert not logged(prefect_server, flow_run_id, r"^OutputDelivered: \d+ of")


def test_a_stalled_wait_warns_and_says_what_to_check_when_the_relay_is_down(
    prefect_server, monkeypatch
) -> None:
    stack = LocalStack(sim_settings=zero_delay_settings())
    stack.start(prefect=prefect_server)
    try:
        stack.subscribe()
        assert stack.relay is not None
        relay = stack.relay.url
        monkeypatch.setenv("RUNBOOKS_PROGRESS_SECONDS", "0.5")
        monkeypatch.setenv("RUNBOOKS_STALL_SECONDS", "1")
        monkeypatch.setenv("RUNBOOKS_RELAY_URL", f"{stack.relay_url}?token={stack.token}")
        with stack.prefect_client_settings():
            ids = launch_ready(stack, 2)
            stack.relay.stop()
            stack.relay = None
            state = run_state(
                run_command,
                stack,
                script="sleep 2; echo done",
                instance_ids=ids,
                timeout=3,
                result_grace=1,
            )
    finally:
        stack.stop()
    assert state.is_completed()
    flow_run_id = run_id(state)
    warnings = wait_until(
        lambda: logged(prefect_server, flow_run_id, r"^TaskCompleted: no event for \S+ while"),
        timeout=20,
    )
    # Once per silence, not once per line.
    assert len(warnings) == 1, warnings
    warning = warnings[0]
    assert "2 of 2 keys are open" in warning
    assert f"the relay at {relay} does not answer (ConnectError)" in warning
    for check in ("`runbooks relay`", "`runbooks status`", "`runbooks doctor`"):
        assert check in warning
    assert stack.token not in warning
    records = logs(prefect_server, flow_run_id)
    assert next(r for r in records if r["message"] == warning)["level"] == 30  # WARNING


# -- outputs in the UI -------------------------------------------------------------------------

LONG_FAILURE = """\
case "$INSTANCE_ID" in {failing}) code=4;; *) code=0;; esac
i=1; while [ $i -le 600 ]; do echo "line $i of $INSTANCE_ID"; i=$((i+1)); done
echo "warning: disk almost full" >&2
echo "the end of $INSTANCE_ID"
exit $code
"""


def test_a_failed_instance_gets_its_output_and_a_download_link_in_the_ui(
    cloud, prefect_server
) -> None:
    ids = launch_ready(cloud, 3)
    failing, asked, quiet = ids
    state = run_state(
        run_command,
        cloud,
        script=LONG_FAILURE.format(failing=failing),
        instance_ids=ids,
        output_bucket=BUCKET,
        on_failure="continue",
        full_outputs=[asked, "i-not-in-this-run"],
    )
    assert state.is_completed()
    report = state.result()
    flow_run_id = run_id(state)
    found = wait_until(
        lambda: len(a := artifacts(prefect_server, flow_run_id)) >= 6 and a, timeout=20
    )

    def described(pattern: str) -> dict[str, dict[str, Any]]:
        return {m.group(1): a for a in found if (m := re.match(pattern, a["description"] or ""))}

    # Both kinds are markdown in Prefect's API (a link artifact is a markdown link).
    outputs = described(r"Output of (\S+) \(")
    links = described(r"Output of (\S+) in OSS")
    # The failed instance and the one asked for; not the other successful one.
    assert set(outputs) == {failing, asked}
    text = outputs[failing]["data"]
    assert f"# Output of `{failing}` (Failed, exit code 4)" in text
    assert "Cloud Assistant merges stdout and stderr" in text
    assert f"line 1 of {failing}\n" in text and f"line 200 of {failing}\n" in text
    assert "… 202 lines cut (lines 201 to 402 of 602) …" in text
    assert f"line 201 of {failing}\n" not in text and f"line 402 of {failing}\n" not in text
    assert f"line 403 of {failing}\n" in text and f"the end of {failing}" in text
    assert set(links) == {failing, asked}
    url = re.search(r"\((http[^)]+)\)", links[failing]["data"]).group(1)
    assert url in text  # the markdown artifact links it too
    # The presigned URL downloads the whole object from alisim's OSS, with no credentials.
    row = next(r for r in report.instances if r.instance_id == failing)
    downloaded = httpx.get(url)
    assert downloaded.status_code == 200, downloaded.text
    assert downloaded.text == row.output
    assert downloaded.text.count("\n") == 602
    bucket, _, key = row.oss_uri.removeprefix("oss://").partition("/")
    assert cloud.credentials().oss_bucket(bucket).get_object(key).read().decode() == row.output
    # The table's preview: the last lines of the merged output, not only the last one.
    table = next(a for a in found if a["type"] == "table")
    rows = {r["instance"]: r for r in json.loads(table["data"])}
    assert rows[failing]["output_preview"] == (
        f"line 600 of {failing} ⏎ warning: disk almost full ⏎ the end of {failing}"
    )
    assert "stdout and stderr" in table["description"]
    assert quiet not in outputs
    warned = logged(prefect_server, flow_run_id, r"full_outputs names 1 instance")
    assert warned and "i-not-in-this-run" in warned[0]


# -- cloud events tied to runs ----------------------------------------------------------------


def test_from_a_run_to_the_events_that_settled_it_and_back(cloud, prefect_server) -> None:
    state = run_state(provision_and_run, cloud, count=2, script="echo ok", output_bucket=BUCKET)
    assert state.is_completed()
    report = state.result()
    flow_run_id = run_id(state)
    flush_prefect_clients()
    # From the run: its `runbooks.wait.settled` events name the Alibaba events.
    settled = wait_until(
        lambda: (
            len(
                e := events(
                    prefect_server,
                    event={"name": ["runbooks.wait.settled"]},
                    related={"id": [f"prefect.flow-run.{flow_run_id}"]},
                )
            )
            == 3
            and e
        ),
        timeout=20,
    )
    alibaba_ids = [
        i.removeprefix("prefect.event.") for e in settled for i in related(e, "settled-by")
    ]
    assert len(alibaba_ids) == 6  # heartbeat, result and output of two instances
    alibaba = events(prefect_server, id={"id": alibaba_ids})
    assert sorted(e["event"] for e in alibaba) == sorted(
        [
            "acs.ecs.CloudAssistant.FirstHeartbeat",
            "acs.ecs.CloudAssistant.TaskCompleted",
            "acs.ecs.CloudAssistant.OutputDelivered",
        ]
        * 2
    )
    instances = {r.instance_id for r in report.instances}
    assert {e["resource"]["prefect.resource.name"] for e in alibaba} == instances
    # Each entry says when the relay took the event and when the run had it.
    stored = {e["id"]: e for e in alibaba}
    for entry in (x for e in settled for x in e["payload"]["settled"]):
        relayed, arrived = (datetime.fromisoformat(entry[k]) for k in ("occurred", "arrived"))
        assert relayed == datetime.fromisoformat(stored[entry["event_id"]]["occurred"])
        assert relayed <= arrived
    # … and the summary links each one's page in the UI.
    summary = next(
        a for a in artifacts(prefect_server, flow_run_id) if a["key"] == "provision-and-run-summary"
    )
    ui = prefect_server.api_url.removesuffix("/api")
    for event in alibaba:
        day = event["occurred"][:10]
        assert f"({ui}/events/event/{day}/{event['id']})" in summary["data"]
    # … and each instance's event feed, where the run's own events link the run.
    for instance in instances:
        assert (
            f"[`{instance}`]({ui}/events?resource=acs.ecs.instance.{instance})" in (summary["data"])
        )
    # From an Alibaba event back to the run.
    task_completed = next(e for e in alibaba if e["event"].endswith("TaskCompleted"))
    (back,) = events(
        prefect_server,
        event={"name": ["runbooks.wait.settled"]},
        related={"id": [f"prefect.event.{task_completed['id']}"]},
    )
    assert related(back, "flow-run") == [f"prefect.flow-run.{flow_run_id}"]
    assert task_completed["resource"]["prefect.resource.id"] in related(back, "instance")


# -- one traceback per failure -----------------------------------------------------------------


def test_a_failing_task_logs_one_traceback_not_two(cloud, prefect_server) -> None:
    faults(
        cloud,
        api=[{"product": "Ecs", "action": "RunCommand", "error": "InternalError", "count": 10}],
    )
    ids = launch_ready(cloud, 1)
    state = run_state(run_command, cloud, script="echo ok", instance_ids=ids)
    assert state.is_failed()
    flow_run_id = run_id(state)
    failed = wait_until(
        lambda: logged(prefect_server, flow_run_id, r"^Task run failed with exception"), timeout=20
    )
    assert len(failed) == 1 and "\n" not in failed[0]
    assert "RunCommand failed: InternalError" in failed[0]
    tracebacks = [
        r["message"]
        for r in logs(prefect_server, flow_run_id)
        if "Traceback (most recent call last)" in r["message"]
    ]
    assert len(tracebacks) == 1
    assert tracebacks[0].startswith("Encountered exception during execution")


@pytest.mark.parametrize("bad", ["0", "soon"])
def test_a_bad_progress_setting_is_a_clear_error(
    cloud, prefect_server, monkeypatch, bad: str
) -> None:
    monkeypatch.setenv("RUNBOOKS_PROGRESS_SECONDS", bad)
    ids = launch_ready(cloud, 1)
    state = run_state(run_command, cloud, script="echo ok", instance_ids=ids)
    assert state.is_failed()
    with pytest.raises(ValueError, match="RUNBOOKS_PROGRESS_SECONDS must be"):
        state.result()
    # One instance is "1 instance" in the logs.
    (line,) = wait_until(
        lambda: logged(prefect_server, run_id(state), r"^RunCommand 'run-command' on "), timeout=20
    )
    assert line.startswith("RunCommand 'run-command' on 1 instance: invocation t-"), line
