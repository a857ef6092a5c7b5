"""Stacks living their lives through the official SDKs: instances, commands that really run
and wait conditions signalled from an instance; every terminal status reached by a real path
(a command that exits non-zero, a bucket that is not empty, a wait that times out) or by a
fault injected through `/_alisim/faults`; updates in place and by replacement; continue,
cancel, retain."""

from __future__ import annotations

import base64
import json
import os

import httpx
import oss2
import pytest
from alibabacloud_ecs20140526 import models as ecs
from alibabacloud_ros20190910 import models as ros
from alibabacloud_tea_openapi.exceptions import ClientException

from tests.helpers import events as cloud_events
from tests.helpers import make_client, wait_until
from tests.ros_support import (
    HANDLE,
    REGION,
    create,
    events,
    get,
    gone,
    make_ros_client,
    outputs,
    patch_settings,
    resource_statuses,
    set_faults,
    settle,
    template,
)

IMAGE = "aliyun_3_x64_20G_alibase_20240528.vhd"

# In the style of Alibaba's examples: a VPC, a vSwitch, a security group with a rule, a group
# of instances, a command run on them that signals a wait condition with curl from each one.
FLEET = f"""
ROSTemplateFormatVersion: '2015-09-01'
Description: A fleet that reports in
Parameters:
  ZoneId:
    Type: String
    Default: cn-hangzhou-k
    AssociationProperty: ALIYUN::ECS::Instance::ZoneId
  InstanceType:
    Type: String
    Default: ecs.g7.large
    AllowedValues: [ecs.g7.large, ecs.c7.large]
  Amount:
    Type: Number
    Default: 3
    MinValue: 1
    MaxValue: 50
  Password:
    Type: String
    NoEcho: true
    Default: Passw0rd!
Resources:
  Vpc:
    Type: ALIYUN::ECS::VPC
    Properties:
      CidrBlock: 192.168.0.0/16
      VpcName: fleet
  VSwitch:
    Type: ALIYUN::ECS::VSwitch
    Properties:
      VpcId: !Ref Vpc
      ZoneId: !Ref ZoneId
      CidrBlock: 192.168.1.0/24
  Group:
    Type: ALIYUN::ECS::SecurityGroup
    Properties:
      VpcId: !Ref Vpc
      SecurityGroupIngress:
        - IpProtocol: tcp
          PortRange: 22/22
          SourceCidrIp: 0.0.0.0/0
  Https:
    Type: ALIYUN::ECS::SecurityGroupIngress
    Properties:
      SecurityGroupId: !Ref Group
      IpProtocol: tcp
      PortRange: 443/443
      SourceCidrIp: 0.0.0.0/0
  Fleet:
    Type: ALIYUN::ECS::InstanceGroup
    Properties:
      ImageId: {IMAGE}
      InstanceType: !Ref InstanceType
      MaxAmount: !Ref Amount
      VpcId: !Ref Vpc
      VSwitchId: !Ref VSwitch
      SecurityGroupId: !Ref Group
      InstanceName: fleet-
      Password: !Ref Password
      SystemDiskCategory: cloud_essd
  Handle:
    Type: ALIYUN::ROS::WaitConditionHandle
  ReportIn:
    Type: ALIYUN::ECS::RunCommand
    Properties:
      Type: RunShellScript
      Sync: true
      Timeout: 60
      InstanceIds: !GetAtt Fleet.InstanceIds
      CommandContent: !Sub |
        echo "hello from $INSTANCE_ID"
        BODY="{{\\"status\\": \\"SUCCESS\\", \\"id\\": \\"$INSTANCE_ID\\", \\"data\\": \\"up\\"}}"
        ${{Handle.CurlCli}} -s -d "$BODY"
  Reported:
    Type: ALIYUN::ROS::WaitCondition
    DependsOn: ReportIn
    Properties:
      Handle: !Ref Handle
      Count: !Ref Amount
      Timeout: 300
Outputs:
  InstanceIds:
    Value: !GetAtt Fleet.InstanceIds
    Description: The instances
  PrivateIps:
    Value: !GetAtt Fleet.PrivateIps
  Reports:
    Value: !GetAtt Reported.Data
  InvokeId:
    Value: !GetAtt ReportIn.InvokeId
"""


@pytest.fixture(params=["acs3", "v2"])
def client(sim, access_key, request):
    return make_ros_client(sim, access_key, request.param)


