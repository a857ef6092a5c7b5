"""The ROS actions through the official `alibabacloud_ros20190910` SDK, in both signature
modes: answers field for field, paging and filters, errors with ROS's codes, idempotency."""

from __future__ import annotations

import json
import re

import pytest
from alibabacloud_ros20190910 import models as ros
from alibabacloud_tea_openapi.exceptions import ClientException

from tests.helpers import wait_until
from tests.ros_support import (
    HANDLE,
    REGION,
    create,
    events,
    get,
    gone,
    make_ros_client,
    outputs,
    settle,
    template,
)

TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d$")
NETWORK = {
    "Vpc": {"Type": "ALIYUN::ECS::VPC", "Properties": {"CidrBlock": "10.0.0.0/8", "VpcName": "v"}},
    "Handle": HANDLE,
}
NETWORK_OUTPUTS = {
    "VpcId": {"Value": {"Ref": "Vpc"}, "Description": "the VPC"},
    "Router": {"Value": {"Fn::GetAtt": ["Vpc", "VRouterId"]}},
}


@pytest.fixture(params=["acs3", "v2"])
def client(sim, access_key, request):
    return make_ros_client(sim, access_key, request.param)


def error_of(call) -> ClientException:
    with pytest.raises(ClientException) as info:
        call()
    return info.value


def test_create_get_list_and_delete_answer_field_for_field(client) -> None:
    body = template(NETWORK, Outputs=NETWORK_OUTPUTS, Description="two cheap resources")
    stack_id = create(
        client, body, name="fields", tags=[ros.CreateStackRequestTags(key="team", value="ops")]
    )
    stack = settle(client, stack_id)
    assert stack.status == "CREATE_COMPLETE"
    assert stack.status_reason == "Stack CREATE completed successfully"
    assert stack.stack_name == "fields" and stack.region_id == REGION
    assert TIME.match(stack.create_time), stack.create_time
    assert stack.disable_rollback is False and stack.timeout_in_minutes == 60
    assert stack.description == "two cheap resources"
    assert stack.tags[0].key == "team" and stack.tags[0].value == "ops"
    params = {p.parameter_key: p.parameter_value for p in stack.parameters}
    assert params["ALIYUN::Region"] == REGION
    assert params["ALIYUN::StackId"] == stack_id
    assert params["ALIYUN::StackName"] == "fields"
    assert params["ALIYUN::AccountId"] and params["ALIYUN::NoValue"] == "None"
    assert isinstance(stack.outputs, list)
    by_key = {o["OutputKey"]: o for o in stack.outputs}
    assert by_key["VpcId"]["OutputValue"].startswith("vpc-")
    assert by_key["VpcId"]["Description"] == "the VPC"
    assert by_key["Router"]["Description"] == "No description given"
    assert by_key["Router"]["OutputValue"].startswith("vrt-")

    without = get(client, stack_id, output_option="Disabled")
    assert without.outputs is None

    listed = client.list_stacks(ros.ListStacksRequest(region_id=REGION)).body
    assert [s.stack_id for s in listed.stacks] == [stack_id]
    assert listed.total_count == 1 and listed.page_number == 1 and listed.page_size == 10
    assert TIME.match(listed.stacks[0].create_time)

    client.delete_stack(ros.DeleteStackRequest(region_id=REGION, stack_id=stack_id))
    gone(client, stack_id)
    assert client.list_stacks(ros.ListStacksRequest(region_id=REGION)).body.stacks == []


