"""Cloud Assistant actions (ECS API 2014-05-26), answered in ECS's JSON shapes.

`ACTIONS` is the routing table; dispatch checks `RegionId` before any handler runs.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import json
import time
from typing import TYPE_CHECKING, Any

from alisim import ids
from alisim.cloud_assistant.models import Command, Invocation, InvokeInstance
from alisim.cloud_assistant.service import parameter_names
from alisim.ecs.wire import api_time, instance_ids_required, tag_set, tags_of
from alisim.errors import ApiError, invalid_parameter
from alisim.openapi.paging import paginate
from alisim.openapi.params import Params
from alisim.openapi.registry import ECS, ActionTable

if TYPE_CHECKING:
    from alisim.cloud import Cloud

MAX_INSTANCES_PER_COMMAND = 100
MAX_COMMAND_CONTENT = 24 * 1024  # Base64 bytes, as documented
COMMAND_TYPES = {"RunShellScript", "RunBatScript", "RunPowerShellScript"}


async def describe_cloud_assistant_status(cloud: Cloud, params: Params) -> dict[str, Any]:
    wanted = params.list("InstanceId")
    if len(wanted) > 50:
        raise invalid_parameter("InstanceId", "At most 50 instances may be given per call.")
    instances = (
        [cloud.instances.instances[i] for i in wanted if i in cloud.instances.instances]
        if wanted
        else list(cloud.instances.instances.values())
    )
    os_type = params.get("OSType")
    if os_type:
        instances = [i for i in instances if i.os_type == os_type.lower()]
    page, paging = paginate(instances, params, max_size=50)
    active = {
        i.instance_id: sum(
            1
            for inv in cloud.assistant.invocations.values()
            if (ii := inv.instances.get(i.instance_id)) is not None and not ii.final
        )
        for i in page
    }
    return {
        "InstanceCloudAssistantStatusSet": {
            "InstanceCloudAssistantStatus": [
                {
                    "InstanceId": i.instance_id,
                    "CloudAssistantStatus": "true" if i.agent_online else "false",
                    "CloudAssistantVersion": i.agent_version,
                    "LastHeartbeatTime": api_time(i.last_heartbeat_at),
                    "ActiveTaskCount": active[i.instance_id],
                    "InvocationCount": i.invocation_count,
                    "LastInvokedTime": api_time(i.last_invoked_at),
                    "OSType": "Windows" if i.is_windows else "Linux",
                    "SupportSessionManager": True,
                }
                for i in page
            ]
        },
        **paging,
    }


def _decode_content(params: Params, default_encoding: str) -> bytes:
    raw = params.require("CommandContent")
    encoding = (params.get("ContentEncoding") or default_encoding).lower()
    if encoding not in ("base64", "plaintext"):
        # Documented: an invalid value is treated as the action's default encoding.
        encoding = default_encoding.lower()
    if encoding == "base64":
        if len(raw) > MAX_COMMAND_CONTENT:
            raise ApiError(
                "CmdContent.ExceedLimit", "The Base64-encoded command content exceeds 24 KB.", 400
            )
        try:
            return base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(
                "InvalidCmdContent.Base64",
                "CommandContent is not valid Base64 (set ContentEncoding=PlainText "
                "for plain text).",
                400,
            ) from None
    content = raw.encode()
    if len(base64.b64encode(content)) > MAX_COMMAND_CONTENT:
        raise ApiError(
            "CmdContent.ExceedLimit", "The Base64-encoded command content exceeds 24 KB.", 400
        )
    return content


def _command_type(params: Params) -> str:
    command_type = params.require("Type")
    if command_type not in COMMAND_TYPES:
        raise invalid_parameter("Type", f"Use one of {sorted(COMMAND_TYPES)}.")
    return command_type


def _timeout(params: Params, default: int) -> int:
    return params.int("Timeout", default, minimum=1, maximum=86400) or default


def _parameters(params: Params) -> dict[str, str]:
    value = params.json("Parameters")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid_parameter("Parameters", "It must be a JSON object.")
    if len(value) > 20:
        raise invalid_parameter("Parameters", "At most 20 parameters may be given.")
    return {str(k): "" if v is None else str(v) for k, v in value.items()}


def _target_instances(params: Params) -> list[str]:
    wanted = params.list("InstanceId")
    if not wanted:
        raise instance_ids_required()
    if len(wanted) > MAX_INSTANCES_PER_COMMAND:
        raise ApiError(
            "InvalidParameter.InstanceIds",
            f"At most {MAX_INSTANCES_PER_COMMAND} instances may be given per call; "
            "split the batch.",
            400,
        )
    return wanted


def _repeat_mode(params: Params) -> str:
    mode = params.get("RepeatMode", "Once") or "Once"
    if mode != "Once":
        raise ApiError(
            "InvalidParameter.RepeatMode",
            f"alisim runs commands once only; RepeatMode {mode} is not supported.",
            400,
        )
    return mode


async def run_command(cloud: Cloud, params: Params) -> dict[str, Any]:
    cached = cloud.idempotency.lookup("RunCommand", params)
    if cached is not None:
        return cached
    command_type = _command_type(params)
    content = _decode_content(params, "PlainText")
    instance_ids = _target_instances(params)
    _repeat_mode(params)
    enable_parameter = params.bool("EnableParameter")
    command = Command(
        command_id=ids.command_id(cloud.settings.region),
        name=params.get("Name") or f"command-{int(time.time())}",
        type=command_type,
        content=content,
        description=params.get("Description", "") or "",
        working_dir=params.get("WorkingDir", "") or "",
        timeout=_timeout(params, 60),
        enable_parameter=enable_parameter,
        parameter_names=parameter_names(content.decode("utf-8", "replace"))
        if enable_parameter
        else [],
        keep=params.bool("KeepCommand"),
        tags=tags_of(params),
    )
    invocation = cloud.assistant.invoke(
        command,
        instance_ids,
        parameters=_parameters(params),
        timeout=command.timeout,
        working_dir=command.working_dir,
        username=params.get("Username", "") or "",
        oss_output_delivery=params.get("OssOutputDelivery", "") or "",
        tags=command.tags,
    )
    cloud.assistant.create_command(command)
    result = {"CommandId": command.command_id, "InvokeId": invocation.invoke_id}
    cloud.idempotency.store("RunCommand", params, result)
    return result


async def create_command(cloud: Cloud, params: Params) -> dict[str, Any]:
    command_type = _command_type(params)
    content = _decode_content(params, "Base64")
    enable_parameter = params.bool("EnableParameter")
    command = cloud.assistant.create_command(
        Command(
            command_id=ids.command_id(cloud.settings.region),
            name=params.require("Name"),
            type=command_type,
            content=content,
            description=params.get("Description", "") or "",
            working_dir=params.get("WorkingDir", "") or "",
            timeout=_timeout(params, 60),
            enable_parameter=enable_parameter,
            parameter_names=parameter_names(content.decode("utf-8", "replace"))
            if enable_parameter
            else [],
            tags=tags_of(params),
        )
    )
    return {"CommandId": command.command_id}


async def invoke_command(cloud: Cloud, params: Params) -> dict[str, Any]:
    cached = cloud.idempotency.lookup("InvokeCommand", params)
    if cached is not None:
        return cached
    command = cloud.assistant.get_command(params.require("CommandId"))
    instance_ids = _target_instances(params)
    _repeat_mode(params)
    invocation = cloud.assistant.invoke(
        command,
        instance_ids,
        parameters=_parameters(params),
        timeout=_timeout(params, command.timeout),
        working_dir=params.get("WorkingDir") or command.working_dir,
        username=params.get("Username", "") or "",
        oss_output_delivery=params.get("OssOutputDelivery", "") or "",
        tags=tags_of(params),
    )
    result = {"InvokeId": invocation.invoke_id}
    cloud.idempotency.store("InvokeCommand", params, result)
    return result


def _encoded(content: bytes, params: Params) -> str:
    """`CommandContent` and `Output` as the request's `ContentEncoding` asks (Base64 default)."""
    if (params.get("ContentEncoding") or "Base64").lower() == "plaintext":
        return content.decode("utf-8", "replace")
    return base64.b64encode(content).decode()