@pytest.fixture
def ecs_api(sim, access_key):
    return make_client(sim, access_key)


def instance_ids(ecs_api) -> set[str]:
    body = ecs_api.describe_instances(
        ecs.DescribeInstancesRequest(region_id=REGION, page_size=100)
    ).body
    return {i.instance_id for i in body.instances.instance}


def statuses(client, stack_id: str) -> list[str]:
    """The stack's own statuses, in order."""
    return [e.status for e in events(client, stack_id) if e.resource_type == "ALIYUN::ROS::Stack"]


def test_fleet_reports_in_from_its_instances(client, sim, ecs_api) -> None:
    patch_settings(sim, pending_seconds=0.1)
    stack_id = create(client, FLEET, name="fleet")
    stack = settle(client, stack_id)
    assert stack.status == "CREATE_COMPLETE", stack.status_reason
    found = outputs(stack)
    ids = found["InstanceIds"]
    assert len(ids) == 3 and set(ids) == instance_ids(ecs_api)
    assert all(ip.startswith("192.168.1.") for ip in found["PrivateIps"])
    reports = json.loads(found["Reports"])
    assert reports == {i: "up" for i in ids}

    described = ecs_api.describe_instances(
        ecs.DescribeInstancesRequest(region_id=REGION, instance_ids=json.dumps(ids))
    ).body.instances.instance
    assert {i.status for i in described} == {"Running"}
    assert {i.vpc_attributes.private_ip_address.ip_address[0] for i in described} == set(
        found["PrivateIps"]
    )
    assert {i.instance_name for i in described} == {"fleet-001", "fleet-002", "fleet-003"}
    for instance_id in ids:
        states = [
            e["data"]["state"] for e in cloud_events(sim, "ecs:Instance:StateChange", instance_id)
        ]
        assert states[:3] == ["Pending", "Starting", "Running"]
    completed = cloud_events(sim, "ecs:CloudAssistant:TaskCompleted", found["InvokeId"])
    assert {e["data"]["instanceId"] for e in completed} == set(ids)
    assert {e["data"]["invocationStatus"] for e in completed} == {"Success"}

    client.delete_stack(ros.DeleteStackRequest(region_id=REGION, stack_id=stack_id))
    gone(client, stack_id)
    assert instance_ids(ecs_api) == set()


def test_a_command_that_exits_non_zero_rolls_the_stack_back(client, ecs_api) -> None:
    body = FLEET.replace('echo "hello from $INSTANCE_ID"', "exit 3")
    stack = settle(client, create(client, body, name="fails", parameters={"Amount": "2"}))
    assert stack.status == "CREATE_ROLLBACK_COMPLETE"
    assert stack.status_reason == "Stack CREATE_ROLLBACK completed successfully"
    assert statuses(client, stack.stack_id) == [
        "CREATE_IN_PROGRESS",
        "CREATE_ROLLBACK_IN_PROGRESS",
        "CREATE_ROLLBACK_COMPLETE",
    ]
    [failed] = [e for e in events(client, stack.stack_id) if e.status == "CREATE_FAILED"]
    assert failed.logical_resource_id == "ReportIn"
    assert "InvocationFailed" in failed.status_reason
    assert "Failed (ExitCodeNonzero), exit code 3" in failed.status_reason
    assert instance_ids(ecs_api) == set()
    assert set(resource_statuses(client, stack.stack_id).values()) <= {
        "DELETE_COMPLETE",
        "INIT_COMPLETE",
        "CREATE_FAILED",
    }


