"""The stack runbooks through the real path: the ROS SDK → alisim, alisim's events → the
relay → `prefect server start`, the flows on that server. Failures come from alisim's ROS
faults (`/_alisim/faults`), lost events from its delivery faults."""

from __future__ import annotations

from flows.deploy_stack import deploy_stack
from tests.runbook_stack import run


def test_deploy_stack_creates_and_reports_by_event(cloud) -> None:
    report = run(deploy_stack, cloud, name="net", template="templates/network.yaml")
    assert report.outcome.status == "CREATE_COMPLETE"
    assert report.outcome.settled_by == "event"
    assert report.outcome.get_stack_calls == 0
    assert set(report.details.outputs) == {"VpcId", "VSwitchId"}
