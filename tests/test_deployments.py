"""prefect.yaml and deployments/serve.py: the entrypoints import, the triggers validate as
Prefect's, the served deployments are created on a real Prefect server with their
schedules, triggers and block name, a run can be created from them, the event trigger
fires on a FirstHeartbeat with the instance id templated in, and `prefect deploy` itself
reads the file."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prefect import Flow
from prefect.client.orchestration import get_client
from prefect.events import DeploymentEventTrigger, DeploymentTriggerTypes
from prefect.flows import load_flow_from_entrypoint
from prefect.settings import PREFECT_API_URL, temporary_settings
from pydantic import TypeAdapter

from alicloud_runbooks.events import names
from alicloud_runbooks.events.mapping import from_cloud_event
from deployments import serve
from tests import samples
from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parent.parent
FLOW_NAMES = {
    "provision-and-run": "provision-and-run",
    "run-command": "run-command",
    "fleet-run": "fleet-run",
    "deploy-stack": "deploy-stack",
    "delete-stack": "delete-stack",
    "stack-and-run": "stack-and-run",
    "diagnose-stack": "diagnose-stack",
    "collect-diagnostics": "collect-diagnostics",
    "restart-stopped": "restart-stopped",
}


def project() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "prefect.yaml").read_text())


def test_prefect_yaml_names_the_runbooks() -> None:
    deployments = {d["name"]: d for d in project()["deployments"]}
    assert set(deployments) == set(FLOW_NAMES)
    assert deployments["provision-and-run"]["entrypoint"] == (
        "flows/provision_and_run.py:provision_and_run"
    )
    assert deployments["run-command"]["entrypoint"] == "flows/run_command.py:run_command"
    assert deployments["fleet-run"]["entrypoint"] == "flows/fleet_run.py:fleet_run"
    assert deployments["collect-diagnostics"]["entrypoint"] == (
        "flows/reactions.py:collect_diagnostics"
    )
    assert deployments["restart-stopped"]["entrypoint"] == "flows/reactions.py:restart_stopped"
    for spec in deployments.values():
        assert spec["parameters"]["credentials_block"] == "alisim"
        assert spec["work_pool"]["name"] == "runbooks"


@pytest.mark.parametrize("name", sorted(FLOW_NAMES))
def test_entrypoints_load_as_prefect_loads_them(name: str) -> None:
    spec = next(d for d in project()["deployments"] if d["name"] == name)
    path, _, function = spec["entrypoint"].partition(":")
    loaded = load_flow_from_entrypoint(f"{ROOT / path}:{function}")
    assert isinstance(loaded, Flow)
    assert loaded.name == FLOW_NAMES[name]
    assert serve.load_flow(spec["entrypoint"]).name == FLOW_NAMES[name]
    # Every parameter the file sets is one the flow takes.
    assert set(spec["parameters"]) <= set(loaded.parameters.properties)
    for schedule in spec.get("schedules") or []:
        assert set(schedule.get("parameters") or {}) <= set(loaded.parameters.properties)


def test_triggers_validate_as_prefect_deployment_triggers() -> None:
    """Every trigger is a batching one (alicloud_runbooks/windows.py): Reactive, threshold 1,
    a `within`, no for_each, and the run's `window` names the same event, labels and seconds."""
    adapter: TypeAdapter[DeploymentTriggerTypes] = TypeAdapter(DeploymentTriggerTypes)
    # One run per failed stack (diagnose-stack) is not a batching trigger: its own test.
    triggers = [
        t
        for d in project()["deployments"]
        if d["name"] != "diagnose-stack"
        for t in d.get("triggers") or []
    ]
    assert {t["expect"][0] for t in triggers} == {
        names.FIRST_HEARTBEAT,
        names.TASK_COMPLETED,
        names.INSTANCE_STATE_CHANGE,
    }
    for spec in triggers:
        trigger = adapter.validate_python(copy.deepcopy(spec))
        assert isinstance(trigger, DeploymentEventTrigger)
        assert trigger.enabled is False
        assert trigger.posture == "Reactive" and trigger.threshold == 1
        assert not trigger.for_each
        assert trigger.parameters is not None
        window = trigger.parameters["window"]
        assert trigger.expect == {window["event"]}
        assert trigger.within.total_seconds() == window["seconds"] > 0
        assert window["match"] == spec["match"]
        assert window["start"] == "{{ event['occurred'] | string }}"
    # The same specs through serve.py, switched on: all, or by name.
    run_command = next(d for d in project()["deployments"] if d["name"] == "run-command")
    built = serve.triggers_of("run-command", run_command["triggers"], enable=True)
    assert [t.enabled for t in built] == [True]
    named = serve.triggers_of("run-command", run_command["triggers"], enable=["other"])
    assert [t.enabled for t in named] == [False]
    named = serve.triggers_of(
        "run-command", run_command["triggers"], enable=["run-command-on-first-heartbeat"]
    )
    assert [t.enabled for t in named] == [True]