def test_failure_without_rollback_then_continue_create(client, sim) -> None:
    body = template(
        {
            "Net": {"Type": "ALIYUN::ECS::VPC"},
            "Flaky": {"Type": "ALIYUN::ECS::VPC", "DependsOn": "Net"},
            "After": {**HANDLE, "DependsOn": "Flaky"},
        }
    )
    set_faults(sim, {"ros": [{"logical_id": "Flaky", "reason": "quota exceeded", "count": 1}]})
    stack = settle(client, create(client, body, name="cont", disable_rollback=True))
    assert stack.status == "CREATE_FAILED"
    assert stack.status_reason == (
        "Resource CREATE failed: InjectedFault: resources.Flaky: quota exceeded"
    )
    assert stack.operation_info.code == "InjectedFault"
    assert resource_statuses(client, stack.stack_id) == {
        "Net": "CREATE_COMPLETE",
        "Flaky": "CREATE_FAILED",
        "After": "INIT_COMPLETE",
    }
    net_before = get_resource(client, stack.stack_id, "Net").physical_resource_id

    dry = client.continue_create_stack(
        ros.ContinueCreateStackRequest(region_id=REGION, stack_id=stack.stack_id, dry_run=True)
    ).body
    assert dry.dry_run_result.parameters_not_allowed_to_be_modified == []
    client.continue_create_stack(
        ros.ContinueCreateStackRequest(region_id=REGION, stack_id=stack.stack_id)
    )
    done = settle(client, stack.stack_id)
    assert done.status == "CREATE_COMPLETE"
    assert set(resource_statuses(client, stack.stack_id).values()) == {"CREATE_COMPLETE"}
    assert get_resource(client, stack.stack_id, "Net").physical_resource_id == net_before
    assert statuses(client, stack.stack_id) == [
        "CREATE_IN_PROGRESS",
        "CREATE_FAILED",
        "CREATE_IN_PROGRESS",
        "CREATE_COMPLETE",
    ]
    with pytest.raises(ClientException) as info:
        client.continue_create_stack(
            ros.ContinueCreateStackRequest(region_id=REGION, stack_id=stack.stack_id)
        )
    assert info.value.code == "NotSupported"


def test_continue_create_recreates_chosen_resources_and_ignore_drops_failed(client, sim) -> None:
    body = template(
        {
            "Net": {"Type": "ALIYUN::ECS::VPC"},
            "Flaky": {"Type": "ALIYUN::ECS::VPC", "DependsOn": "Net"},
        }
    )
    set_faults(sim, {"ros": [{"logical_id": "Flaky", "reason": "no", "count": 2}]})
    first = settle(client, create(client, body, name="recreate", disable_rollback=True))
    net_before = get_resource(client, first.stack_id, "Net").physical_resource_id
    client.continue_create_stack(
        ros.ContinueCreateStackRequest(
            region_id=REGION, stack_id=first.stack_id, recreating_resources=["Net"]
        )
    )
    again = settle(client, first.stack_id)
    assert again.status == "CREATE_FAILED"
    assert get_resource(client, first.stack_id, "Net").physical_resource_id != net_before
    client.continue_create_stack(
        ros.ContinueCreateStackRequest(region_id=REGION, stack_id=first.stack_id, mode="Ignore")
    )
    ignored = settle(client, first.stack_id)
    assert ignored.status == "CREATE_COMPLETE"
    assert resource_statuses(client, first.stack_id) == {"Net": "CREATE_COMPLETE"}


def test_rollback_that_fails(client, sim) -> None:
    body = template({"Net": {"Type": "ALIYUN::ECS::VPC"}, "Bad": {**HANDLE, "DependsOn": "Net"}})
    set_faults(
        sim,
        {
            "ros": [
                {"logical_id": "Bad", "reason": "boom"},
                {"resource_type": "ALIYUN::ECS::VPC", "operation": "delete", "reason": "stuck"},
            ]
        },
    )
    stack = settle(client, create(client, body, name="rbf"))
    assert stack.status == "CREATE_ROLLBACK_FAILED"
    assert stack.status_reason == "Resource DELETE failed: InjectedFault: resources.Net: stuck"
    assert resource_statuses(client, stack.stack_id)["Net"] == "DELETE_FAILED"


def get_resource(client, stack_id: str, name: str):
    return client.get_stack_resource(
        ros.GetStackResourceRequest(region_id=REGION, stack_id=stack_id, logical_resource_id=name)
    ).body


def update(client, stack_id: str, body: str, **parameters: str) -> None:
    client.update_stack(
        ros.UpdateStackRequest(
            region_id=REGION,
            stack_id=stack_id,
            template_body=body,
            parameters=[
                ros.UpdateStackRequestParameters(parameter_key=k, parameter_value=v)
                for k, v in parameters.items()
            ]
            or None,
        )
    )


