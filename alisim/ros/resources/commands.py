"""`ALIYUN::ECS::RunCommand`, `ALIYUN::ECS::Command` and `ALIYUN::ECS::Invocation` on alisim's
Cloud Assistant: the commands really run, and their TaskCompleted events are published.

With `Sync: true` the resource waits for every instance's final status and fails unless all
are Success (a non-zero exit is `Failed`). Alibaba leaves the default of `Sync` and the shape
of `InvokeResults` undocumented: alisim's `Sync` is false by default (the resource completes
once the command is sent) and `InvokeResults` lists, per instance, `InstanceId`,
`InvocationStatus`, `ExitCode`, `Output` (text), `ErrorCode` and `ErrorInfo`, read when asked.
"""

from __future__ import annotations

import base64
import binascii
import time
from typing import Any

from alisim import ids
from alisim.cloud_assistant.actions import COMMAND_TYPES
from alisim.cloud_assistant.models import Command, Invocation
from alisim.cloud_assistant.service import parameter_names
from alisim.errors import ApiError
from alisim.ros.resources.base import (
    Context,
    ResourceFailed,
    ResourceType,
    boolean,
    integer,
    required_text,
    text,
    text_list,
)
from alisim.ros.template.functions import as_text

INVOCATION_ATTRIBUTES = frozenset({"InvokeId", "InvokeInstances", "InvokeResults"})


def _content(props: dict[str, Any], default_encoding: str) -> bytes:
    raw = required_text(props, "CommandContent")
    encoding = (text(props, "ContentEncoding") or default_encoding).lower()
    if encoding != "base64":
        return raw.encode()
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise ResourceFailed(
            "InvalidCmdContent.Base64",
            "CommandContent is not valid Base64 (set ContentEncoding: PlainText for plain text).",
        ) from None


def _command(ctx: Context, props: dict[str, Any], *, default_encoding: str, keep: bool) -> Command:
    command_type = required_text(props, "Type")
    if command_type not in COMMAND_TYPES:
        raise ResourceFailed(
            "InvalidParameter", f"Type {command_type!r} is not one of {sorted(COMMAND_TYPES)}."
        )
    content = _content(props, default_encoding)
    enable_parameter = boolean(props, "EnableParameter", False)
    return Command(
        command_id=ids.command_id(ctx.cloud.settings.region),
        name=text(props, "Name") or f"ros-{ctx.resource.logical_id}-{int(time.time())}",
        type=command_type,
        content=content,
        description=text(props, "Description", "") or "",
        working_dir=text(props, "WorkingDir", "") or "",
        timeout=integer(props, "Timeout", 60, 1, 86400),
        enable_parameter=enable_parameter,
        parameter_names=parameter_names(content.decode("utf-8", "replace"))
        if enable_parameter
        else [],
        keep=keep,
        tags=ctx.tags(props),
    )


def _parameters(props: dict[str, Any]) -> dict[str, str]:
    value = props.get("Parameters") or {}
    if not isinstance(value, dict):
        raise ResourceFailed("InvalidParameter", "Parameters must be a mapping.")
    return {str(k): as_text(v) for k, v in value.items()}


def _invoke(ctx: Context, command: Command, props: dict[str, Any]) -> Invocation:
    instance_ids = text_list(props, "InstanceIds")
    if not instance_ids:
        raise ResourceFailed(
            "MissingParameter", "The input parameter InstanceIds should be specified."
        )
    try:
        return ctx.cloud.assistant.invoke(
            command,
            instance_ids,
            parameters=_parameters(props),
            timeout=integer(props, "Timeout", command.timeout, 1, 86400),
            working_dir=text(props, "WorkingDir") or command.working_dir,
            username=text(props, "Username", "") or "",
            oss_output_delivery="",
            tags=ctx.tags(props),
        )
    except ApiError as exc:
        raise ResourceFailed(exc.code, exc.message) from None


async def _finish(ctx: Context, invocation: Invocation, sync: bool) -> None:
    ctx.resource.attributes = {
        "InvokeId": invocation.invoke_id,
        "InvokeInstances": list(invocation.instances),
        "CommandId": invocation.command.command_id,
    }
    if not sync:
        return
    instances = list(invocation.instances.values())
    await ctx.cloud.ros.until([invocation.invoke_id], lambda: all(ii.final for ii in instances))
    failed = [ii for ii in instances if ii.status != "Success"]
    if failed:
        details = "; ".join(
            f"{ii.instance_id}: {ii.status}"
            + (f" ({ii.error_code})" if ii.error_code else "")
            + (f", exit code {ii.exit_code}" if ii.exit_code is not None else "")
            for ii in failed[:5]
        )
        more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
        raise ResourceFailed(
            "InvocationFailed",
            f"The invocation {invocation.invoke_id} did not succeed on {len(failed)} of "
            f"{len(instances)} instances: {details}{more}.",
        )


