"""alisim's ROS through the older `aliyun-python-sdk-ros` (aliyunsdkcore's HMAC-SHA1 RPC client,
parameters in the query), for the main actions: create, read, list, events, update, delete."""

from __future__ import annotations

import json

import pytest
from aliyunsdkcore.acs_exception.exceptions import ServerException
from aliyunsdkcore.client import AcsClient
from aliyunsdkros.request.v20190910 import (
    CreateStackRequest,
    DeleteStackRequest,
    GetStackRequest,
    ListStackEventsRequest,
    ListStacksRequest,
    UpdateStackRequest,
)

from tests.helpers import wait_until
from tests.ros_support import HANDLE, REGION, template


@pytest.fixture
def call(sim, access_key):
    client = AcsClient(access_key[0], access_key[1], REGION)

    def run(request, **values):
        request.set_endpoint(sim.endpoint)
        request.set_protocol_type("http")
        for name, value in values.items():
            getattr(request, f"set_{name}")(value)
        return json.loads(client.do_action_with_exception(request))

    return run


def status(call, stack_id: str) -> str:
    return call(GetStackRequest.GetStackRequest(), StackId=stack_id)["Status"]


def test_main_actions(call) -> None:
    body = template(
        {"Net": {"Type": "ALIYUN::ECS::VPC", "Properties": {"VpcName": {"Ref": "Name"}}}},
        Parameters={"Name": {"Type": "String"}},
        Outputs={"Name": {"Value": {"Fn::GetAtt": ["Net", "VpcName"]}}},
    )
    created = call(
        CreateStackRequest.CreateStackRequest(),
        StackName="older",
        TemplateBody=body,
        DisableRollback=True,
        Parameterss=[{"ParameterKey": "Name", "ParameterValue": "a"}],
        Tagss=[{"Key": "k", "Value": "v"}],
    )
    stack_id = created["StackId"]
    wait_until(lambda: status(call, stack_id) == "CREATE_COMPLETE")
    stack = call(GetStackRequest.GetStackRequest(), StackId=stack_id)
    assert stack["DisableRollback"] is True
    assert stack["Outputs"] == [
        {"OutputKey": "Name", "OutputValue": "a", "Description": "No description given"}
    ]
    assert stack["Tags"] == [{"Key": "k", "Value": "v"}]
    listed = call(ListStacksRequest.ListStacksRequest(), StackNames=["older"])
    assert [s["StackId"] for s in listed["Stacks"]] == [stack_id]
    history = call(ListStackEventsRequest.ListStackEventsRequest(), StackId=stack_id)
    assert history["TotalCount"] == 4 and history["Events"][0]["Status"] == "CREATE_COMPLETE"

    call(
        UpdateStackRequest.UpdateStackRequest(),
        StackId=stack_id,
        TemplateBody=body,
        Parameterss=[{"ParameterKey": "Name", "ParameterValue": "b"}],
    )
    wait_until(lambda: status(call, stack_id) == "UPDATE_COMPLETE")
    assert (
        call(GetStackRequest.GetStackRequest(), StackId=stack_id)["Outputs"][0]["OutputValue"]
        == "b"
    )

    call(DeleteStackRequest.DeleteStackRequest(), StackId=stack_id)

    def deleted() -> bool:
        try:
            status(call, stack_id)
        except ServerException as exc:
            return exc.get_error_code() == "StackNotFound" and exc.get_http_status() == 404
        return False

    wait_until(deleted)


def test_errors_reach_the_older_sdk(call) -> None:
    call(
        CreateStackRequest.CreateStackRequest(), StackName="x", TemplateBody=template({"H": HANDLE})
    )
    with pytest.raises(ServerException) as info:
        call(
            CreateStackRequest.CreateStackRequest(),
            StackName="x",
            TemplateBody=template({"H": HANDLE}),
        )
    assert info.value.get_error_code() == "StackExists"
    with pytest.raises(ServerException) as bad:
        call(
            CreateStackRequest.CreateStackRequest(),
            StackName="y",
            TemplateBody=template({"F": {"Type": "ALIYUN::FC::Function"}}),
        )
    assert bad.value.get_error_code() == "StackValidationFailed"
    assert "ALIYUN::FC::Function" in bad.value.get_error_msg()
