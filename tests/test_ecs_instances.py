"""ECS instances through the official SDK: RunInstances, Describe, lifecycle, events."""

from __future__ import annotations

import json
from typing import Any

import pytest
from alibabacloud_ecs20140526 import models as ecs_models
from alibabacloud_ecs20140526.client import Client as EcsClient
from alibabacloud_tea_openapi import exceptions as sdk_errors

from alisim.server import AlisimServer
from tests.helpers import events, patch_settings, wait_until

REGION = "cn-hangzhou"
LINUX_IMAGE = "aliyun_3_x64_20G_alibase_20240819.vhd"
WINDOWS_IMAGE = "win2022_21H2_x64_dtc_en-us_40G_alibase_20240816.vhd"
INSTANCE_TYPE = "ecs.g7.large"


# ---------------------------------------------------------------- helpers
def run_instances(client: EcsClient, amount: int = 1, **fields: Any) -> list[str]:
    fields.setdefault("image_id", LINUX_IMAGE)
    fields.setdefault("instance_type", INSTANCE_TYPE)
    request = ecs_models.RunInstancesRequest(region_id=REGION, amount=amount, **fields)
    body = client.run_instances(request).body
    return list(body.instance_id_sets.instance_id_set)


def describe(client: EcsClient, ids: list[str] | None = None, **fields: Any) -> Any:
    if ids is not None:
        fields["instance_ids"] = json.dumps(ids)
    request = ecs_models.DescribeInstancesRequest(region_id=REGION, **fields)
    return client.describe_instances(request).body


def statuses(client: EcsClient, ids: list[str]) -> dict[str, str]:
    body = describe(client, ids, page_size=100)
    return {i.instance_id: i.status for i in body.instances.instance}


def wait_status(client: EcsClient, ids: list[str], status: str, timeout: float = 10.0) -> None:
    wait_until(lambda: set(statuses(client, ids).values()) == {status}, timeout)


def state_sequence(sim: AlisimServer, instance_id: str) -> list[str]:
    return [
        e["data"]["state"]
        for e in events(sim, "ecs:Instance:StateChange", instance_id)
        if e["data"]["resourceId"] == instance_id
    ]


# ---------------------------------------------------------------- RunInstances
def test_run_instances_creates_named_tagged_instances(ecs: EcsClient) -> None:
    tags = [
        ecs_models.RunInstancesRequestTag(key="team", value="ops"),
        ecs_models.RunInstancesRequestTag(key="env", value="test run"),
    ]
    ids = run_instances(ecs, amount=3, instance_name="web", tag=tags)
    assert len(ids) == len(set(ids)) == 3
    assert all(i.startswith("i-") for i in ids)

    wait_status(ecs, ids, "Running")
    body = describe(ecs, ids)
    assert body.total_count == 3
    by_id = {i.instance_id: i for i in body.instances.instance}
    assert set(by_id) == set(ids)
    for instance in by_id.values():
        assert instance.instance_name == "web"
        assert instance.instance_type == INSTANCE_TYPE
        assert instance.image_id == LINUX_IMAGE
        assert instance.ostype == "linux"
        assert instance.region_id == REGION
        assert {(t.tag_key, t.tag_value) for t in instance.tags.tag} == {
            ("team", "ops"),
            ("env", "test run"),
        }


def test_windows_image_gives_windows_instance(ecs: EcsClient) -> None:
    [linux] = run_instances(ecs)
    [windows] = run_instances(ecs, image_id=WINDOWS_IMAGE)
    body = describe(ecs, [linux, windows])
    os_types = {i.instance_id: i.ostype for i in body.instances.instance}
    assert os_types == {linux: "linux", windows: "windows"}


@pytest.mark.parametrize("instance_type", ["ecs.nope", "m1.small", "ECS.G7.LARGE"])
def test_run_instances_rejects_unknown_instance_type(ecs: EcsClient, instance_type: str) -> None:
    with pytest.raises(sdk_errors.ClientException) as info:
        run_instances(ecs, instance_type=instance_type)
    assert info.value.code == "InvalidInstanceType.ValueNotSupported"
    assert describe(ecs).total_count == 0