def _command_view(command: Command, params: Params) -> dict[str, Any]:
    return {
        "CommandId": command.command_id,
        "Name": command.name,
        "Type": command.type,
        "Description": command.description,
        "CommandContent": _encoded(command.content, params),
        "WorkingDir": command.working_dir,
        "Timeout": command.timeout,
        "EnableParameter": command.enable_parameter,
        "ParameterNames": {"ParameterName": command.parameter_names},
        "CreationTime": api_time(command.created_at),
        "InvokeTimes": command.invoke_times,
        "Latest": True,
        "Version": 1,
        "Provider": "",
        "Category": "",
        "Tags": tag_set(command.tags),
    }


async def describe_commands(cloud: Cloud, params: Params) -> dict[str, Any]:
    commands = [c for c in cloud.assistant.commands.values() if c.keep]
    if command_id := params.get("CommandId"):
        commands = [c for c in commands if c.command_id == command_id]
    if name := params.get("Name"):
        commands = [c for c in commands if fnmatch.fnmatchcase(c.name, name)]
    if command_type := params.get("Type"):
        commands = [c for c in commands if c.type == command_type]
    page, paging = paginate(commands, params, max_size=50)
    return {"Commands": {"Command": [_command_view(c, params) for c in page]}, **paging}


async def delete_command(cloud: Cloud, params: Params) -> dict[str, Any]:
    cloud.assistant.delete_command(params.require("CommandId"))
    return {}