NETWORK = template(
    {
        "Vpc": {
            "Type": "ALIYUN::ECS::VPC",
            "Properties": {"CidrBlock": "10.0.0.0/8", "VpcName": {"Ref": "Name"}},
        },
        "VSwitch": {
            "Type": "ALIYUN::ECS::VSwitch",
            "Properties": {
                "VpcId": {"Ref": "Vpc"},
                "ZoneId": "cn-hangzhou-k",
                "CidrBlock": {"Ref": "Cidr"},
            },
        },
        "Servers": {
            "Type": "ALIYUN::ECS::InstanceGroup",
            "Properties": {
                "ImageId": IMAGE,
                "InstanceType": "ecs.g7.large",
                "VSwitchId": {"Ref": "VSwitch"},
                "MaxAmount": {"Ref": "Amount"},
            },
        },
    },
    Parameters={
        "Name": {"Type": "String", "Default": "one"},
        "Cidr": {"Type": "String", "Default": "10.1.0.0/16"},
        "Amount": {"Type": "Number", "Default": 1},
    },
    Outputs={
        "Ids": {"Value": {"Fn::GetAtt": ["Servers", "InstanceIds"]}},
        "Ips": {"Value": {"Fn::GetAtt": ["Servers", "PrivateIps"]}},
        "Name": {"Value": {"Fn::GetAtt": ["Vpc", "VpcName"]}},
    },
)


def test_update_in_place_and_by_replacement(client, ecs_api) -> None:
    stack_id = settle(client, create(client, NETWORK, name="upd")).stack_id
    vpc = get_resource(client, stack_id, "Vpc").physical_resource_id
    vswitch = get_resource(client, stack_id, "VSwitch").physical_resource_id
    [first] = outputs(get(client, stack_id))["Ids"]

    update(client, stack_id, NETWORK, Name="two", Amount="2")
    done = settle(client, stack_id)
    assert done.status == "UPDATE_COMPLETE"
    assert get_resource(client, stack_id, "Vpc").physical_resource_id == vpc
    assert outputs(done)["Name"] == "two"
    ids = outputs(done)["Ids"]
    assert ids[0] == first and len(ids) == 2 and instance_ids(ecs_api) == set(ids)

    update(client, stack_id, NETWORK, Name="two", Amount="2", Cidr="10.2.0.0/16")
    replaced = settle(client, stack_id)
    assert replaced.status == "UPDATE_COMPLETE", replaced.status_reason
    assert get_resource(client, stack_id, "VSwitch").physical_resource_id != vswitch
    assert all(ip.startswith("10.2.") for ip in outputs(replaced)["Ips"])
    assert instance_ids(ecs_api) == set(outputs(replaced)["Ids"])
    assert not set(ids) & set(outputs(replaced)["Ids"])
    deleted = [e for e in events(client, stack_id) if e.status == "DELETE_COMPLETE"]
    assert {e.physical_resource_id for e in deleted} >= {vswitch}


def test_failed_update_rolls_back_and_a_failed_rollback_says_so(client, sim) -> None:
    stack_id = settle(client, create(client, NETWORK, name="rb")).stack_id
    before = outputs(get(client, stack_id))
    added = json.loads(NETWORK)
    added["Resources"]["Extra"] = {"Type": "ALIYUN::ECS::VPC"}
    fault = {"logical_id": "Servers", "operation": "update", "reason": "no stock", "count": 1}
    set_faults(sim, {"ros": [fault]})
    update(client, stack_id, json.dumps(added), Name="two", Amount="2")
    rolled = settle(client, stack_id)
    assert rolled.status == "ROLLBACK_COMPLETE"
    assert rolled.status_reason == "Stack ROLLBACK completed successfully"
    assert statuses(client, stack_id)[-3:] == [
        "UPDATE_IN_PROGRESS",
        "ROLLBACK_IN_PROGRESS",
        "ROLLBACK_COMPLETE",
    ]
    assert outputs(rolled) == before
    assert "Extra" not in resource_statuses(client, stack_id)
    extra = [e.status for e in events(client, stack_id) if e.logical_resource_id == "Extra"]
    assert extra == [
        "CREATE_IN_PROGRESS",
        "CREATE_COMPLETE",
        "DELETE_IN_PROGRESS",
        "DELETE_COMPLETE",
    ]
    got = client.get_template(ros.GetTemplateRequest(region_id=REGION, stack_id=stack_id)).body
    assert got.template_body == NETWORK

    set_faults(
        sim,
        {
            "ros": [
                {"logical_id": "Servers", "operation": "update", "reason": "no stock"},
                {"logical_id": "Vpc", "operation": "update", "reason": "locked", "count": 2},
            ]
        },
    )
    update(client, stack_id, NETWORK, Name="three", Amount="2")
    failed = settle(client, stack_id)
    assert failed.status == "ROLLBACK_FAILED"
    assert failed.status_reason.startswith("Resource UPDATE failed: InjectedFault: resources.Vpc")