def test_run_instances_missing_image_is_missing_parameter(ecs: EcsClient) -> None:
    with pytest.raises(sdk_errors.ClientException) as info:
        ecs.run_instances(
            ecs_models.RunInstancesRequest(region_id=REGION, instance_type=INSTANCE_TYPE)
        )
    assert info.value.code == "MissingParameter"
    assert "ImageId" in info.value.message


def test_run_instances_client_token_is_idempotent(ecs: EcsClient) -> None:
    token = "run-instances-token-0001"
    first = run_instances(ecs, amount=2, client_token=token, instance_name="idem")
    again = run_instances(ecs, amount=2, client_token=token, instance_name="idem")
    assert again == first
    assert describe(ecs).total_count == 2

    with pytest.raises(sdk_errors.ClientException) as info:
        run_instances(ecs, amount=3, client_token=token, instance_name="idem")
    assert info.value.code == "IdempotentParameterMismatch"
    assert describe(ecs).total_count == 2

    # A new token is a new request.
    other = run_instances(ecs, amount=2, client_token="run-instances-token-0002")
    assert not set(other) & set(first)
    assert describe(ecs).total_count == 4


def test_run_instances_dry_run_creates_nothing(ecs: EcsClient) -> None:
    with pytest.raises(sdk_errors.ClientException) as info:
        run_instances(ecs, dry_run=True)
    assert info.value.code == "DryRunOperation"
    assert describe(ecs).total_count == 0


# ---------------------------------------------------------------- DescribeInstances
def test_describe_instances_filters(ecs: EcsClient) -> None:
    blue = run_instances(
        ecs, amount=2, tag=[ecs_models.RunInstancesRequestTag(key="color", value="blue")]
    )
    red = run_instances(
        ecs, amount=3, tag=[ecs_models.RunInstancesRequestTag(key="color", value="red")]
    )
    wait_status(ecs, blue + red, "Running")

    # InstanceIds as the SDK sends it: a JSON array string; unknown ids are skipped.
    body = describe(ecs, [blue[0], red[0], "i-bp1doesnotexist0000"])
    assert {i.instance_id for i in body.instances.instance} == {blue[0], red[0]}

    body = describe(
        ecs, tag=[ecs_models.DescribeInstancesRequestTag(key="color", value="red")], page_size=50
    )
    assert {i.instance_id for i in body.instances.instance} == set(red)
    body = describe(ecs, tag=[ecs_models.DescribeInstancesRequestTag(key="color")], page_size=50)
    assert {i.instance_id for i in body.instances.instance} == set(blue + red)

    ecs.stop_instances(ecs_models.StopInstancesRequest(region_id=REGION, instance_id=red[:2]))
    wait_status(ecs, red[:2], "Stopped")
    body = describe(ecs, status="Stopped", page_size=50)
    assert {i.instance_id for i in body.instances.instance} == set(red[:2])
    body = describe(ecs, status="Running", page_size=50)
    assert {i.instance_id for i in body.instances.instance} == {*blue, red[2]}


def test_describe_instances_page_number_paging(ecs: EcsClient) -> None:
    ids = run_instances(ecs, amount=25)
    seen: list[str] = []
    for page_number in (1, 2, 3):
        body = describe(ecs, page_number=page_number, page_size=10)
        assert body.total_count == 25
        assert body.page_number == page_number
        assert body.page_size == 10
        seen += [i.instance_id for i in body.instances.instance]
    assert len(seen) == 25
    assert set(seen) == set(ids)
    assert describe(ecs, page_number=4, page_size=10).instances.instance == []


