"""The stack outcome table, one test per row, and the diagnosis of a stack's events (pure
functions: the real-path tests are in test_stack_runbooks.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from alicloud_runbooks.ros_stacks import OUTCOMES, diagnose_events, outcome

ROWS = [
    ("create", "CREATE_COMPLETE", "success"),
    ("create", "CREATE_FAILED", "failure"),
    ("create", "CREATE_ROLLBACK_COMPLETE", "failure"),
    ("create", "CREATE_ROLLBACK_FAILED", "failure"),
    ("update", "UPDATE_COMPLETE", "success"),
    ("update", "UPDATE_FAILED", "failure"),
    ("update", "ROLLBACK_COMPLETE", "failure"),
    ("update", "ROLLBACK_FAILED", "failure"),
    ("delete", "DELETE_COMPLETE", "success"),
    ("delete", "StackNotFound", "success"),
    ("delete", "DELETE_FAILED", "failure"),
]


@pytest.mark.parametrize(("operation", "status", "verdict"), ROWS)
def test_outcome_table_row(operation, status, verdict) -> None:
    assert outcome(operation, status) == verdict


def test_the_table_has_exactly_these_rows() -> None:
    listed = {(op, st) for op, st, _ in ROWS}
    table = {(op, st) for op, row in OUTCOMES.items() for st in row.success | row.failure}
    assert table == listed


@pytest.mark.parametrize(
    ("operation", "status"),
    [
        ("create", "CREATE_IN_PROGRESS"),
        ("create", "CREATE_ROLLBACK_IN_PROGRESS"),
        ("update", "UPDATE_IN_PROGRESS"),
        ("update", "ROLLBACK_IN_PROGRESS"),
        ("delete", "DELETE_IN_PROGRESS"),
        # Another operation's terminal status is not this one's: an update's wait must not
        # take the stack's earlier CREATE_COMPLETE, nor a create's wait a later update's.
        ("update", "CREATE_COMPLETE"),
        ("create", "UPDATE_COMPLETE"),
        ("create", "ROLLBACK_COMPLETE"),
        ("update", "CREATE_ROLLBACK_COMPLETE"),
        ("delete", "CREATE_COMPLETE"),
        ("create", None),
    ],
)
def test_not_final_for_the_operation(operation, status) -> None:
    assert outcome(operation, status) is None


def _event(logical: str, kind: str, status: str, reason: str, at: str) -> dict:
    return {
        "LogicalResourceId": logical,
        "ResourceType": kind,
        "Status": status,
        "StatusReason": reason,
        "CreateTime": at,
        "PhysicalResourceId": f"p-{logical}",
    }


def test_diagnosis_names_the_resources_that_failed_first() -> None:
    events = [
        _event("old", "ALIYUN::ECS::VPC", "CREATE_FAILED", "long ago", "2026-12-01T00:00:00"),
        _event("stk", "ALIYUN::ROS::Stack", "CREATE_IN_PROGRESS", "", "2026-12-02T01:00:00"),
        _event("Vpc", "ALIYUN::ECS::VPC", "CREATE_COMPLETE", "ok", "2026-12-02T01:00:01"),
        _event("Web", "ALIYUN::ECS::Instance", "CREATE_FAILED", "no stock", "2026-12-02T01:00:02"),
        _event("Db", "ALIYUN::RDS::DBInstance", "CREATE_FAILED", "quota", "2026-12-02T01:00:02"),
        _event("Web", "ALIYUN::ECS::Instance", "CREATE_FAILED", "no stock", "2026-12-02T01:00:02"),
        _event("Vpc", "ALIYUN::ECS::VPC", "DELETE_FAILED", "in use", "2026-12-02T01:00:05"),
        _event("stk", "ALIYUN::ROS::Stack", "CREATE_ROLLBACK_FAILED", "x", "2026-12-02T01:00:06"),
    ]
    found = diagnose_events("s-1", events, since=datetime(2026, 12, 2, 1, 0, 0, 500, UTC))
    assert [(f.logical_id, f.reason) for f in found.first] == [
        ("Web", "no stock"),
        ("Db", "quota"),
    ]
    assert [(f.logical_id, f.status) for f in found.later] == [("Vpc", "DELETE_FAILED")]
    assert found.summary() == (
        "Web (ALIYUN::ECS::Instance): no stock; Db (ALIYUN::RDS::DBInstance): quota"
    )


def test_diagnosis_without_failed_resources_gives_the_stack_reason() -> None:
    found = diagnose_events("s-1", [], stack_status="CREATE_FAILED", stack_reason="timed out")
    assert found.first == [] and found.summary() == "timed out"


def test_diagnosis_in_one_second_splits_at_the_stacks_own_reaction() -> None:
    at = "2026-12-02T01:00:00"
    events = [
        _event("stk", "ALIYUN::ROS::Stack", "CREATE_IN_PROGRESS", "", at),
        _event("Sw", "ALIYUN::ECS::VSwitch", "CREATE_FAILED", "no stock", at),
        _event("stk", "ALIYUN::ROS::Stack", "CREATE_ROLLBACK_IN_PROGRESS", "", at),
        _event("Vpc", "ALIYUN::ECS::VPC", "DELETE_FAILED", "stuck", at),
        _event("stk", "ALIYUN::ROS::Stack", "CREATE_ROLLBACK_FAILED", "", at),
    ]
    found = diagnose_events("s-1", events)
    assert [f.logical_id for f in found.first] == ["Sw"]
    assert [f.logical_id for f in found.later] == ["Vpc"]


def test_diagnosis_looks_at_the_latest_operation_only() -> None:
    at = "2026-12-02T01:00:00"
    events = [
        _event("stk", "ALIYUN::ROS::Stack", "UPDATE_IN_PROGRESS", "", at),
        _event("Vpc", "ALIYUN::ECS::VPC", "UPDATE_FAILED", "locked", at),
        _event("stk", "ALIYUN::ROS::Stack", "UPDATE_FAILED", "", at),
        _event("stk", "ALIYUN::ROS::Stack", "DELETE_IN_PROGRESS", "", at),
        _event("Sw", "ALIYUN::ECS::VSwitch", "DELETE_FAILED", "in use", at),
    ]
    assert [f.logical_id for f in diagnose_events("s-1", events).first] == ["Sw"]


def _status_event(stack_id: str, status: str, request_id: str | None = None):  # type: ignore[no-untyped-def]
    from prefect.events.schemas.events import Event

    from alicloud_runbooks.events import names

    return Event(
        occurred=datetime.now(UTC),
        event=names.STACK_STATUS_CHANGE,
        resource={
            "prefect.resource.id": names.stack_resource(stack_id),
            names.STACK_STATUS_LABEL: status,
        },
        payload={"status": status, **({"requestId": request_id} if request_id else {})},
    )


def test_a_stack_wait_takes_only_its_operations_statuses_and_request() -> None:
    from alicloud_runbooks.ros_stacks import stack_wait

    update = stack_wait("s-1", "update", datetime.now(UTC), 300, 3600, request_id="R2")
    # The stack's earlier create (a notification form without a request id, say) is not
    # this update's end; nor is another stack's.
    assert update.key_of(_status_event("s-1", "CREATE_COMPLETE")) is None
    assert update.key_of(_status_event("s-1", "UPDATE_IN_PROGRESS")) is None
    assert update.key_of(_status_event("s-2", "UPDATE_COMPLETE")) is None
    assert update.key_of(_status_event("s-1", "ROLLBACK_COMPLETE")) == "s-1"
    ours = _status_event("s-1", "UPDATE_COMPLETE", "R2")
    earlier = _status_event("s-1", "UPDATE_COMPLETE", "R1")
    assert update.key_of(ours) == "s-1" and update.not_ours(ours) is None
    assert "not this update's" in (update.not_ours(earlier) or "")