def test_update_without_rollback_fails_and_keeps_going(client, sim) -> None:
    stack_id = settle(client, create(client, NETWORK, name="nrb", disable_rollback=True)).stack_id
    set_faults(sim, {"ros": [{"logical_id": "Servers", "operation": "update", "reason": "x"}]})
    update(client, stack_id, NETWORK, Name="two", Amount="2")
    failed = settle(client, stack_id)
    assert failed.status == "UPDATE_FAILED"
    assert failed.status_reason == "Resource UPDATE failed: InjectedFault: resources.Servers: x"
    set_faults(sim, {})
    update(client, stack_id, NETWORK, Name="two", Amount="3")
    assert settle(client, stack_id).status == "UPDATE_COMPLETE"


def test_delete_failure_then_retained(client, sim, access_key) -> None:
    body = template({"Logs": {"Type": "ALIYUN::OSS::Bucket", "Properties": {"BucketName": "logs"}}})
    stack_id = settle(client, create(client, body, name="del")).stack_id
    bucket = oss2.Bucket(oss2.AuthV4(*access_key), sim.url, "logs", region=REGION)
    bucket.put_object("a.txt", b"kept")
    client.delete_stack(ros.DeleteStackRequest(region_id=REGION, stack_id=stack_id))
    failed = settle(client, stack_id)
    assert failed.status == "DELETE_FAILED"
    assert failed.status_reason.startswith("Resource DELETE failed: BucketNotEmpty: resources.Logs")
    client.delete_stack(
        ros.DeleteStackRequest(region_id=REGION, stack_id=stack_id, retain_resources=["Logs"])
    )
    gone(client, stack_id)
    assert bucket.get_object("a.txt").read() == b"kept"

    again = settle(client, create(client, body.replace("logs", "more"), name="all")).stack_id
    client.delete_stack(
        ros.DeleteStackRequest(region_id=REGION, stack_id=again, retain_all_resources=True)
    )
    gone(client, again)
    service = oss2.Service(oss2.AuthV4(*access_key), sim.url, region=REGION)
    assert {b.name for b in service.list_buckets().buckets} == {"logs", "more"}


@pytest.mark.parametrize(
    ("disable_rollback", "final"), [(False, "CREATE_ROLLBACK_COMPLETE"), (True, "CREATE_FAILED")]
)
def test_a_stack_that_outlives_its_timeout(client, sim, disable_rollback, final) -> None:
    patch_settings(sim, time_scale=0.001)
    body = template(
        {
            "Handle": HANDLE,
            "Never": {
                "Type": "ALIYUN::ROS::WaitCondition",
                "Properties": {"Handle": {"Ref": "Handle"}, "Timeout": 43200},
            },
        }
    )
    stack = settle(
        client,
        create(client, body, name="slow", timeout_in_minutes=10, disable_rollback=disable_rollback),
    )
    assert stack.status == final
    reasons = [e.status_reason for e in events(client, stack.stack_id)]
    assert any(r.endswith("Stack CREATE timed out after 10 minutes") for r in reasons)
    never = [e for e in events(client, stack.stack_id) if e.logical_resource_id == "Never"]
    assert [e.status for e in never][:2] == ["CREATE_IN_PROGRESS", "CREATE_FAILED"]
    assert never[1].status_reason == "CREATE aborted"


def test_a_hanging_resource_times_the_stack_out(client, sim) -> None:
    patch_settings(sim, time_scale=0.001)
    set_faults(sim, {"ros": [{"resource_type": "ALIYUN::ECS::VPC", "hang": True}]})
    stack = settle(
        client,
        create(client, template({"Net": {"Type": "ALIYUN::ECS::VPC"}}), disable_rollback=True),
    )
    assert stack.status == "CREATE_FAILED"
    assert stack.status_reason == "Stack CREATE timed out after 60 minutes"