def _results(invocation: Invocation) -> list[dict[str, Any]]:
    return [
        {
            "InstanceId": ii.instance_id,
            "InvocationStatus": ii.status,
            "ExitCode": ii.exit_code,
            "Output": ii.inline_output.decode("utf-8", "replace"),
            "ErrorCode": ii.error_code,
            "ErrorInfo": ii.error_info,
        }
        for ii in invocation.instances.values()
    ]


def _stop(ctx: Context, invocation: Invocation | None) -> None:
    if invocation is not None and not all(ii.final for ii in invocation.instances.values()):
        ctx.cloud.assistant.stop(invocation, [])


class _Invoking(ResourceType):
    attributes = INVOCATION_ATTRIBUTES

    def attribute(self, resource: Any, name: str) -> Any:
        invocation = resource.state
        if name == "InvokeResults" and isinstance(invocation, Invocation):
            return _results(invocation)
        return resource.attributes.get(name)

    async def delete(self, ctx: Context) -> None:
        _stop(ctx, ctx.resource.state)


class RunCommandType(_Invoking):
    """A command made and sent in one step (ECS RunCommand); a change of any property sends
    it again."""

    name = "ALIYUN::ECS::RunCommand"
    attributes = INVOCATION_ATTRIBUTES | {"CommandId"}
    required = ("CommandContent", "InstanceIds", "Type")

    async def create(self, ctx: Context, props: dict[str, Any]) -> None:
        keep = boolean(props, "KeepCommand", False)
        command = _command(ctx, props, default_encoding="PlainText", keep=keep)
        invocation = _invoke(ctx, command, props)
        ctx.cloud.assistant.create_command(command)
        ctx.resource.physical_id = invocation.invoke_id
        ctx.resource.state = invocation
        await _finish(ctx, invocation, boolean(props, "Sync", False))

    async def update(self, ctx: Context, old: dict[str, Any], new: dict[str, Any]) -> None:
        _stop(ctx, ctx.resource.state)
        await self.create(ctx, new)

    async def delete(self, ctx: Context) -> None:
        invocation = ctx.resource.state
        _stop(ctx, invocation)
        if isinstance(invocation, Invocation):
            ctx.cloud.assistant.commands.pop(invocation.command.command_id, None)


class CommandType(ResourceType):
    """A saved command (ECS CreateCommand); its content is Base64 unless `ContentEncoding`
    says PlainText. ECS cannot change a command's content, so any change replaces it."""

    name = "ALIYUN::ECS::Command"
    attributes = frozenset({"CommandId"})
    required = ("Type",)
    replace_on = frozenset({"*"})

    async def create(self, ctx: Context, props: dict[str, Any]) -> None:
        command = ctx.cloud.assistant.create_command(
            _command(ctx, props, default_encoding="Base64", keep=True)
        )
        ctx.resource.physical_id = command.command_id
        ctx.resource.attributes = {"CommandId": command.command_id}

    async def delete(self, ctx: Context) -> None:
        ctx.cloud.assistant.commands.pop(ctx.resource.physical_id, None)


class InvocationType(_Invoking):
    """An invocation of a saved command (ECS InvokeCommand); a change sends a new one."""

    name = "ALIYUN::ECS::Invocation"
    required = ("InstanceIds",)
    replace_on = frozenset({"*"})

    async def create(self, ctx: Context, props: dict[str, Any]) -> None:
        command = self._command(ctx, props)
        invocation = _invoke(ctx, command, props)
        ctx.resource.physical_id = invocation.invoke_id
        ctx.resource.state = invocation
        await _finish(ctx, invocation, boolean(props, "Sync", False))

    @staticmethod
    def _command(ctx: Context, props: dict[str, Any]) -> Command:
        commands = ctx.cloud.assistant.commands
        command_id = text(props, "CommandId")
        if command_id:
            command = commands.get(command_id)
            if command is None or not command.keep:
                raise ResourceFailed(
                    "InvalidCmdId.NotFound", f"The command {command_id} does not exist."
                )
            return command
        name = text(props, "CommandName")
        if not name:
            raise ResourceFailed(
                "MissingParameter", "One of CommandId and CommandName should be specified."
            )
        for command in commands.values():
            if command.keep and command.name == name:
                return command
        raise ResourceFailed("InvalidCmdName.NotFound", f"No command is named {name!r}.")
