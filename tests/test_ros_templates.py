"""Every template feature alisim supports, through the official ROS SDK: parameter types and
constraints, conditions, mappings, resources with DependsOn, Condition, DeletionPolicy and
Count, outputs, the intrinsic functions and pseudo-parameters, JSON and YAML; and templates
outside the subset refused with a code and a message naming what is wrong."""

from __future__ import annotations

import base64
import json

import oss2
import pytest
from alibabacloud_ros20190910 import models as ros
from alibabacloud_tea_openapi.exceptions import ClientException

from tests.ros_support import (
    HANDLE,
    REGION,
    VERSION,
    create,
    events,
    get,
    gone,
    make_ros_client,
    outputs,
    resource_statuses,
    set_faults,
    settle,
    template,
)


@pytest.fixture
def client(sim, access_key):
    return make_ros_client(sim, access_key)


def refused(client, body: str, parameters: dict[str, str] | None = None) -> ClientException:
    with pytest.raises(ClientException) as info:
        create(client, body, name="refused", parameters=parameters)
    assert info.value.status_code == 400
    return info.value


def stack_outputs(client, body: str, parameters: dict[str, str] | None = None, name: str = "t"):
    stack = settle(client, create(client, body, name=name, parameters=parameters))
    assert stack.status == "CREATE_COMPLETE", stack.status_reason
    return outputs(stack)


def test_parameter_types_defaults_and_no_echo(client) -> None:
    body = template(
        {"H": HANDLE},
        Parameters={
            "Name": {"Type": "String", "Default": "web"},
            "Size": {"Type": "Number", "MinValue": 1, "MaxValue": 10},
            "Flag": {"Type": "Boolean", "Default": "true"},
            "Zones": {"Type": "CommaDelimitedList", "Default": "a,b"},
            "Config": {"Type": "Json", "Default": {"other": 1}},
            "Password": {"Type": "String", "NoEcho": True},
        },
        Outputs={
            "Name": {"Value": {"Ref": "Name"}},
            "Size": {"Value": {"Ref": "Size"}},
            "Flag": {"Value": {"Ref": "Flag"}},
            "Zones": {"Value": {"Ref": "Zones"}},
            "Second": {"Value": {"Fn::Select": [1, {"Ref": "Zones"}]}},
            "Config": {"Value": {"Ref": "Config"}},
        },
    )
    given = {"Size": "4", "Password": "hunter2", "Config": '{"k": [1, 2]}'}
    stack_id = create(client, body, parameters=given)
    stack = settle(client, stack_id)
    assert outputs(stack) == {
        "Name": "web",
        "Size": 4,
        "Flag": True,
        "Zones": ["a", "b"],
        "Second": "b",
        "Config": {"k": [1, 2]},
    }
    shown = {p.parameter_key: p.parameter_value for p in stack.parameters}
    assert shown["Password"] == "****" and shown["Size"] == "4" and shown["Flag"] == "true"
    assert "hunter2" not in json.dumps(stack.to_map())


@pytest.mark.parametrize(
    ("declaration", "value", "says"),
    [
        ({"Type": "String", "AllowedValues": ["a", "b"]}, "c", "allowed values"),
        ({"Type": "String", "AllowedPattern": "[a-z]+"}, "ABC", "does not match"),
        ({"Type": "String", "MinLength": 3}, "ab", "at least 3"),
        ({"Type": "String", "MaxLength": 2}, "abc", "at most 2"),
        ({"Type": "Number", "MinValue": 5}, "4", "less than the minimum 5"),
        ({"Type": "Number", "MaxValue": 5}, "6", "more than the maximum 5"),
        ({"Type": "Number"}, "four", "is not a number"),
        ({"Type": "Boolean"}, "maybe", "not true or false"),
        ({"Type": "Json"}, "[1", "JSON object or list"),
        (
            {"Type": "String", "AllowedValues": ["a"], "ConstraintDescription": "only a"},
            "b",
            "only a",
        ),
    ],
)
def test_bad_parameter_values_fail_validation(client, declaration, value, says) -> None:
    body = template({"H": HANDLE}, Parameters={"P": declaration})
    error = refused(client, body, {"P": value})
    assert error.code == "StackValidationFailed"
    assert "Parameter 'P' is invalid" in error.message and says in error.message