def test_wait_condition_timeout_and_failure_signal(client, sim) -> None:
    patch_settings(sim, time_scale=0.01)
    body = template(
        {
            "Handle": HANDLE,
            "Wait": {
                "Type": "ALIYUN::ROS::WaitCondition",
                "Properties": {"Handle": {"Ref": "Handle"}, "Timeout": 60, "Count": 2},
            },
        },
        Outputs={"Url": {"Value": {"Fn::GetAtt": ["Handle", "URL"]}}},
    )
    timed_out = settle(client, create(client, body, name="wto", disable_rollback=True))
    assert timed_out.status == "CREATE_FAILED"
    assert timed_out.status_reason == (
        "Resource CREATE failed: WaitConditionTimeout: resources.Wait: 0 of 2 received"
    )

    failing = create(client, body.replace('"Timeout": 60', '"Timeout": 43200'), name="wfail")
    url = wait_until(
        lambda: (
            get_resource(client, failing, "Handle").status == "CREATE_COMPLETE"
            and attribute(client, failing, "Handle", "URL")
        )
    )
    assert httpx.post(url, json={"status": " success ", "id": "a"}).status_code == 200
    answer = httpx.post(url, json={"status": "FAILURE", "reason": "disk full"})
    assert answer.status_code == 200
    failed = settle(client, failing)
    assert failed.status == "CREATE_ROLLBACK_COMPLETE"
    [event] = [e for e in events(client, failing) if e.status == "CREATE_FAILED"]
    assert event.status_reason == "WaitConditionFailure: disk full"


def attribute(client, stack_id: str, name: str, key: str):
    body = client.get_stack_resource(
        ros.GetStackResourceRequest(
            region_id=REGION,
            stack_id=stack_id,
            logical_resource_id=name,
            show_resource_attributes=True,
            resource_attributes=[key],
        )
    ).body
    return body.resource_attributes[0]["Value"] if body.resource_attributes else None


def test_signal_url_is_guarded(client, sim) -> None:
    body = template({"Handle": HANDLE})
    stack_id = settle(client, create(client, body, name="guard")).stack_id
    url = attribute(client, stack_id, "Handle", "URL")
    assert url.startswith(f"http://{sim.endpoint}/_ros/waitcondition?")
    forged = url.replace("signature=", "signature=x")
    assert httpx.post(forged, json={"status": "SUCCESS"}).status_code == 403
    assert httpx.post(url.replace(stack_id, "nope"), json={"status": "SUCCESS"}).status_code == 404
    assert httpx.get(url).status_code == 405
    assert httpx.post(url, content=b"{not json").status_code == 400
    bad = httpx.post(url, json={"status": "DONE"})
    assert bad.status_code == 400 and "SUCCESS, FAILURE, WARNING" in bad.json()["Message"]
    curl = attribute(client, stack_id, "Handle", "CurlCli")
    assert curl.startswith("curl -i -X POST -H 'Content-Type: application/json' 'http://")


def test_cancel_update_rolls_back(client, sim) -> None:
    stack_id = settle(client, create(client, template({"Handle": HANDLE}), name="cancel")).stack_id
    waiting = template(
        {
            "Handle": HANDLE,
            "Wait": {
                "Type": "ALIYUN::ROS::WaitCondition",
                "Properties": {"Handle": {"Ref": "Handle"}, "Timeout": 600},
            },
        }
    )
    with pytest.raises(ClientException) as info:
        client.cancel_update_stack(
            ros.CancelUpdateStackRequest(region_id=REGION, stack_id=stack_id)
        )
    assert info.value.code == "NotSupported"
    update(client, stack_id, waiting)
    wait_until(lambda: resource_statuses(client, stack_id).get("Wait") == "CREATE_IN_PROGRESS")
    with pytest.raises(ClientException) as busy:
        client.delete_stack(ros.DeleteStackRequest(region_id=REGION, stack_id=stack_id))
    assert busy.value.code == "ActionInProgress" and busy.value.status_code == 409
    client.cancel_update_stack(
        ros.CancelUpdateStackRequest(region_id=REGION, stack_id=stack_id, cancel_type="Quick")
    )
    rolled = settle(client, stack_id)
    assert rolled.status == "ROLLBACK_COMPLETE"
    assert "Stack UPDATE cancelled" in [
        e.status_reason.split(": ", 1)[-1] for e in events(client, stack_id)
    ]
    assert resource_statuses(client, stack_id) == {"Handle": "CREATE_COMPLETE"}


def test_parallelism_bounds_resources_in_flight(client, sim) -> None:
    body = template({f"Net{n}": {"Type": "ALIYUN::ECS::VPC"} for n in range(4)})
    set_faults(sim, {"ros": [{"resource_type": "ALIYUN::ECS::VPC", "delay_seconds": 0.05}]})

    def most_in_flight(stack_id: str) -> int:
        running, most = 0, 0
        for e in events(client, stack_id):
            if e.resource_type == "ALIYUN::ROS::Stack":
                continue
            running += 1 if e.status == "CREATE_IN_PROGRESS" else -1
            most = max(most, running)
        return most

    one = settle(client, create(client, body, name="one", parallelism=1)).stack_id
    free = settle(client, create(client, body, name="free")).stack_id
    assert most_in_flight(one) == 1
    assert most_in_flight(free) == 4