def test_describe_instances_next_token_paging(ecs: EcsClient) -> None:
    ids = run_instances(ecs, amount=25)
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        body = describe(ecs, max_results=10, next_token=token)
        pages += 1
        seen += [i.instance_id for i in body.instances.instance]
        token = body.next_token
        if not token:
            break
        assert pages < 10, "NextToken paging does not end"
    assert pages == 3
    assert len(seen) == 25
    assert set(seen) == set(ids)


def test_describe_instances_bad_next_token(ecs: EcsClient) -> None:
    run_instances(ecs, amount=2)
    with pytest.raises(sdk_errors.ClientException) as info:
        describe(ecs, max_results=10, next_token="not-a-token!")
    assert info.value.code == "InvalidNextToken.Malformed"


def test_describe_instances_other_region(ecs: EcsClient) -> None:
    with pytest.raises(sdk_errors.ClientException) as info:
        ecs.describe_instances(ecs_models.DescribeInstancesRequest(region_id="cn-beijing"))
    assert info.value.code == "InvalidRegionId.NotFound"


# ---------------------------------------------------------------- lifecycle
def test_stop_start_reboot_delete(ecs: EcsClient, sim: AlisimServer) -> None:
    [instance] = run_instances(ecs)
    wait_status(ecs, [instance], "Running")

    ecs.stop_instances(ecs_models.StopInstancesRequest(region_id=REGION, instance_id=[instance]))
    wait_status(ecs, [instance], "Stopped")

    ecs.start_instances(ecs_models.StartInstancesRequest(region_id=REGION, instance_id=[instance]))
    wait_status(ecs, [instance], "Running")

    before = len(state_sequence(sim, instance))
    ecs.reboot_instances(
        ecs_models.RebootInstancesRequest(region_id=REGION, instance_id=[instance])
    )
    wait_until(
        lambda: state_sequence(sim, instance)[before:] == ["Stopping", "Starting", "Running"]
    )
    wait_status(ecs, [instance], "Running")

    # A running instance needs Force to be released.
    with pytest.raises(sdk_errors.ClientException) as info:
        ecs.delete_instances(
            ecs_models.DeleteInstancesRequest(region_id=REGION, instance_id=[instance])
        )
    assert info.value.code == "IncorrectInstanceStatus"
    assert statuses(ecs, [instance]) == {instance: "Running"}

    ecs.delete_instances(
        ecs_models.DeleteInstancesRequest(region_id=REGION, instance_id=[instance], force=True)
    )
    assert describe(ecs, [instance]).total_count == 0
    assert state_sequence(sim, instance)[-1] == "Deleted"


def test_delete_stopped_instance_without_force(ecs: EcsClient) -> None:
    ids = run_instances(ecs, amount=2)
    wait_status(ecs, ids, "Running")
    ecs.stop_instances(ecs_models.StopInstancesRequest(region_id=REGION, instance_id=[ids[0]]))
    wait_status(ecs, [ids[0]], "Stopped")
    ecs.delete_instances(ecs_models.DeleteInstancesRequest(region_id=REGION, instance_id=[ids[0]]))
    assert [i.instance_id for i in describe(ecs).instances.instance] == [ids[1]]


def test_start_of_running_instance_is_incorrect_status(ecs: EcsClient) -> None:
    [instance] = run_instances(ecs)
    wait_status(ecs, [instance], "Running")
    with pytest.raises(sdk_errors.ClientException) as info:
        ecs.start_instances(
            ecs_models.StartInstancesRequest(region_id=REGION, instance_id=[instance])
        )
    assert info.value.code == "IncorrectInstanceStatus"


@pytest.mark.parametrize("operation", ["stop", "start", "reboot", "delete"])
def test_unknown_instance_id_is_not_found(ecs: EcsClient, operation: str) -> None:
    missing = ["i-bp1doesnotexist0000"]
    calls = {
        "stop": lambda: ecs.stop_instances(
            ecs_models.StopInstancesRequest(region_id=REGION, instance_id=missing)
        ),
        "start": lambda: ecs.start_instances(
            ecs_models.StartInstancesRequest(region_id=REGION, instance_id=missing)
        ),
        "reboot": lambda: ecs.reboot_instances(
            ecs_models.RebootInstancesRequest(region_id=REGION, instance_id=missing)
        ),
        "delete": lambda: ecs.delete_instances(
            ecs_models.DeleteInstancesRequest(region_id=REGION, instance_id=missing, force=True)
        ),
    }
    with pytest.raises(sdk_errors.ClientException) as info:
        calls[operation]()
    assert info.value.code == "InvalidInstanceId.NotFound"
    assert info.value.status_code == 404


