"""pydantic models of what Alibaba Cloud pushes: lenient on extra fields and on the
documented string-typed numbers, strict on what the mapping needs."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NonEmpty = Field(min_length=1, max_length=512)


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class CloudEvent(_Lenient):
    """A CloudEvents 1.0 event as an EventBridge HTTP target receives it."""

    specversion: str = NonEmpty
    id: str = NonEmpty
    source: str = NonEmpty
    type: str = NonEmpty
    subject: str | None = None
    time: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    aliyunaccountid: str | None = None
    aliyunregionid: str | None = None

    @field_validator("specversion")
    @classmethod
    def _version(cls, value: str) -> str:
        if not value.startswith("1."):
            raise ValueError(f"specversion {value!r} is not CloudEvents 1.x")
        return value

    @field_validator("data", mode="before")
    @classmethod
    def _data(cls, value: Any) -> Any:
        return {} if value is None else value


class CloudMonitorEvent(_Lenient):
    """A CloudMonitor system-event notification. ECS writes its keys in camelCase
    (`name`, `regionId`, `content`); ROS capitalises them (`Name`, `RegionId`, `Content`)."""

    id: str | None = None
    name: str = NonEmpty
    product: str = NonEmpty
    region_id: str | None = Field(default=None, alias="regionId")
    resource_id: str | None = Field(default=None, alias="resourceId")
    user_id: str | None = Field(default=None, alias="userId")
    event_time: str | int | None = Field(default=None, alias="eventTime")
    time: str | int | None = None
    level: str | None = None
    content: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _camel_case(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        return {(k[:1].lower() + k[1:] if isinstance(k, str) else k): v for k, v in value.items()}


def _as_int(value: Any) -> Any:
    if isinstance(value, str):
        stripped = value.strip()
        if stripped in ("", "-"):
            return None
        return int(stripped)
    return value


class FirstHeartbeatData(_Lenient):
    vm_name: str = Field(alias="vmName", min_length=1)
    region: str | None = None
    azone: str | None = None
    agent_version: str | None = Field(default=None, alias="agentVersion")
    uptime: int | None = None

    _uptime = field_validator("uptime", mode="before")(lambda cls, v: _as_int(v))


class TaskCompletedData(_Lenient):
    instance_id: str = Field(alias="instanceId", min_length=1)
    invoke_id: str = Field(alias="invokeId", min_length=1)
    command_id: str | None = Field(default=None, alias="commandId")
    command_name: str | None = Field(default=None, alias="commandName")
    invocation_status: str = Field(alias="invocationStatus", min_length=1)
    exit_code: int | None = Field(default=None, alias="exitCode")
    repeats: int | None = None
    start_time: str | None = Field(default=None, alias="startTime")
    finish_time: str | None = Field(default=None, alias="finishTime")
    error_code: str | None = Field(default=None, alias="errorCode")
    error_desc: str | None = Field(default=None, alias="errorDesc")

    _ints = field_validator("exit_code", "repeats", mode="before")(lambda cls, v: _as_int(v))


class OutputDeliveredData(_Lenient):
    instance_id: str = Field(alias="instanceId", min_length=1)
    invoke_id: str = Field(alias="invokeId", min_length=1)
    status: str = Field(min_length=1)
    oss_output_uri: str | None = Field(default=None, alias="ossOutputUri")
    error_code: str | None = Field(default=None, alias="errorCode")
    error_info: str | None = Field(default=None, alias="errorInfo")


class InstanceStateData(_Lenient):
    resource_id: str = Field(alias="resourceId", min_length=1)
    state: str = Field(min_length=1)
    resource_type: str | None = Field(default=None, alias="resourceType")


class StackStatusData(_Lenient):
    stack_id: str = Field(alias="stackId", min_length=1)
    stack_name: str | None = Field(default=None, alias="stackName")
    status: str = Field(min_length=1)
    status_reason: str | None = Field(default=None, alias="statusReason")


class StackNotification(_Lenient):
    """A ROS NotificationURLs POST body, also the `data` alisim gives
    `ros:StackStateChange:*` events (Alibaba does not document theirs)."""

    stack_id: str = Field(alias="StackId", min_length=1)
    stack_name: str | None = Field(default=None, alias="StackName")
    status: str = Field(alias="Status", min_length=1)
    status_reason: str | None = Field(default=None, alias="StatusReason")
    region_id: str | None = Field(default=None, alias="RegionId")
    outputs: list[Any] | None = Field(default=None, alias="Outputs")