def test_ros_faults_are_validated(sim) -> None:
    answer = httpx.put(f"{sim.url}/_alisim/faults", json={"ros": [{"logical_id": "X"}]})
    assert answer.status_code == 400
    assert "a ROS fault needs a reason, a delay_seconds or hang" in answer.json()["error"]


# The pattern of Alibaba's WaitCondition example: the instance's user data, at first boot,
# runs the handle's curl command (put in by Fn::Replace) with a JSON body of its own.
USER_DATA_EXAMPLE = json.dumps(
    {
        "ROSTemplateFormatVersion": "2015-09-01",
        "Parameters": {
            "ImageId": {"Type": "String", "Default": "centos_7"},
            "InstanceType": {"Type": "String", "Default": "ecs.c5.large"},
            "LoginPassword": {"Type": "String", "NoEcho": True, "MinLength": 8},
            "VSwitchId": {"Type": "String"},
            "SecurityGroupId": {"Type": "String"},
        },
        "Resources": {
            "Handle": {"Type": "ALIYUN::ROS::WaitConditionHandle"},
            "Server": {
                "Type": "ALIYUN::ECS::Instance",
                "DependsOn": "Handle",
                "Properties": {
                    "ImageId": {"Ref": "ImageId"},
                    "InstanceType": {"Ref": "InstanceType"},
                    "Password": {"Ref": "LoginPassword"},
                    "VSwitchId": {"Ref": "VSwitchId"},
                    "SecurityGroupId": {"Ref": "SecurityGroupId"},
                    "IoOptimized": "optimized",
                    "UserData": {
                        "Fn::Replace": [
                            {"notify-ros": {"Fn::GetAtt": ["Handle", "CurlCli"]}},
                            {
                                "Fn::Join": [
                                    "",
                                    [
                                        "#!/bin/sh\n",
                                        "echo booted > booted.txt\n",
                                        'notify-ros -d "{\\"Data\\": \\"ready\\", '
                                        '\\"status\\": \\"SUCCESS\\"}"\n',
                                    ],
                                ]
                            },
                        ]
                    },
                },
            },
            "Ready": {
                "Type": "ALIYUN::ROS::WaitCondition",
                "Properties": {"Handle": {"Ref": "Handle"}, "Count": 1, "Timeout": 180},
            },
        },
        "Outputs": {"Data": {"Value": {"Fn::GetAtt": ["Ready", "Data"]}}},
    }
)


def test_user_data_signals_the_wait_condition_at_first_boot(client, sim) -> None:
    parameters = {"LoginPassword": "Passw0rd!", "VSwitchId": "vsw-given", "SecurityGroupId": "sg-1"}
    stack = settle(client, create(client, USER_DATA_EXAMPLE, name="boot", parameters=parameters))
    assert stack.status == "CREATE_COMPLETE", stack.status_reason
    assert json.loads(outputs(stack)["Data"]) == {"1": "ready"}
    [instance] = sim.cloud.instances.instances.values()
    assert (instance.home / "root" / "booted.txt").read_text() == "booted\n"
    assert "HTTP/1.1 200" in (instance.home / "var/log/cloud-init-output.log").read_text()
    assert instance.vswitch_id == "vsw-given" and instance.security_group_ids == ["sg-1"]


def test_instance_group_names_follow_ecs_sequences(client, ecs_api) -> None:
    body = template(
        {
            "Web": {
                "Type": "ALIYUN::ECS::InstanceGroup",
                "Properties": {
                    "ImageId": IMAGE,
                    "InstanceType": "ecs.g7.large",
                    "MaxAmount": 3,
                    "InstanceName": "web-[7,4]",
                    "HostName": "node",
                },
            }
        },
        Outputs={"Hosts": {"Value": {"Fn::GetAtt": ["Web", "HostNames"]}}},
    )
    stack = settle(client, create(client, body, name="names"))
    assert outputs(stack)["Hosts"] == ["node001", "node002", "node003"]
    described = ecs_api.describe_instances(ecs.DescribeInstancesRequest(region_id=REGION)).body
    assert sorted(i.instance_name for i in described.instances.instance) == [
        "web-0007",
        "web-0008",
        "web-0009",
    ]