def test_batch_with_one_unknown_id_changes_nothing(ecs: EcsClient) -> None:
    [instance] = run_instances(ecs)
    wait_status(ecs, [instance], "Running")
    with pytest.raises(sdk_errors.ClientException) as info:
        ecs.stop_instances(
            ecs_models.StopInstancesRequest(
                region_id=REGION, instance_id=[instance, "i-bp1doesnotexist0000"]
            )
        )
    assert info.value.code == "InvalidInstanceId.NotFound"
    assert statuses(ecs, [instance]) == {instance: "Running"}


# ---------------------------------------------------------------- events
def test_state_change_events_for_each_transition(client: EcsClient, sim: AlisimServer) -> None:
    [instance] = run_instances(client)
    wait_until(lambda: state_sequence(sim, instance) == ["Pending", "Starting", "Running"])
    client.stop_instances(ecs_models.StopInstancesRequest(region_id=REGION, instance_id=[instance]))
    wait_until(lambda: state_sequence(sim, instance)[3:] == ["Stopping", "Stopped"])
    client.start_instances(
        ecs_models.StartInstancesRequest(region_id=REGION, instance_id=[instance])
    )
    wait_until(lambda: state_sequence(sim, instance)[5:] == ["Starting", "Running"])

    [event] = [
        e
        for e in events(sim, "ecs:Instance:StateChange", instance)
        if e["data"]["state"] == "Stopped"
    ]
    assert event["specversion"] == "1.0"
    assert event["source"] == "acs.ecs"
    assert event["aliyunregionid"] == REGION
    assert event["subject"].endswith(f"instance/{instance}")
    assert event["data"] == {
        "resourceId": instance,
        "resourceType": "ALIYUN::ECS::Instance",
        "state": "Stopped",
    }
    all_ids = [e["id"] for e in events(sim, "ecs:Instance:StateChange")]
    assert len(all_ids) == len(set(all_ids))


def test_first_heartbeat_after_boot(client: EcsClient, sim: AlisimServer) -> None:
    patch_settings(sim, boot_time_linux={"min_seconds": 0.5, "max_seconds": 0.5})
    [instance] = run_instances(client)
    wait_status(client, [instance], "Running")
    # Running is not yet booted: the agent is not up and no heartbeat was sent.
    assert assistant_status(client, instance) == "false"
    assert events(sim, "ecs:CloudAssistant:FirstHeartbeat", instance) == []

    [event] = wait_until(lambda: events(sim, "ecs:CloudAssistant:FirstHeartbeat", instance))
    assert assistant_status(client, instance) == "true"
    data = event["data"]
    assert data["vmName"] == instance
    assert data["region"] == REGION
    assert data["azone"].startswith(REGION)
    assert data["agentVersion"] == "2.2.4.1100"
    assert isinstance(data["uptime"], int)
    assert data["uptime"] >= 450
    assert data["bizEventId"]

    # A reboot restarts the agent: one more first heartbeat.
    client.reboot_instances(
        ecs_models.RebootInstancesRequest(region_id=REGION, instance_id=[instance])
    )
    wait_until(lambda: len(events(sim, "ecs:CloudAssistant:FirstHeartbeat", instance)) == 2)