def test_diagnose_stack_trigger_matches_every_failure_status() -> None:
    from alicloud_runbooks.ros_stacks import OUTCOMES

    spec = next(d for d in project()["deployments"] if d["name"] == "diagnose-stack")
    (trigger,) = serve.triggers_of("diagnose-stack", spec["triggers"])
    assert isinstance(trigger, DeploymentEventTrigger)
    assert trigger.expect == {names.STACK_STATUS_CHANGE}
    assert trigger.enabled is True
    failures = {s for row in OUTCOMES.values() for s in row.failure}
    assert set(trigger.match.root[names.STACK_STATUS_LABEL]) == failures
    assert trigger.parameters == {
        "stack_id": "{{ event.resource['prefect.resource.id'] }}",
        "status": "{{ event.resource['acs.ros.stack-status'] }}",
    }


def test_schedules_convert() -> None:
    spec = next(d for d in project()["deployments"] if d["name"] == "provision-and-run")
    (schedule,) = [serve.schedule_of(s) for s in spec["schedules"]]
    assert schedule.cron == "0 3 * * *"
    assert schedule.active is False
    assert schedule.parameters["count"] == 1
    assert serve.schedule_of({"interval": 600}).interval.total_seconds() == 600
    fleet = next(d for d in project()["deployments"] if d["name"] == "fleet-run")
    (nightly,) = [serve.schedule_of(s) for s in fleet["schedules"]]
    assert (nightly.cron, nightly.active) == ("0 2 * * *", False)
    assert nightly.parameters["tags"] == {"env": "staging"}
    assert nightly.parameters["rate_control"]["max_errors"] == "2%"


# -- against the session's Prefect server ---------------------------------------------------


def _api(prefect_server: Any) -> httpx.Client:
    return httpx.Client(base_url=prefect_server.api_url, timeout=30)


def _deployment(api: httpx.Client, name: str) -> dict[str, Any]:
    response = api.get(f"/deployments/name/{FLOW_NAMES[name]}/{name}")
    response.raise_for_status()
    return response.json()


def _automations(api: httpx.Client, deployment_id: str) -> list[dict[str, Any]]:
    response = api.get(f"/automations/related-to/prefect.deployment.{deployment_id}")
    response.raise_for_status()
    return response.json()


def _flow_runs(api: httpx.Client, deployment_id: str) -> list[dict[str, Any]]:
    response = api.post(
        "/flow_runs/filter", json={"deployments": {"id": {"any_": [deployment_id]}}}
    )
    response.raise_for_status()
    return response.json()


@pytest.fixture
def clean_deployments(prefect_server: Any) -> Iterator[httpx.Client]:
    """Removes the runbooks' deployments, their runs and automations after the test: the
    session's server is shared, and an enabled trigger must not outlive its test."""
    api = _api(prefect_server)
    try:
        yield api
    finally:
        for name in FLOW_NAMES:
            found = api.get(f"/deployments/name/{FLOW_NAMES[name]}/{name}")
            if found.status_code != 200:
                continue
            deployment_id = found.json()["id"]
            for automation in _automations(api, deployment_id):
                api.delete(f"/automations/{automation['id']}")
            for run in _flow_runs(api, deployment_id):
                api.delete(f"/flow_runs/{run['id']}")
            api.delete(f"/deployments/{deployment_id}")
        api.close()