def test_deleting_the_stack_stops_user_data_still_running(client, sim) -> None:
    body = template(
        {
            "Server": {
                "Type": "ALIYUN::ECS::Instance",
                "Properties": {
                    "ImageId": IMAGE,
                    "InstanceType": "ecs.g7.large",
                    "UserData": "#!/bin/sh\necho $$ > pid.txt\nexec sleep 300\n",
                },
            }
        }
    )
    stack_id = settle(client, create(client, body, name="ud")).stack_id
    [instance] = sim.cloud.instances.instances.values()
    pid_file = instance.home / "root" / "pid.txt"
    pid = int(wait_until(lambda: pid_file.exists() and pid_file.read_text().strip()))

    def alive() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    assert alive()
    client.delete_stack(ros.DeleteStackRequest(region_id=REGION, stack_id=stack_id))
    gone(client, stack_id)
    wait_until(lambda: not alive())


def test_command_and_invocation_run_on_the_instances(client, sim) -> None:
    script = base64.b64encode(b"echo from {{name}}; exit 0").decode()
    body = template(
        {
            "Server": {
                "Type": "ALIYUN::ECS::Instance",
                "Properties": {"ImageId": IMAGE, "InstanceType": "ecs.g7.large"},
            },
            "Saved": {
                "Type": "ALIYUN::ECS::Command",
                "Properties": {
                    "Type": "RunShellScript",
                    "CommandContent": script,
                    "EnableParameter": True,
                    "Name": "greet",
                },
            },
            "Run": {
                "Type": "ALIYUN::ECS::Invocation",
                "Properties": {
                    "CommandId": {"Ref": "Saved"},
                    "InstanceIds": [{"Ref": "Server"}],
                    "Parameters": {"name": "ros"},
                    "Sync": True,
                },
            },
        },
        Outputs={
            "Results": {"Value": {"Fn::GetAtt": ["Run", "InvokeResults"]}},
            "CommandId": {"Value": {"Fn::GetAtt": ["Saved", "CommandId"]}},
        },
    )
    stack = settle(client, create(client, body, name="invoke"))
    assert stack.status == "CREATE_COMPLETE", stack.status_reason
    found = outputs(stack)
    [result] = found["Results"]
    assert result["InvocationStatus"] == "Success" and result["ExitCode"] == 0
    assert result["Output"] == "from ros\n"
    assert found["CommandId"] in sim.cloud.assistant.commands
    client.delete_stack(ros.DeleteStackRequest(region_id=REGION, stack_id=stack.stack_id))
    gone(client, stack.stack_id)
    assert found["CommandId"] not in sim.cloud.assistant.commands


def test_network_rules_fail_stacks_for_real(client) -> None:
    outside = template(
        {
            "Vpc": {"Type": "ALIYUN::ECS::VPC", "Properties": {"CidrBlock": "10.0.0.0/16"}},
            "VSwitch": {
                "Type": "ALIYUN::ECS::VSwitch",
                "Properties": {
                    "VpcId": {"Ref": "Vpc"},
                    "ZoneId": "cn-hangzhou-k",
                    "CidrBlock": {"Ref": "Cidr"},
                },
            },
        },
        Parameters={"Cidr": {"Type": "String", "Default": "10.0.1.0/24"}},
    )
    bad = settle(
        client, create(client, outside, name="outside", parameters={"Cidr": "10.9.0.0/24"})
    )
    assert bad.status == "CREATE_ROLLBACK_COMPLETE"
    [failed] = [e for e in events(client, bad.stack_id) if e.status == "CREATE_FAILED"]
    assert failed.status_reason.startswith("InvalidCidrBlock.Malformed")

    stack_id = settle(client, create(client, outside, name="inside")).stack_id
    update(client, stack_id, outside, Cidr="192.168.0.0/24")
    rolled = settle(client, stack_id)
    assert rolled.status == "ROLLBACK_COMPLETE"
    assert any(
        e.status == "UPDATE_FAILED" and e.status_reason.startswith("InvalidCidrBlock.Malformed")
        for e in events(client, stack_id)
    )

    client.delete_stack(
        ros.DeleteStackRequest(region_id=REGION, stack_id=stack_id, retain_resources=["VSwitch"])
    )
    held = settle(client, stack_id)
    assert held.status == "DELETE_FAILED"
    assert held.status_reason.startswith(
        "Resource DELETE failed: DependencyViolation: resources.Vpc"
    )