def test_stack_events_resources_and_template(client) -> None:
    body = template(NETWORK, Outputs=NETWORK_OUTPUTS)
    stack_id = settle(client, create(client, body)).stack_id
    history = events(client, stack_id)
    pairs = [(e.logical_resource_id, e.status) for e in history]
    assert pairs[0] == ("stack", "CREATE_IN_PROGRESS") and pairs[-1] == ("stack", "CREATE_COMPLETE")
    for name in ("Vpc", "Handle"):
        assert pairs.index((name, "CREATE_IN_PROGRESS")) < pairs.index((name, "CREATE_COMPLETE"))
    assert len(pairs) == 6
    assert history[0].resource_type == "ALIYUN::ROS::Stack"
    assert history[0].physical_resource_id == stack_id
    assert history[-1].status_reason == "Stack CREATE completed successfully"
    assert all(TIME.match(e.create_time) and e.event_id for e in history)
    assert {e.status_reason for e in history[1:-1]} == {"state changed"}

    newest = client.list_stack_events(
        ros.ListStackEventsRequest(region_id=REGION, stack_id=stack_id, page_size=2)
    ).body
    assert newest.total_count == 6 and len(newest.events) == 2
    assert newest.events[0].status == "CREATE_COMPLETE"
    assert newest.events[0].logical_resource_id == "stack"
    page3 = client.list_stack_events(
        ros.ListStackEventsRequest(region_id=REGION, stack_id=stack_id, page_size=2, page_number=3)
    ).body
    assert page3.events[-1].status == "CREATE_IN_PROGRESS" and page3.page_number == 3
    filtered = client.list_stack_events(
        ros.ListStackEventsRequest(
            region_id=REGION,
            stack_id=stack_id,
            status=["CREATE_COMPLETE"],
            resource_type=["ALIYUN::ECS::VPC"],
        )
    ).body
    assert [(e.logical_resource_id, e.status) for e in filtered.events] == [
        ("Vpc", "CREATE_COMPLETE")
    ]
    by_id = client.list_stack_events(
        ros.ListStackEventsRequest(
            region_id=REGION, stack_id=stack_id, logical_resource_id=["Handle"]
        )
    ).body
    assert {e.logical_resource_id for e in by_id.events} == {"Handle"}

    resources = client.list_stack_resources(
        ros.ListStackResourcesRequest(region_id=REGION, stack_id=stack_id)
    ).body.resources
    assert {r.logical_resource_id: r.status for r in resources} == {
        "Vpc": "CREATE_COMPLETE",
        "Handle": "CREATE_COMPLETE",
    }
    assert all(TIME.match(r.create_time) and r.stack_id == stack_id for r in resources)

    vpc = client.get_stack_resource(
        ros.GetStackResourceRequest(
            region_id=REGION,
            stack_id=stack_id,
            logical_resource_id="Vpc",
            show_resource_attributes=True,
        )
    ).body
    attributes = {a["Key"]: a["Value"] for a in vpc.resource_attributes}
    assert attributes["VpcId"] == vpc.physical_resource_id
    assert attributes["CidrBlock"] == "10.0.0.0/8" and attributes["VpcName"] == "v"
    chosen = client.get_stack_resource(
        ros.GetStackResourceRequest(
            region_id=REGION,
            stack_id=stack_id,
            logical_resource_id="Vpc",
            show_resource_attributes=True,
            resource_attributes=["VRouterId"],
        )
    ).body
    assert [a["Key"] for a in chosen.resource_attributes] == ["VRouterId"]

    got = client.get_template(ros.GetTemplateRequest(region_id=REGION, stack_id=stack_id)).body
    assert got.template_body == body


def test_list_stacks_pages_and_filters(client) -> None:
    ids = []
    for n, team in enumerate(["a", "b", "a"]):
        ids.append(
            create(
                client,
                template({"H": HANDLE}),
                name=f"list-{n}",
                tags=[ros.CreateStackRequestTags(key="team", value=team)],
            )
        )
    for stack_id in ids:
        settle(client, stack_id)
    first = client.list_stacks(ros.ListStacksRequest(region_id=REGION, page_size=2)).body
    second = client.list_stacks(
        ros.ListStacksRequest(region_id=REGION, page_size=2, page_number=2)
    ).body
    assert first.total_count == 3 and len(first.stacks) == 2 and len(second.stacks) == 1
    assert [s.stack_id for s in first.stacks + second.stacks] == list(reversed(ids))
    named = client.list_stacks(ros.ListStacksRequest(region_id=REGION, stack_name=["list-1"])).body
    assert [s.stack_name for s in named.stacks] == ["list-1"]
    pattern = client.list_stacks(
        ros.ListStacksRequest(region_id=REGION, stack_name=["list-*"])
    ).body
    assert pattern.total_count == 3
    tagged = client.list_stacks(
        ros.ListStacksRequest(
            region_id=REGION, tag=[ros.ListStacksRequestTag(key="team", value="a")]
        )
    ).body
    assert {s.stack_name for s in tagged.stacks} == {"list-0", "list-2"}
    by_status = client.list_stacks(
        ros.ListStacksRequest(region_id=REGION, status=["CREATE_FAILED"])
    ).body
    assert by_status.stacks == [] and by_status.total_count == 0
    too_big = error_of(
        lambda: client.list_stacks(ros.ListStacksRequest(region_id=REGION, page_size=51))
    )
    assert too_big.code == "InvalidParameter"