def _apply(prefect_server: Any, **options: Any) -> None:
    with temporary_settings(updates={PREFECT_API_URL: prefect_server.api_url}):
        for deployment in serve.build_deployments("alisim", **options):
            deployment.apply()


def test_served_deployments_are_created(prefect_server, clean_deployments) -> None:
    api = clean_deployments
    _apply(prefect_server)
    provision = _deployment(api, "provision-and-run")
    assert provision["entrypoint"] == "flows.provision_and_run.provision_and_run"
    assert provision["parameters"]["credentials_block"] == "alisim"
    assert provision["enforce_parameter_schema"] is True
    assert "runbooks" in provision["tags"]
    (schedule,) = provision["schedules"]
    assert schedule["schedule"]["cron"] == "0 3 * * *"
    assert schedule["active"] is False
    run_command = _deployment(api, "run-command")
    assert run_command["entrypoint"] == "flows.run_command.run_command"
    (automation,) = _automations(api, run_command["id"])
    assert automation["enabled"] is False
    assert automation["trigger"]["expect"] == [names.FIRST_HEARTBEAT]
    # The parameters pass the server's schema check when a run is created (nobody runs it
    # here: `runbooks up` is tested running one in test_demo.py).
    # Prefect's own client, which retries the 503 a busy SQLite server sometimes answers.
    with (
        temporary_settings(updates={PREFECT_API_URL: prefect_server.api_url}),
        get_client(sync_client=True) as client,
    ):
        created = client.create_flow_run_from_deployment(provision["id"], parameters={"count": 1})
    assert created.parameters["credentials_block"] == "alisim"
    # The nightly fleet patch: inactive, and its parameters (rate control included) pass the
    # server's check against the flow's schema, as the scheduler's runs would.
    fleet = _deployment(api, "fleet-run")
    (nightly,) = fleet["schedules"]
    assert (nightly["schedule"]["cron"], nightly["active"]) == ("0 2 * * *", False)
    assert nightly["parameters"]["rate_control"]["batch_size"] == "10%"
    with (
        temporary_settings(updates={PREFECT_API_URL: prefect_server.api_url}),
        get_client(sync_client=True) as client,
    ):
        run = client.create_flow_run_from_deployment(fleet["id"], parameters=nightly["parameters"])
        assert run.parameters["rate_control"]["canary"] == 1
        with pytest.raises(Exception, match="batch_size"):
            client.create_flow_run_from_deployment(
                fleet["id"],
                parameters={**nightly["parameters"], "rate_control": {"batch_size": "ten"}},
            )


def test_first_heartbeat_trigger_starts_run_command_with_its_window(
    prefect_server, clean_deployments
) -> None:
    api = clean_deployments
    _apply(prefect_server, enable_triggers=True)
    run_command = _deployment(api, "run-command")
    (automation,) = _automations(api, run_command["id"])
    assert automation["enabled"] is True
    instance_id = f"i-bp1{uuid.uuid4().hex[:17]}"
    source = copy.deepcopy(samples.FIRST_HEARTBEAT)
    source["data"]["vmName"] = instance_id

    posted: dict[str, dict[str, Any]] = {}

    def post_heartbeat() -> None:
        source["id"] = str(uuid.uuid4())
        event = from_cloud_event(source, received=datetime.now(UTC))
        posted[event["id"]] = event
        api.post("/events", json=[event]).raise_for_status()

    post_heartbeat()
    # The automation may be loaded a moment after it was created: a heartbeat it missed is
    # followed by another (a new event id each time) until a run appears.
    runs = wait_until(
        lambda: _flow_runs(api, run_command["id"]) or post_heartbeat(), timeout=30, interval=1
    )
    parameters = runs[0]["parameters"]
    # The run gets the window that starts at the triggering event, not one instance: it
    # reads the window's instances from the event store (tests/test_reactions.py runs it).
    window = parameters["window"]
    trigger = posted[window["trigger_event"]]
    assert datetime.fromisoformat(window["start"]) == datetime.fromisoformat(trigger["occurred"])
    assert window["event"] == names.FIRST_HEARTBEAT and window["seconds"] == 10
    assert "instance_ids" not in parameters
    assert parameters["command"]["name"] == "bootstrap"
    assert parameters["credentials_block"] == "alisim"