def test_missing_unknown_and_bad_default_parameters(client) -> None:
    body = template({"H": HANDLE}, Parameters={"P": {"Type": "String"}})
    missing = refused(client, body)
    assert missing.code == "UserParameterMissing" and "(P)" in missing.message
    unknown = refused(client, body, {"P": "x", "Q": "y"})
    assert unknown.code == "UnknownUserParameter" and "(Q)" in unknown.message
    bad_default = template(
        {"H": HANDLE}, Parameters={"P": {"Type": "Number", "Default": 9, "MaxValue": 3}}
    )
    with pytest.raises(ClientException) as info:
        client.validate_template(ros.ValidateTemplateRequest(template_body=bad_default))
    assert info.value.code == "StackValidationFailed"


def test_conditions_mappings_and_functions(client) -> None:
    body = template(
        {
            "Always": HANDLE,
            "OnlyInProd": {**HANDLE, "Condition": "Prod"},
        },
        Parameters={"Env": {"Type": "String", "Default": "dev", "AllowedValues": ["dev", "prod"]}},
        Mappings={"Sizes": {"dev": {"Type": "ecs.g7.large"}, "prod": {"Type": "ecs.g7.4xlarge"}}},
        Conditions={
            "Prod": {"Fn::Equals": [{"Ref": "Env"}, "prod"]},
            "Dev": {"Fn::Not": [{"Condition": "Prod"}]},
            "Both": {"Fn::And": [{"Condition": "Dev"}, {"Fn::Equals": ["a", "a"]}]},
            "Either": {"Fn::Or": [{"Condition": "Prod"}, {"Fn::Equals": [1, "1"]}]},
        },
        Outputs={
            "Size": {"Value": {"Fn::FindInMap": ["Sizes", {"Ref": "Env"}, "Type"]}},
            "Mode": {"Value": {"Fn::If": ["Prod", "big", "small"]}},
            "Both": {"Value": {"Fn::If": ["Both", "yes", "no"]}},
            "Either": {"Value": {"Fn::If": ["Either", "yes", "no"]}},
            "ProdOnly": {"Value": {"Ref": "OnlyInProd"}, "Condition": "Prod"},
            "Join": {"Value": {"Fn::Join": ["-", ["a", 1, True, {"Ref": "Env"}]]}},
            "Sub": {"Value": {"Fn::Sub": "${Env}/${ALIYUN::Region}/${!Literal}"}},
            "SubMap": {"Value": {"Fn::Sub": ["${x}-${Env}", {"x": {"Ref": "ALIYUN::StackName"}}]}},
            "SubAttr": {"Value": {"Fn::Sub": "${Always.URL}"}},
            "Select": {"Value": {"Fn::Select": ["1", ["a", "b", "c"]]}},
            "SelectMap": {"Value": {"Fn::Select": ["k", {"k": "v"}]}},
            "Split": {"Value": {"Fn::Split": [",", "a,b,c"]}},
            "Base64": {"Value": {"Fn::Base64Encode": "hello"}},
            "Zones": {"Value": {"Fn::GetAZs": {"Ref": "ALIYUN::Region"}}},
            "Str": {"Value": {"Fn::Str": 42}},
            "Replace": {"Value": {"Fn::Replace": [{"$a": "A"}, "x-$a"]}},
            "Length": {"Value": {"Fn::Length": [1, 2, 3]}},
            "Account": {"Value": {"Ref": "ALIYUN::AccountId"}},
            "StackId": {"Value": {"Ref": "ALIYUN::StackId"}},
            "Url": {"Value": {"Fn::GetAtt": ["Always", "URL"]}},
        },
    )
    stack_id = create(client, body, name="fns")
    stack = settle(client, stack_id)
    found = outputs(stack)
    assert found["Size"] == "ecs.g7.large" and found["Mode"] == "small"
    assert found["Both"] == "yes" and found["Either"] == "yes"
    assert "ProdOnly" not in found
    assert found["Join"] == "a-1-true-dev"
    assert found["Sub"] == f"dev/{REGION}/${{Literal}}"
    assert found["SubMap"] == "fns-dev"
    assert found["SubAttr"] == found["Url"] and "/_ros/waitcondition?" in found["Url"]
    assert found["Select"] == "b" and found["SelectMap"] == "v"
    assert found["Split"] == ["a", "b", "c"]
    assert base64.b64decode(found["Base64"]) == b"hello"
    assert found["Zones"][0] == f"{REGION}-k"
    assert found["Str"] == "42" and found["Replace"] == "x-A" and found["Length"] == 3
    assert found["StackId"] == stack_id and found["Account"].isdigit()
    assert set(resource_statuses(client, stack_id)) == {"Always"}

    prod = settle(client, create(client, body, name="prod", parameters={"Env": "prod"}))
    assert set(resource_statuses(client, prod.stack_id)) == {"Always", "OnlyInProd"}
    assert outputs(prod)["ProdOnly"] and outputs(prod)["Size"] == "ecs.g7.4xlarge"


