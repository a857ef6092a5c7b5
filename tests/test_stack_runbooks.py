"""The stack runbooks through the real path: the ROS SDK → alisim, alisim's events → the
relay → `prefect server start`, the flows on that server. Failures come from alisim's ROS
faults (`/_alisim/faults`), lost events from its delivery faults."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from alicloud_runbooks.errors import AlibabaCloudError
from alicloud_runbooks.events import names
from flows.delete_stack import delete_stack
from flows.deploy_stack import deploy_stack
from flows.stack_steps import StackFailed, StackReport
from tests.helpers import wait_until
from tests.runbook_stack import faults, run, run_state

NETWORK = "templates/network.yaml"


def ros_calls(stack: Any, action: str) -> int:
    return stack.api_calls().get("ROS", {}).get(action, 0)


def deploy(cloud: Any, name: str = "net", **params: Any) -> StackReport:
    params.setdefault("template", NETWORK)
    return run(deploy_stack, cloud, name=name, on_failure="continue", **params)


def failed_first(report: StackReport) -> list[tuple[str, str]]:
    assert report.diagnosis is not None
    return [(f.logical_id, f.reason) for f in report.diagnosis.first]


def test_deploy_stack_creates_and_reports_by_event(cloud) -> None:
    report = run(deploy_stack, cloud, name="net", template=NETWORK)
    assert (report.operation, report.outcome.status) == ("create", "CREATE_COMPLETE")
    assert report.outcome.verdict == "success"
    assert report.outcome.settled_by == "event"
    assert report.outcome.get_stack_calls == 0
    assert set(report.details.outputs) == {"VpcId", "VSwitchId"}
    assert {r["LogicalResourceId"] for r in report.details.resources} == {"Vpc", "VSwitch"}
    assert report.diagnosis is None


@pytest.mark.parametrize(
    ("disable_rollback", "plan", "status", "first"),
    [
        (True, [{"logical_id": "VSwitch", "reason": "no stock"}], "CREATE_FAILED", "VSwitch"),
        (
            False,
            [{"logical_id": "VSwitch", "reason": "no stock"}],
            "CREATE_ROLLBACK_COMPLETE",
            "VSwitch",
        ),
        (
            False,
            [
                {"logical_id": "VSwitch", "reason": "no stock"},
                {"logical_id": "Vpc", "operation": "delete", "reason": "stuck"},
            ],
            "CREATE_ROLLBACK_FAILED",
            "VSwitch",
        ),
    ],
)
def test_create_failures_end_the_wait_as_failures(
    cloud, disable_rollback, plan, status, first
) -> None:
    faults(cloud, ros=plan)
    report = deploy(cloud, disable_rollback=disable_rollback)
    assert (report.outcome.status, report.outcome.verdict) == (status, "failure")
    assert report.outcome.settled_by == "event"
    assert failed_first(report) == [(first, "InjectedFault: no stock")]
    if status == "CREATE_ROLLBACK_FAILED":
        assert [(f.logical_id, f.status) for f in report.diagnosis.later] == [
            ("Vpc", "DELETE_FAILED")
        ]


@pytest.mark.parametrize(
    ("disable_rollback", "count", "status"),
    [
        (False, None, "UPDATE_COMPLETE"),
        (True, 1, "UPDATE_FAILED"),
        (False, 1, "ROLLBACK_COMPLETE"),
        (False, 2, "ROLLBACK_FAILED"),
    ],
)
def test_update_outcomes(cloud, disable_rollback, count, status) -> None:
    created = deploy(cloud, disable_rollback=disable_rollback)
    assert created.outcome.status == "CREATE_COMPLETE"
    if count:
        faults(
            cloud,
            ros=[{"logical_id": "Vpc", "operation": "update", "reason": "locked", "count": count}],
        )
    report = deploy(cloud, parameters={"Name": "renamed"})
    assert report.operation == "update"
    assert report.stack_id == created.stack_id
    assert report.outcome.status == status
    assert report.outcome.settled_by == "event"
    assert report.outcome.succeeded is (status == "UPDATE_COMPLETE")
    if count:
        assert failed_first(report) == [("Vpc", "InjectedFault: locked")]


def test_update_with_nothing_to_change_is_no_operation(cloud) -> None:
    created = deploy(cloud)
    again = deploy(cloud)
    assert again.operation == "none"
    assert (again.stack_id, again.outcome.status) == (created.stack_id, "CREATE_COMPLETE")
    assert again.outcome.succeeded


def test_delete_complete_failed_and_not_found(cloud) -> None:
    created = deploy(cloud)
    faults(
        cloud, ros=[{"logical_id": "Vpc", "operation": "delete", "reason": "in use", "count": 1}]
    )
    state = run_state(delete_stack, cloud, stack_id=created.stack_id)
    assert state.is_failed()
    with pytest.raises(StackFailed, match=r"DELETE_FAILED.*Vpc .*in use"):
        state.result()
    done = run(delete_stack, cloud, stack_id=created.stack_id)
    assert (done.status, done.verdict, done.settled_by) == ("DELETE_COMPLETE", "success", "event")
    gone = run(delete_stack, cloud, stack_id=created.stack_id)
    assert (gone.status, gone.verdict) == ("StackNotFound", "success")


def test_on_failure_fail_and_delete(cloud) -> None:
    faults(cloud, ros=[{"logical_id": "VSwitch", "reason": "no stock"}])
    state = run_state(deploy_stack, cloud, name="net", template=NETWORK)
    with pytest.raises(StackFailed, match=r"CREATE_ROLLBACK_COMPLETE.*Failed first: VSwitch"):
        state.result()
    faults(cloud, ros=[{"logical_id": "VSwitch", "reason": "no stock"}])
    state = run_state(deploy_stack, cloud, name="other", template=NETWORK, on_failure="delete")
    with pytest.raises(StackFailed, match="no stock"):
        state.result()
    assert ros_calls(cloud, "DeleteStack") == 1
    names = {s["StackName"] for s in _stacks(cloud)}
    assert names == {"net"}


def _stacks(cloud: Any) -> list[dict[str, Any]]:
    from alibabacloud_ros20190910 import models as ros

    client = cloud.credentials().ros_client()
    body = client.list_stacks(ros.ListStacksRequest(region_id="cn-hangzhou", page_size=50)).body
    return [s.to_map() for s in body.stacks or []]


def test_a_lost_status_event_is_settled_by_one_get_stack(cloud) -> None:
    faults(cloud, delivery={"drop_rate": 1.0, "event_types": ["ros:Stack:StatusChange"]})
    before = ros_calls(cloud, "GetStack")
    report = deploy(cloud, first_check=1.0)
    assert report.outcome.status == "CREATE_COMPLETE"
    assert report.outcome.settled_by == "reconciliation"
    assert report.outcome.get_stack_calls == 1
    dropped = httpx.get(f"{cloud.sim_url}/_alisim/deliveries", params={"outcome": "dropped"})
    assert dropped.json()["deliveries"]
    # One for the wait, one for the outputs.
    assert ros_calls(cloud, "GetStack") - before == 2


def test_bad_input_is_one_clear_error(cloud) -> None:
    with pytest.raises(ValueError, match=r"'templates/nope\.yaml' does not exist"):
        run(deploy_stack, cloud, name="net", template="templates/nope.yaml")
    with pytest.raises(ValueError, match="exactly one of path, body or url"):
        run(deploy_stack, cloud, name="net")
    with pytest.raises(AlibabaCloudError, match="CreateStack net failed: "):
        run(deploy_stack, cloud, name="net", template_body="Resources: {Bad: {Type: Nope}}")
    wrong = cloud.credentials().model_copy(update={"access_key_id": "LTAInobody"})
    with pytest.raises(AlibabaCloudError, match=r"InvalidAccessKeyId\.NotFound") as caught:
        import asyncio

        asyncio.run(deploy_stack(name="net", template=NETWORK, credentials=wrong))
    assert wrong.access_key_secret.get_secret_value() not in str(caught.value)


def test_a_stack_name_in_use_by_another_run(cloud) -> None:
    faults(cloud, ros=[{"logical_id": "VSwitch", "hang": True}])
    from alibabacloud_ros20190910 import models as ros

    client = cloud.credentials().ros_client()
    body = (cloud_root() / NETWORK).read_text()
    client.create_stack(
        ros.CreateStackRequest(region_id="cn-hangzhou", stack_name="net", template_body=body)
    )
    with pytest.raises(ValueError, match=r"in use by stack .*being created by another run"):
        run(deploy_stack, cloud, name="net", template=NETWORK)


def cloud_root():  # type: ignore[no-untyped-def]
    from tasks.stacks import PROJECT_ROOT

    return PROJECT_ROOT


def test_a_retried_run_reuses_the_stack_its_first_attempt_created(cloud) -> None:
    from prefect import flow

    from flows.stack_steps import deploy, owner_of
    from tasks.stacks import StackSpec, StackTemplate, create_or_update_stack

    attempts: list[str] = []

    @flow(retries=1, retry_delay_seconds=0)
    async def dies_after_create_stack(credentials) -> StackReport:  # type: ignore[no-untyped-def]
        spec = StackSpec(name="net", template=StackTemplate(path=NETWORK))
        if not attempts:
            attempts.append(create_or_update_stack(credentials, spec).stack_id)
            raise RuntimeError("the first attempt dies after CreateStack")
        report = await deploy(credentials, spec, owner_of(credentials), 300.0)
        attempts.append(report.stack_id)
        return report

    report = run(dies_after_create_stack, cloud)
    assert len(attempts) == 2 and attempts[0] == attempts[1] == report.stack_id
    assert (report.operation, report.reused) == ("create", True)
    assert (report.outcome.status, report.outcome.settled_by) == ("CREATE_COMPLETE", "event")
    assert [s["StackId"] for s in _stacks(cloud)] == [report.stack_id]
    assert ros_calls(cloud, "CreateStack") == 2


def test_stack_and_run_end_to_end(cloud) -> None:
    from flows.stack_and_run import stack_and_run
    from tests.runbook_stack import BUCKET

    result = run(
        stack_and_run,
        cloud,
        name="fleet",
        parameters={"Amount": "3"},
        script='echo "hello from $(hostname)"',
        output_bucket=BUCKET,
    )
    assert result.stack.outcome.status == "CREATE_COMPLETE"
    ids = result.stack.details.outputs["InstanceIds"]
    assert len(ids) == 3
    assert sorted(i.instance_id for i in result.run.instances) == sorted(ids)
    assert {(i.status, i.exit_code) for i in result.run.instances} == {("Success", 0)}
    assert all(i.oss_uri for i in result.run.instances)
    assert result.deleted is not None and result.deleted.status == "DELETE_COMPLETE"
    assert _stacks(cloud) == []


@pytest.fixture
def diagnose_deployment(cloud) -> Iterator[tuple[httpx.Client, str]]:
    """The served diagnose-stack deployment with its trigger on, removed afterwards (the
    session's server is shared)."""
    from deployments import serve

    (deployment,) = [d for d in serve.build_deployments("alisim") if d.name == "diagnose-stack"]
    deployment_id = str(deployment.apply())
    api = httpx.Client(base_url=cloud.api_url, timeout=30)
    try:
        yield api, deployment_id
    finally:
        related = api.get(f"/automations/related-to/prefect.deployment.{deployment_id}")
        for automation in related.json():
            api.delete(f"/automations/{automation['id']}")
        for flow_run in _runs_of(api, deployment_id):
            api.delete(f"/flow_runs/{flow_run['id']}")
        api.delete(f"/deployments/{deployment_id}")
        api.close()


def _runs_of(api: httpx.Client, deployment_id: str) -> list[dict[str, Any]]:
    response = api.post(
        "/flow_runs/filter", json={"deployments": {"id": {"any_": [deployment_id]}}}
    )
    response.raise_for_status()
    return response.json()


def _diagnosed_events(stack_id: str) -> list[Any]:
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter

    async def read() -> list[Any]:
        async with get_client() as client:
            page = await client.read_events(
                filter=EventFilter(
                    event=EventNameFilter(name=["runbooks.stack.diagnosed"]),
                    related=EventRelatedFilter(id=[names.stack_resource(stack_id)]),
                ),
                limit=50,
            )
            return page.events

    return asyncio.run(read())


def test_diagnose_stack_is_fired_by_a_real_failure_event(cloud, diagnose_deployment) -> None:
    from flows.diagnose_stack import diagnose_stack

    api, deployment_id = diagnose_deployment
    failed: list[str] = []

    def fail_a_stack() -> None:
        # The automation may be loaded a moment after it was created: a failure it missed is
        # followed by another stack's until a run appears.
        faults(cloud, ros=[{"logical_id": "VSwitch", "reason": "no stock"}])
        failed.append(deploy(cloud, name=f"bad{len(failed)}").stack_id)

    fail_a_stack()
    runs = wait_until(
        lambda: _runs_of(api, deployment_id) or fail_a_stack(), timeout=60, interval=2
    )
    parameters = runs[0]["parameters"]
    stack_id = parameters["stack_id"].removeprefix("acs.ros.stack.")
    assert stack_id in failed
    assert parameters["stack_id"] == names.stack_resource(stack_id)
    assert parameters["status"] == "CREATE_ROLLBACK_COMPLETE"
    assert parameters["credentials_block"] == "alisim"
    found = run(diagnose_stack, cloud, stack_id=parameters["stack_id"], status=parameters["status"])
    assert (found.stack_id, found.stack_status) == (stack_id, "CREATE_ROLLBACK_COMPLETE")
    assert [(f.logical_id, f.reason) for f in found.first] == [
        ("VSwitch", "InjectedFault: no stock")
    ]
    (event,) = wait_until(lambda: _diagnosed_events(stack_id), timeout=20, interval=0.5)
    assert event.payload["failed_first"][0]["logical_id"] == "VSwitch"
    assert event.payload["status"] == "CREATE_ROLLBACK_COMPLETE"
    stack_role = [r for r in event.related if r.id == names.stack_resource(stack_id)]
    assert stack_role[0].role == "stack"


def test_a_stack_that_never_ends_is_a_timeout_with_its_last_status(cloud) -> None:
    import asyncio
    from datetime import UTC, datetime

    from alibabacloud_ros20190910 import models as ros

    from alicloud_runbooks import ros_stacks

    faults(cloud, ros=[{"logical_id": "VSwitch", "hang": True}])
    credentials = cloud.credentials()
    client = credentials.ros_client()
    body = (cloud_root() / NETWORK).read_text()
    started = datetime.now(UTC)
    stack_id = client.create_stack(
        ros.CreateStackRequest(region_id="cn-hangzhou", stack_name="slow", template_body=body)
    ).body.stack_id
    # TimeoutInMinutes 0 and a 3 s grace: the wait's limit is 3 s after CreateStack.
    outcome, result = asyncio.run(
        ros_stacks.wait_for_stack(
            client,
            "cn-hangzhou",
            stack_id,
            "create",
            started,
            0,
            first_check=1.0,
            recheck_every=0.5,
            grace=3.0,
        )
    )
    assert outcome.verdict == "timeout"
    assert outcome.status == "CREATE_IN_PROGRESS"
    assert outcome.reason == "no terminal status within 0 min; last seen CREATE_IN_PROGRESS"
    assert outcome.get_stack_calls >= 2
    assert result.unsettled == [stack_id]


def test_a_retried_run_reuses_its_update_in_progress(cloud) -> None:
    from prefect import flow

    from flows.stack_steps import deploy as deploy_steps
    from flows.stack_steps import owner_of
    from tasks.stacks import StackSpec, StackTemplate, create_or_update_stack

    created = deploy(cloud)
    faults(cloud, ros=[{"logical_id": "Vpc", "operation": "update", "delay_seconds": 2}])
    attempts: list[str] = []

    @flow(retries=1, retry_delay_seconds=0)
    async def dies_after_update_stack(credentials) -> StackReport:  # type: ignore[no-untyped-def]
        spec = StackSpec(
            name="net", template=StackTemplate(path=NETWORK), parameters={"Name": "renamed"}
        )
        if not attempts:
            attempts.append(create_or_update_stack(credentials, spec).operation)
            raise RuntimeError("the first attempt dies after UpdateStack")
        report = await deploy_steps(credentials, spec, owner_of(credentials), 300.0)
        attempts.append(report.operation)
        return report

    report = run(dies_after_update_stack, cloud)
    assert attempts == ["update", "update"]
    assert (report.stack_id, report.reused) == (created.stack_id, True)
    assert (report.outcome.status, report.outcome.settled_by) == ("UPDATE_COMPLETE", "event")
    assert ros_calls(cloud, "UpdateStack") == 2
    statuses = [e.status for e in _stack_events(cloud, created.stack_id)]
    assert statuses.count("UPDATE_IN_PROGRESS") == 1


def _stack_events(cloud: Any, stack_id: str) -> list[Any]:
    from alibabacloud_ros20190910 import models as ros

    client = cloud.credentials().ros_client()
    request = ros.ListStackEventsRequest(
        region_id="cn-hangzhou",
        stack_id=stack_id,
        resource_type=["ALIYUN::ROS::Stack"],
        page_size=50,
    )
    return client.list_stack_events(request).body.events