def test_too_old_agent_sends_no_first_heartbeat(client: EcsClient, sim: AlisimServer) -> None:
    patch_settings(sim, agent_versions={"linux": "1.0.2.500"})
    [old] = run_instances(client)
    patch_settings(sim, agent_versions={"linux": "2.2.4.1100"})
    [new] = run_instances(client)

    wait_until(lambda: events(sim, "ecs:CloudAssistant:FirstHeartbeat", new))
    wait_until(lambda: assistant_status(client, old) == "true")
    status = client.describe_cloud_assistant_status(
        ecs_models.DescribeCloudAssistantStatusRequest(region_id=REGION, instance_id=[old])
    ).body.instance_cloud_assistant_status_set.instance_cloud_assistant_status[0]
    assert status.cloud_assistant_version == "1.0.2.500"
    assert events(sim, "ecs:CloudAssistant:FirstHeartbeat", old) == []


def assistant_status(client: EcsClient, instance_id: str) -> str:
    body = client.describe_cloud_assistant_status(
        ecs_models.DescribeCloudAssistantStatusRequest(region_id=REGION, instance_id=[instance_id])
    ).body
    [status] = body.instance_cloud_assistant_status_set.instance_cloud_assistant_status
    return status.cloud_assistant_status


def test_describe_cloud_assistant_status(ecs: EcsClient, sim: AlisimServer) -> None:
    linux = run_instances(ecs, amount=2)
    [windows] = run_instances(ecs, image_id=WINDOWS_IMAGE)
    wait_until(lambda: len(events(sim, "ecs:CloudAssistant:FirstHeartbeat")) == 3)
    body = ecs.describe_cloud_assistant_status(
        ecs_models.DescribeCloudAssistantStatusRequest(
            region_id=REGION, instance_id=[*linux, windows]
        )
    ).body
    rows = {
        s.instance_id: s
        for s in body.instance_cloud_assistant_status_set.instance_cloud_assistant_status
    }
    assert set(rows) == {*linux, windows}
    assert {s.cloud_assistant_status for s in rows.values()} == {"true"}
    assert rows[windows].ostype == "Windows"
    assert rows[linux[0]].ostype == "Linux"
    assert rows[windows].cloud_assistant_version == "2.1.4.1100"
    assert all(s.last_heartbeat_time for s in rows.values())

    body = ecs.describe_cloud_assistant_status(
        ecs_models.DescribeCloudAssistantStatusRequest(region_id=REGION, ostype="Windows")
    ).body
    only = body.instance_cloud_assistant_status_set.instance_cloud_assistant_status
    assert [s.instance_id for s in only] == [windows]

    # A stopped instance's agent is not online.
    ecs.stop_instances(ecs_models.StopInstancesRequest(region_id=REGION, instance_id=[linux[0]]))
    wait_status(ecs, [linux[0]], "Stopped")
    assert assistant_status(ecs, linux[0]) == "false"


def test_stop_and_start_answer_with_the_transitional_status(
    ecs: EcsClient, sim: AlisimServer
) -> None:
    """The call itself sets Stopping/Starting (documented): never Running right after a stop."""
    [instance] = run_instances(ecs)
    wait_status(ecs, [instance], "Running")
    patch_settings(sim, stop_seconds=30, pending_seconds=30)

    body = ecs.stop_instances(
        ecs_models.StopInstancesRequest(region_id=REGION, instance_id=[instance])
    ).body
    [answer] = body.instance_responses.instance_response
    assert (answer.previous_status, answer.current_status) == ("Running", "Stopping")
    assert statuses(ecs, [instance]) == {instance: "Stopping"}

    patch_settings(sim, stop_seconds=0)
    ecs.stop_instances(
        ecs_models.StopInstancesRequest(region_id=REGION, instance_id=[instance], force_stop=True)
    )
    wait_status(ecs, [instance], "Stopped")
    body = ecs.start_instances(
        ecs_models.StartInstancesRequest(region_id=REGION, instance_id=[instance])
    ).body
    [answer] = body.instance_responses.instance_response
    assert (answer.previous_status, answer.current_status) == ("Stopped", "Starting")
    assert statuses(ecs, [instance]) == {instance: "Starting"}