def test_errors_have_ros_codes(client) -> None:
    missing = error_of(lambda: get(client, "no-such-stack"))
    assert missing.code == "StackNotFound" and missing.status_code == 404
    assert "The Stack (no-such-stack) could not be found." in missing.message

    stack_id = settle(client, create(client, template({"H": HANDLE}), name="dup")).stack_id
    exists = error_of(lambda: create(client, template({"H": HANDLE}), name="dup"))
    assert exists.code == "StackExists" and exists.status_code == 409
    assert "The Stack (dup) already exists." in exists.message

    no_resource = error_of(
        lambda: client.get_stack_resource(
            ros.GetStackResourceRequest(
                region_id=REGION, stack_id=stack_id, logical_resource_id="Nope"
            )
        )
    )
    assert no_resource.code == "ResourceNotFound" and no_resource.status_code == 404
    assert "The Resource (Nope) could not be found in Stack dup." in no_resource.message

    assert error_of(lambda: create(client, template({"H": HANDLE}), name="-bad")).code == (
        "InvalidParameter"
    )
    assert (
        error_of(
            lambda: create(client, template({"H": HANDLE}), name="short", timeout_in_minutes=5)
        ).code
        == "InvalidParameter"
    )
    no_template = error_of(
        lambda: client.create_stack(ros.CreateStackRequest(region_id=REGION, stack_name="x"))
    )
    assert no_template.code == "MissingParameter"
    url = error_of(
        lambda: client.create_stack(
            ros.CreateStackRequest(region_id=REGION, stack_name="x", template_url="oss://b/t")
        )
    )
    assert url.code == "InvalidParameter" and "TemplateBody" in url.message

    same = error_of(
        lambda: client.update_stack(
            ros.UpdateStackRequest(
                region_id=REGION, stack_id=stack_id, template_body=template({"H": HANDLE})
            )
        )
    )
    assert same.code == "NotSupported"
    assert "Update the completely same stack (dup) is not supported." in same.message

    elsewhere = error_of(
        lambda: client.get_stack(ros.GetStackRequest(region_id="cn-beijing", stack_id=stack_id))
    )
    assert elsewhere.code == "InvalidRegionId.NotFound"


def test_client_token_makes_create_idempotent(client) -> None:
    body = template({"H": HANDLE})
    first = create(client, body, name="token", client_token="tok-1")
    again = create(client, body, name="token", client_token="tok-1")
    assert again == first
    assert client.list_stacks(ros.ListStacksRequest(region_id=REGION)).body.total_count == 1
    changed = error_of(lambda: create(client, body, name="other", client_token="tok-1"))
    assert changed.code == "InvalidIdempotenceParameter"
    assert "The specified parameters are different from before." in changed.message
    malformed = error_of(lambda: create(client, body, name="x", client_token="bad token!"))
    assert malformed.code == "InvalidParameter"


def test_validate_and_preview_template(client) -> None:
    body = template(
        {
            "Web": {
                "Type": "ALIYUN::ECS::VPC",
                "Count": {"Ref": "Copies"},
                "Properties": {"VpcName": {"Fn::Sub": "web-${ALIYUN::Index}"}},
            },
            "Handle": HANDLE,
        },
        Description="preview me",
        Parameters={
            "Copies": {"Type": "Number", "Default": 2, "Description": "how many"},
            "Secret": {"Type": "String", "NoEcho": True, "Default": "s3cret"},
        },
        Outputs={"Names": {"Value": {"Fn::GetAtt": ["Web", "VpcName"]}, "Label": "names"}},
    )
    checked = client.validate_template(
        ros.ValidateTemplateRequest(region_id=REGION, template_body=body)
    ).body
    assert checked.description == "preview me"
    params = {p["ParameterKey"]: p for p in checked.parameters}
    assert params["Copies"]["Type"] == "Number" and params["Copies"]["Default"] == 2
    assert params["Secret"]["NoEcho"] == "true"
    assert {(r.logical_resource_id_pattern, r.resource_type) for r in checked.resources} == {
        ("Web[*]", "ALIYUN::ECS::VPC"),
        ("Handle", "ALIYUN::ROS::WaitConditionHandle"),
    }
    assert checked.outputs[0].output_key == "Names" and checked.outputs[0].label == "names"
    assert checked.resource_types.resources == [
        "ALIYUN::ECS::VPC",
        "ALIYUN::ROS::WaitConditionHandle",
    ]

    preview = client.preview_stack(
        ros.PreviewStackRequest(
            region_id=REGION,
            stack_name="p",
            template_body=body,
            parameters=[
                ros.PreviewStackRequestParameters(parameter_key="Copies", parameter_value="3")
            ],
        )
    ).body.stack
    assert preview.stack_name == "p" and preview.description == "preview me"
    names = {r.logical_resource_id: r for r in preview.resources}
    assert set(names) == {"Web[0]", "Web[1]", "Web[2]", "Handle"}
    assert names["Web[2]"].properties == {"VpcName": "web-2"}
    assert names["Web[0]"].action == "Add"
    secret = {p.parameter_key: p.parameter_value for p in preview.parameters}["Secret"]
    assert secret == "****"
    assert client.list_stacks(ros.ListStacksRequest(region_id=REGION)).body.total_count == 0

    stack_id = settle(client, create(client, body, name="p")).stack_id
    assert outputs(get(client, stack_id))["Names"] == ["web-0", "web-1"]
    again = client.preview_stack(
        ros.PreviewStackRequest(
            region_id=REGION,
            stack_id=stack_id,
            template_body=body.replace("web-", "www-"),
        )
    ).body.stack
    actions = {r.logical_resource_id: (r.action, r.replacement) for r in again.resources}
    assert actions == {
        "Web[0]": ("Modify", "False"),
        "Web[1]": ("Modify", "False"),
        "Handle": ("None", None),
    }