def test_count_index_no_value_and_depends_on(client, sim) -> None:
    slow = [{"logical_id": n, "delay_seconds": 0.05, "count": 1} for n in ("First", "Nets")]
    set_faults(sim, {"ros": slow})
    body = template(
        {
            "First": HANDLE,
            "Nets": {
                "Type": "ALIYUN::ECS::VPC",
                "Count": {"Ref": "N"},
                "DependsOn": "First",
                "Properties": {
                    "VpcName": {"Fn::Sub": "net-${ALIYUN::Index}"},
                    "Description": {"Ref": "ALIYUN::NoValue"},
                },
            },
            "Last": {**HANDLE, "DependsOn": ["Nets"]},
        },
        Parameters={"N": {"Type": "Number", "Default": 3}},
        Outputs={
            "Ids": {"Value": {"Ref": "Nets"}},
            "Names": {"Value": {"Fn::GetAtt": ["Nets", "VpcName"]}},
        },
    )
    stack_id = create(client, body, name="count")
    found = outputs(settle(client, stack_id))
    assert found["Names"] == ["net-0", "net-1", "net-2"]
    assert len(found["Ids"]) == 3 and all(i.startswith("vpc-") for i in found["Ids"])
    history = [(e.logical_resource_id, e.status) for e in events(client, stack_id)]
    first_done = history.index(("First", "CREATE_COMPLETE"))
    last_start = history.index(("Last", "CREATE_IN_PROGRESS"))
    for n in range(3):
        assert first_done < history.index((f"Nets[{n}]", "CREATE_IN_PROGRESS"))
        assert history.index((f"Nets[{n}]", "CREATE_COMPLETE")) < last_start
    preview = client.preview_stack(
        ros.PreviewStackRequest(region_id=REGION, stack_name="p", template_body=body)
    ).body.stack
    props = {r.logical_resource_id: r.properties for r in preview.resources}
    assert props["Nets[1]"] == {"VpcName": "net-1"}
    zero = settle(client, create(client, body, name="zero", parameters={"N": "0"}))
    assert outputs(zero)["Ids"] == []


def test_deletion_policy_retain_keeps_the_bucket(client, sim, access_key) -> None:
    body = template(
        {
            "Kept": {
                "Type": "ALIYUN::OSS::Bucket",
                "DeletionPolicy": "Retain",
                "Properties": {"BucketName": "kept-bucket"},
            },
            "Gone": {"Type": "ALIYUN::OSS::Bucket", "Properties": {"BucketName": "gone-bucket"}},
        }
    )
    stack_id = settle(client, create(client, body)).stack_id
    client.delete_stack(ros.DeleteStackRequest(region_id=REGION, stack_id=stack_id))
    gone(client, stack_id)
    service = oss2.Service(oss2.AuthV4(*access_key), sim.url, region=REGION)
    assert [b.name for b in service.list_buckets().buckets] == ["kept-bucket"]


