"""Contract 1 on Alibaba's own samples: names, resource ids, labels, related, ids."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import pytest

from alicloud_runbooks.events.mapping import (
    MappingError,
    from_cloud_event,
    from_cloudmonitor,
    prefect_event_id,
)
from tests import samples

NOW = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)


def _labels_are_strings(event: dict) -> None:
    for resource in [event["resource"], *event["related"]]:
        assert all(isinstance(v, str) for v in resource.values())


def test_task_completed() -> None:
    event = from_cloud_event(samples.TASK_COMPLETED, received=NOW)
    assert event["event"] == "acs.ecs.CloudAssistant.TaskCompleted"
    assert event["resource"]["prefect.resource.id"] == "acs.ecs.instance.i-bp114aaaaaaaaaaaaaaa"
    assert event["resource"]["acs.region"] == "cn-hangzhou"
    assert event["resource"]["acs.ecs.invocation-status"] == "Success"
    # The command's name, so a trigger can leave one out (`!collect-diagnostics`); "" when
    # the event names none, since Prefect's negation needs the label to be there.
    assert event["resource"]["acs.ecs.command-name"] == "hello-linux.sh"
    nameless = copy.deepcopy(samples.TASK_COMPLETED)
    del nameless["data"]["commandName"]
    assert from_cloud_event(nameless, received=NOW)["resource"]["acs.ecs.command-name"] == ""
    assert {(r["prefect.resource.id"], r["prefect.resource.role"]) for r in event["related"]} == {
        ("acs.ecs.invocation.t-hz045aaaaaaaaaa", "invocation"),
        ("acs.ecs.command.c-hz045aaaaaaaaaa", "command"),
    }
    assert event["occurred"] == NOW.isoformat()
    assert event["payload"]["exitCode"] == "0"
    assert event["payload"]["acs"]["time"] == "2020-11-19T21:04:41+08:00"
    assert event["payload"]["acs"]["account_id"] == samples.ACCOUNT
    assert event["id"] == prefect_event_id(samples.TASK_COMPLETED["id"])
    _labels_are_strings(event)


def test_first_heartbeat_uses_vm_name() -> None:
    event = from_cloud_event(samples.FIRST_HEARTBEAT, received=NOW)
    assert event["event"] == "acs.ecs.CloudAssistant.FirstHeartbeat"
    assert event["resource"]["prefect.resource.id"] == "acs.ecs.instance.i-bp19aaaaaaaaaaaaaaaa"
    assert event["related"] == []
    _labels_are_strings(event)


def test_output_delivered() -> None:
    event = from_cloud_event(samples.OUTPUT_DELIVERED, received=NOW)
    assert event["event"] == "acs.ecs.CloudAssistant.OutputDelivered"
    assert event["resource"]["acs.ecs.delivery-status"] == "Finished"
    assert event["related"][0]["prefect.resource.id"] == "acs.ecs.invocation.t-hz045aaaaaaaaaa"


def test_output_delivered_type_is_configurable() -> None:
    renamed = {**samples.OUTPUT_DELIVERED, "type": "ecs:CloudAssistant:InvocationDelivered"}
    default = from_cloud_event(renamed, received=NOW)
    assert default["event"] == "acs.ecs.CloudAssistant.InvocationDelivered"
    configured = from_cloud_event(
        renamed, received=NOW, output_delivered_type="ecs:CloudAssistant:InvocationDelivered"
    )
    assert configured["event"] == "acs.ecs.CloudAssistant.OutputDelivered"


def test_instance_state_change_both_formats_agree() -> None:
    via_eb = from_cloud_event(samples.INSTANCE_STATE_CHANGE_EB, received=NOW)
    via_cm = from_cloudmonitor(samples.INSTANCE_STATE_CHANGE_CM, received=NOW)
    for event in (via_eb, via_cm):
        assert event["event"] == "acs.ecs.Instance.StateChange"
        assert event["resource"]["prefect.resource.id"] == "acs.ecs.instance.i-bp1ecr0000005go2go"
        assert event["resource"]["acs.ecs.instance-state"] == "Stopping"
        assert event["resource"]["acs.region"] == "cn-hangzhou"
    assert via_cm["payload"]["acs"]["time"] == "20181226T220114.058+0800"
    assert via_cm["resource"]["acs.account-id"] == "169070000000030"


def test_ros_stack_status_change_capitalised_format() -> None:
    event = from_cloudmonitor(samples.STACK_STATUS_CHANGE_CM, received=NOW)
    assert event["event"] == "acs.ros.Stack.StatusChange"
    assert event["resource"]["prefect.resource.id"] == (
        "acs.ros.stack.a797d0e1-c067-472a-ba86-2f0cdcbb0000"
    )
    assert event["resource"]["acs.ros.stack-status"] == "CREATE_COMPLETE"
    assert event["resource"]["acs.ros.stack-name"] == "diagnostic-dr-7a7c8fdc57e94f790000"
    assert event["resource"]["acs.account-id"] == "175458090349000"
    again = from_cloudmonitor(samples.STACK_STATUS_CHANGE_CM, received=NOW)
    assert again["id"] == event["id"], "a notification without an id still maps to one id"


def test_unknown_type_is_forwarded_not_dropped() -> None:
    raw = {
        **samples.TASK_COMPLETED,
        "id": "x-1",
        "source": "acs.oss",
        "type": "oss:ObjectCreated:PutObject",
        "subject": "acs:oss:cn-hangzhou:123:bucket/my-bucket",
        "data": {"k": 1},
    }
    event = from_cloud_event(raw, received=NOW)
    assert event["event"] == "acs.oss.ObjectCreated.PutObject"
    assert event["resource"]["prefect.resource.id"] == "acs.oss.bucket.my-bucket"
    assert event["payload"]["k"] == 1


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda e: e.pop("id"), "id"),
        (lambda e: e.update(specversion="0.3"), "specversion"),
        (lambda e: e["data"].pop("invokeId"), "invokeId"),
        (lambda e: e["data"].update(exitCode="zero"), "exitCode"),
    ],
)
def test_what_the_mapping_needs_is_strict(mutate, reason: str) -> None:
    raw = samples.fresh(samples.TASK_COMPLETED)
    mutate(raw)
    with pytest.raises(MappingError, match=reason):
        from_cloud_event(raw, received=NOW)


def test_extra_fields_and_string_numbers_are_accepted() -> None:
    raw = samples.fresh(samples.TASK_COMPLETED)
    raw["data"]["somethingNew"] = {"nested": True}
    raw["brandnewattribute"] = "x"
    raw["data"]["exitCode"] = 3
    event = from_cloud_event(raw, received=NOW)
    assert event["payload"]["somethingNew"] == {"nested": True}


def test_each_event_names_its_instance_or_stack_for_the_ui() -> None:
    """`prefect.resource.name`: what Prefect's UI shows as the event's resource."""
    named = {
        "i-bp114aaaaaaaaaaaaaaa": from_cloud_event(samples.TASK_COMPLETED, received=NOW),
        "i-bp19aaaaaaaaaaaaaaaa": from_cloud_event(samples.FIRST_HEARTBEAT, received=NOW),
        "i-bp1ecr0000005go2go": from_cloudmonitor(samples.INSTANCE_STATE_CHANGE_CM, received=NOW),
        "diagnostic-dr-7a7c8fdc57e94f790000": from_cloudmonitor(
            samples.STACK_STATUS_CHANGE_CM, received=NOW
        ),
    }
    for name, event in named.items():
        assert event["resource"]["prefect.resource.name"] == name
    delivered = from_cloud_event(samples.OUTPUT_DELIVERED, received=NOW)
    assert delivered["resource"]["prefect.resource.name"] == delivered["resource"][
        "prefect.resource.id"
    ].removeprefix("acs.ecs.instance.")