def test_update_stack_with_previous_parameters_and_dry_run(client) -> None:
    body = template(
        {"Vpc": {"Type": "ALIYUN::ECS::VPC", "Properties": {"VpcName": {"Ref": "Name"}}}},
        Parameters={"Name": {"Type": "String"}, "Other": {"Type": "String", "Default": "x"}},
        Outputs={"Name": {"Value": {"Fn::GetAtt": ["Vpc", "VpcName"]}}},
    )
    stack_id = settle(client, create(client, body, parameters={"Name": "first"})).stack_id
    physical = outputs(get(client, stack_id))
    dry = client.update_stack(
        ros.UpdateStackRequest(
            region_id=REGION,
            stack_id=stack_id,
            template_body=body,
            dry_run=True,
            use_previous_parameters=True,
        )
    ).body
    assert dry.stack_id == stack_id
    assert dry.dry_run_result.parameters_allowed_to_be_modified == ["Name", "Other"]
    assert get(client, stack_id).status == "CREATE_COMPLETE"

    client.update_stack(
        ros.UpdateStackRequest(
            region_id=REGION,
            stack_id=stack_id,
            template_body=body,
            use_previous_parameters=True,
            parameters=[
                ros.UpdateStackRequestParameters(parameter_key="Other", parameter_value="y")
            ],
        )
    )
    updated = settle(client, stack_id)
    assert updated.status == "UPDATE_COMPLETE"
    assert updated.status_reason == "Stack UPDATE completed successfully"
    assert TIME.match(updated.update_time)
    assert outputs(updated) == physical
    values = {p.parameter_key: p.parameter_value for p in updated.parameters}
    assert values["Name"] == "first" and values["Other"] == "y"

    missing = error_of(
        lambda: client.update_stack(
            ros.UpdateStackRequest(region_id=REGION, stack_id=stack_id, template_body=body)
        )
    )
    assert missing.code == "UserParameterMissing"
    assert "The Parameter (Name) was not provided." in missing.message


def test_resource_progress_and_signal_resource(client) -> None:
    body = template(
        {
            "Handle": HANDLE,
            "Wait": {
                "Type": "ALIYUN::ROS::WaitCondition",
                "Properties": {"Handle": {"Ref": "Handle"}, "Timeout": 600, "Count": 2},
            },
        },
        Outputs={"Data": {"Value": {"Fn::GetAtt": ["Wait", "Data"]}}},
    )
    stack_id = create(client, body, name="signals")

    def waiting() -> object:
        body = get(client, stack_id, show_resource_progress="EnabledIfCreateStack")
        details = body.resource_progress.in_progress_resource_details or []
        return body if details else None

    progress = wait_until(waiting).resource_progress
    assert progress.total_resource_count == 2 and progress.success_resource_count == 1
    assert progress.in_progress_resource_count == 1 and progress.pending_resource_count == 0
    [detail] = progress.in_progress_resource_details
    assert (detail.resource_name, detail.progress_value, detail.progress_target_value) == (
        "Wait",
        0,
        2,
    )
    percent = get(client, stack_id, show_resource_progress="PercentageOnly").resource_progress
    assert percent.stack_operation_progress == 50.0

    for unique in ("one", "two"):
        client.signal_resource(
            ros.SignalResourceRequest(
                region_id=REGION,
                stack_id=stack_id,
                logical_resource_id="Handle",
                status="SUCCESS",
                unique_id=unique,
            )
        )
    done = settle(client, stack_id)
    assert done.status == "CREATE_COMPLETE"
    assert set(json.loads(outputs(done)["Data"])) == {"one", "two"}
    bad = error_of(
        lambda: client.signal_resource(
            ros.SignalResourceRequest(
                region_id=REGION,
                stack_id=stack_id,
                logical_resource_id="Handle",
                status="MAYBE",
                unique_id="x",
            )
        )
    )
    assert bad.code == "InvalidParameter"