def test_yaml_with_short_tags(client) -> None:
    body = f"""
ROSTemplateFormatVersion: {VERSION}
Description: yaml
Parameters:
  Env:
    Type: String
    Default: dev
Conditions:
  IsDev: !Equals [!Ref Env, dev]
Resources:
  Handle:
    Type: ALIYUN::ROS::WaitConditionHandle
  Net:
    Type: ALIYUN::ECS::VPC
    Properties:
      VpcName: !Join ['-', [!Ref Env, !Select [0, !Split [',', 'x,y']]]]
Outputs:
  Name:
    Value: !GetAtt Net.VpcName
  Sub:
    Value: !Sub '${{Env}}-${{Handle.URL}}'
  If:
    Value: !If [IsDev, !Base64Encode 'a', 'b']
  Zone:
    Value: !Select [0, !GetAZs '']
"""
    found = stack_outputs(client, body)
    assert found["Name"] == "dev-x"
    assert found["Sub"].startswith("dev-http://")
    assert found["If"] == "YQ=="
    assert found["Zone"] == f"{REGION}-k"


@pytest.mark.parametrize(
    ("change", "code", "says"),
    [
        (
            {"Resources": {"F": {**HANDLE, "Properties": {"X": {"Fn::Jq": ["First", "."]}}}}},
            "StackValidationFailed",
            "Fn::Jq",
        ),
        (
            {"Resources": {"D": {"Type": "ALIYUN::RDS::DBInstance"}}},
            "StackValidationFailed",
            "ALIYUN::RDS::DBInstance",
        ),
        ({"Rules": {}}, "StackValidationFailed", "Rules"),
        ({"Oops": {}}, "InvalidTemplateSection", "Oops"),
        ({"ROSTemplateFormatVersion": "2010-09-09"}, "InvalidTemplateVersion", "2010-09-09"),
        ({"Outputs": {"O": {"Value": {"Ref": "Nowhere"}}}}, "InvalidTemplateReference", "Nowhere"),
        (
            {"Outputs": {"O": {"Value": {"Fn::GetAtt": ["H", "Nope"]}}}},
            "InvalidTemplateAttribute",
            "(H Nope)",
        ),
        (
            {"Resources": {"A": {**HANDLE, "DependsOn": "B"}, "B": {**HANDLE, "DependsOn": "A"}}},
            "CircularDependency",
            "A -> B -> A",
        ),
        ({"Resources": {"H": {**HANDLE, "UpdatePolicy": {}}}}, "InvalidSchema", "UpdatePolicy"),
        (
            {"Resources": {"V": {"Type": "ALIYUN::ECS::VSwitch", "Properties": {"VpcId": "v"}}}},
            "StackValidationFailed",
            "CidrBlock",
        ),
        (
            {"Parameters": {"P": {"Type": "ALIYUN::OOS::Parameter::Value"}}},
            "StackValidationFailed",
            "ALIYUN::OOS::Parameter::Value",
        ),
        (
            {"Resources": {"H": {**HANDLE, "Condition": "Missing"}}},
            "StackValidationFailed",
            "Missing",
        ),
    ],
)
def test_templates_outside_the_subset_are_refused(client, change, code, says) -> None:
    document = {"ROSTemplateFormatVersion": VERSION, "Resources": {"H": HANDLE}}
    for key, value in change.items():
        if key == "Resources":
            document["Resources"] = {**document["Resources"], **value}
        else:
            document[key] = value
    body = json.dumps(document)
    error = refused(client, body)
    assert error.code == code and says in error.message
    with pytest.raises(ClientException) as info:
        client.validate_template(ros.ValidateTemplateRequest(region_id=REGION, template_body=body))
    assert info.value.code == code


def test_malformed_templates(client) -> None:
    assert refused(client, '{"ROSTemplateFormatVersion": ').code == "StackValidationFailed"
    assert "YAML not well-formed" in refused(client, "a: [b").message
    assert refused(client, "[1, 2]").code == "StackValidationFailed"
    assert refused(client, json.dumps({"Resources": {}})).code == "InvalidTemplateVersion"


def test_runtime_function_errors_fail_the_resource(client) -> None:
    body = template(
        {
            "Net": {
                "Type": "ALIYUN::ECS::VPC",
                "Properties": {"VpcName": {"Fn::Select": [5, {"Ref": "Names"}]}},
            }
        },
        Parameters={"Names": {"Type": "CommaDelimitedList", "Default": "a,b"}},
    )
    stack = settle(client, create(client, body, disable_rollback=True))
    assert stack.status == "CREATE_FAILED"
    assert "the index 5 is outside a list of 2" in stack.status_reason
    info = get(client, stack.stack_id).operation_info
    assert (info.logical_resource_id, info.code) == ("Net", "StackValidationFailed")