# Prefect 3.8.8's `prefect deploy`, after creating each deployment, asks for the pool's
# workers with `{"offset": null, "limit": null}`; the server on FastAPI 0.154 answers 422
# (`int = Body(None)` no longer takes an explicit null), and the command exits 1 before the
# next deployment. Each deployment is deployed on its own, and that one failure is tolerated.
WORKERS_FILTER_422 = "/workers/filter' - Response: {'exception_message': 'Invalid request"


def _prefect_deploy(prefect_server: Any, name: str) -> None:
    env = {
        **os.environ,
        **prefect_server.env(),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    done = subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--name", name],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    output = done.stdout + done.stderr
    assert "successfully created" in output, output[-3000:]
    assert done.returncode == 0 or WORKERS_FILTER_422 in output, output[-3000:]


def test_prefect_deploy_reads_prefect_yaml(prefect_server, clean_deployments) -> None:
    api = clean_deployments
    from prefect.workers.process import ProcessWorker

    pool = api.post(
        "/work_pools/",
        json={
            "name": "runbooks",
            "type": "process",
            "base_job_template": ProcessWorker.get_default_base_job_template(),
        },
    )
    assert pool.status_code in (201, 409), pool.text
    for name in FLOW_NAMES:
        _prefect_deploy(prefect_server, name)
    provision = _deployment(api, "provision-and-run")
    assert provision["entrypoint"] == "flows/provision_and_run.py:provision_and_run"
    assert provision["work_pool_name"] == "runbooks"
    assert provision["parameters"]["credentials_block"] == "alisim"
    assert provision["pull_steps"] == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}
    ]
    (schedule,) = provision["schedules"]
    assert schedule["active"] is False
    assert schedule["parameters"]["command"]["script"].endswith('echo "ok"\n')
    run_command = _deployment(api, "run-command")
    (automation,) = _automations(api, run_command["id"])
    assert automation["enabled"] is False
    (action,) = automation["actions"]
    assert action["parameters"]["window"]["start"] == "{{ event['occurred'] | string }}"
    assert action["parameters"]["window"]["trigger_event"] == "{{ event['id'] | string }}"
    assert "bootstrap of $(hostname)" in action["parameters"]["command"]["script"]
    (automation,) = _automations(api, _deployment(api, "diagnose-stack")["id"])
    (action,) = automation["actions"]
    assert action["parameters"]["stack_id"] == "{{ event.resource['prefect.resource.id'] }}"
    assert action["parameters"]["status"] == "{{ event.resource['acs.ros.stack-status'] }}"


def test_the_readme_runs_the_deployments_with_json_params(prefect_server, clean_deployments):
    """The shell lines the README gives for `runbooks up`, run as written: a script with
    quotes and `$(…)` reaches the run's `command` intact, through the server's schema check."""
    api = clean_deployments
    _apply(prefect_server)
    readme = (ROOT / "README.md").read_text()
    start = readme.index("export PREFECT_API_URL=http://127.0.0.1:4210/api\n")
    lines = readme[start : readme.index("```", start)]
    lines = lines.replace("http://127.0.0.1:4210/api", prefect_server.api_url)
    lines = lines.replace(".venv/bin/prefect", f"{sys.executable} -m prefect")
    done = subprocess.run(
        ["bash", "-ec", lines], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    provision = _flow_runs(api, _deployment(api, "provision-and-run")["id"])
    (run,) = [r for r in provision if r["parameters"].get("count") == 2]
    assert run["parameters"]["command"] == {
        "script": 'echo "hello from $(hostname)"',
        "output_bucket": "runbooks-outputs",
    }
    assert run["parameters"]["credentials_block"] == "alisim"
    (run,) = _flow_runs(api, _deployment(api, "run-command")["id"])
    assert run["parameters"]["command"] == {"script": "uname -a"}