def _result_view(
    invocation: Invocation, ii: InvokeInstance, params: Params, *, include_output: bool = True
) -> dict[str, Any]:
    view: dict[str, Any] = {
        "InstanceId": ii.instance_id,
        "InvocationStatus": ii.status,
        "ExitCode": ii.exit_code if ii.exit_code is not None else 0,
        "Dropped": ii.dropped,
        "StartTime": api_time(ii.start_time),
        "StopTime": api_time(ii.stop_time),
        "ErrorCode": ii.error_code,
        "ErrorInfo": ii.error_info,
        "Repeats": ii.repeats,
        "OssOutputDelivery": invocation.oss_output_delivery,
        "OssOutputStatus": ii.oss_status,
        "OssOutputUri": ii.oss_uri,
        "OssOutputErrorCode": ii.oss_error_code,
        "OssOutputErrorInfo": ii.oss_error_info,
    }
    if include_output:
        view["Output"] = _encoded(ii.inline_output, params)
    return view


async def describe_invocations(cloud: Cloud, params: Params) -> dict[str, Any]:
    invocations = list(cloud.assistant.invocations.values())
    invocations.reverse()
    if invoke_id := params.get("InvokeId"):
        invocations = [i for i in invocations if i.invoke_id == invoke_id]
    if command_id := params.get("CommandId"):
        invocations = [i for i in invocations if i.command.command_id == command_id]
    if instance_id := params.get("InstanceId"):
        invocations = [i for i in invocations if instance_id in i.instances]
    if status := params.get("InvokeStatus"):
        invocations = [i for i in invocations if status in (i.status, i.invoke_status)]
    if command_type := params.get("CommandType"):
        invocations = [i for i in invocations if i.command.type == command_type]
    for tag in params.objects("Tag"):
        invocations = [
            i
            for i in invocations
            if tag.get("Key") in i.tags
            and ("Value" not in tag or i.tags[tag["Key"]] == tag["Value"])
        ]
    include_output = params.bool("IncludeOutput")
    page, paging = paginate(invocations, params, max_size=50)
    views = []
    for inv in page:
        views.append(
            {
                "InvokeId": inv.invoke_id,
                "CommandId": inv.command.command_id,
                "CommandName": inv.command.name,
                "CommandType": inv.command.type,
                "CommandContent": _encoded(inv.command.content, params),
                "CommandDescription": inv.command.description,
                "InvocationStatus": inv.status,
                "InvokeStatus": inv.invoke_status,
                "Parameters": json.dumps(inv.parameters),
                "RepeatMode": inv.repeat_mode,
                "Timed": False,
                "Frequency": "",
                "Timeout": inv.timeout,
                "WorkingDir": inv.working_dir,
                "Username": inv.username,
                "CreationTime": api_time(inv.created_at),
                "OssOutputDelivery": inv.oss_output_delivery,
                "Tags": tag_set(inv.tags),
                "InvokeInstances": {
                    "InvokeInstance": [
                        {
                            **_result_view(inv, ii, params, include_output=include_output),
                            "InstanceInvokeStatus": ii.record_status,
                            "CreationTime": api_time(ii.created_at),
                            "FinishTime": api_time(ii.finish_time),
                            "UpdateTime": api_time(ii.update_time),
                            "Timed": False,
                        }
                        for ii in inv.instances.values()
                    ]
                },
            }
        )
    return {"Invocations": {"Invocation": views}, **paging}


async def describe_invocation_results(cloud: Cloud, params: Params) -> dict[str, Any]:
    invocations = list(cloud.assistant.invocations.values())
    if invoke_id := params.get("InvokeId"):
        invocations = [cloud.assistant.get_invocation(invoke_id)]
    if command_id := params.get("CommandId"):
        invocations = [i for i in invocations if i.command.command_id == command_id]
    instance_id = params.get("InstanceId")
    record_status = params.get("InvokeRecordStatus")
    rows: list[tuple[Invocation, InvokeInstance]] = [
        (inv, ii)
        for inv in invocations
        for ii in inv.instances.values()
        if (instance_id is None or ii.instance_id == instance_id)
        and (record_status is None or record_status in (ii.record_status, ii.status))
    ]
    page, paging = paginate(rows, params, max_size=50)
    return {
        "Invocation": {
            "InvocationResults": {
                "InvocationResult": [
                    {
                        **_result_view(inv, ii, params),
                        "CommandId": inv.command.command_id,
                        "InvokeId": inv.invoke_id,
                        "InvokeRecordStatus": ii.record_status,
                        "FinishedTime": api_time(ii.finish_time),
                        "Username": inv.username,
                        "Tags": tag_set(inv.tags),
                    }
                    for inv, ii in page
                ]
            },
            **paging,
        }
    }


async def stop_invocation(cloud: Cloud, params: Params) -> dict[str, Any]:
    invocation = cloud.assistant.get_invocation(params.require("InvokeId"))
    cloud.assistant.stop(invocation, params.list("InstanceId"))
    return {}


ACTIONS = ActionTable(
    ECS,
    {
        "DescribeCloudAssistantStatus": describe_cloud_assistant_status,
        "RunCommand": run_command,
        "CreateCommand": create_command,
        "InvokeCommand": invoke_command,
        "DescribeCommands": describe_commands,
        "DeleteCommand": delete_command,
        "DescribeInvocations": describe_invocations,
        "DescribeInvocationResults": describe_invocation_results,
        "StopInvocation": stop_invocation,
    },
)
