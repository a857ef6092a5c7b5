"""Contract 1: one Alibaba event in, one Prefect event out.

Names keep Alibaba's vocabulary; the id is a UUIDv5 of the source event id, so a redelivered
event is the same Prefect event; `occurred` is the time of receipt (Prefect's live stream hides
events that look old) and the source's own time stays in the payload. Names, resource ids and
labels are bounded in length (`names.bounded`); the full type stays in `payload.acs.type`.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ValidationError

from alicloud_runbooks.events import names
from alicloud_runbooks.events.models import (
    CloudEvent,
    CloudMonitorEvent,
    FirstHeartbeatData,
    InstanceStateData,
    OutputDeliveredData,
    StackNotification,
    StackStatusData,
    TaskCompletedData,
)

RESOURCE_NAME = "prefect.resource.name"
EVENT_ID_NAMESPACE = uuid.UUID("6f1c1e0a-3b1e-5d3a-9a57-0a11baba0001")
_ARN = re.compile(r"^acs:(?P<service>[a-z0-9\-]+):[^:]*:[^:]*:(?P<type>[A-Za-z\-]+)/(?P<id>.+)$")


class MappingError(ValueError):
    """The event lacks what the mapping needs; the message says what."""


def prefect_event_id(source_event_id: str) -> str:
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, source_event_id))


def _validate(model: type[BaseModel], data: dict[str, Any], what: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or what}: {e['msg']}" for e in exc.errors()
        )
        raise MappingError(f"{what}: {problems}") from None


def _resource(
    resource_id: str,
    region: str | None,
    account: str | None,
    name: str | None = None,
    **labels: str | None,
) -> dict[str, str]:
    """`name` (`prefect.resource.name`) is what the UI shows for the resource: the instance
    id, the stack's name."""
    resource = {"prefect.resource.id": resource_id}
    if name:
        resource[RESOURCE_NAME] = name
    if region:
        resource[names.REGION_LABEL] = region
    if account:
        resource[names.ACCOUNT_LABEL] = account
    resource.update({k: str(v) for k, v in labels.items() if v is not None})
    return {k: names.bounded(v, names.MAX_LABEL_LENGTH) for k, v in resource.items()}


def _related(resource_id: str, role: str) -> dict[str, str]:
    return {
        "prefect.resource.id": names.bounded(resource_id, names.MAX_LABEL_LENGTH),
        "prefect.resource.role": role,
    }


def _unknown_resource(product: str, arn: str | None, fallback: str) -> str:
    if arn and (m := _ARN.match(arn)):
        return f"acs.{m['service']}.{m['type'].lower()}.{m['id']}"
    return f"acs.{product}.event.{fallback}"


def _as_name(product: str, kind: str) -> str:
    parts = kind.split(":")
    if parts[0].lower() == product.lower() and len(parts) > 1:
        parts = parts[1:]
    name = f"acs.{product.lower()}." + ".".join(p for p in parts if p)
    return names.bounded(name, names.MAX_NAME_LENGTH)


Shaper = Callable[
    [dict[str, Any], str | None, str | None], tuple[str, dict[str, str], list[dict[str, str]]]
]


def _first_heartbeat(data: dict[str, Any], region: str | None, account: str | None) -> Any:
    d = _validate(FirstHeartbeatData, data, "FirstHeartbeat data")
    return (
        names.FIRST_HEARTBEAT,
        _resource(names.instance_resource(d.vm_name), region or d.region, account, d.vm_name),
        [],
    )


def _task_completed(data: dict[str, Any], region: str | None, account: str | None) -> Any:
    d = _validate(TaskCompletedData, data, "TaskCompleted data")
    related = [_related(names.invocation_resource(d.invoke_id), "invocation")]
    if d.command_id:
        related.append(_related(names.command_resource(d.command_id), "command"))
    resource = _resource(
        names.instance_resource(d.instance_id),
        region,
        account,
        d.instance_id,
        **{
            names.INVOCATION_STATUS_LABEL: d.invocation_status,
            names.COMMAND_NAME_LABEL: d.command_name or "",
        },
    )
    return names.TASK_COMPLETED, resource, related


def _output_delivered(data: dict[str, Any], region: str | None, account: str | None) -> Any:
    d = _validate(OutputDeliveredData, data, "output delivery data")
    resource = _resource(
        names.instance_resource(d.instance_id),
        region,
        account,
        d.instance_id,
        **{names.DELIVERY_STATUS_LABEL: d.status},
    )
    return (
        names.OUTPUT_DELIVERED,
        resource,
        [_related(names.invocation_resource(d.invoke_id), "invocation")],
    )


def _instance_state(data: dict[str, Any], region: str | None, account: str | None) -> Any:
    d = _validate(InstanceStateData, data, "Instance:StateChange data")
    resource = _resource(
        names.instance_resource(d.resource_id),
        region,
        account,
        d.resource_id,
        **{names.INSTANCE_STATE_LABEL: d.state},
    )
    return names.INSTANCE_STATE_CHANGE, resource, []


def _stack_status(data: dict[str, Any], region: str | None, account: str | None) -> Any:
    d = _validate(StackStatusData, data, "Stack:StatusChange data")
    resource = _resource(
        names.stack_resource(d.stack_id),
        region,
        account,
        d.stack_name or d.stack_id,
        **{names.STACK_STATUS_LABEL: d.status, names.STACK_NAME_LABEL: d.stack_name or ""},
    )
    return names.STACK_STATUS_CHANGE, resource, []


def _stack_state(data: dict[str, Any], region: str | None, account: str | None) -> Any:
    d = _validate(StackNotification, data, "ROS stack notification")
    resource = _resource(
        names.stack_resource(d.stack_id),
        region or d.region_id,
        account,
        **{names.STACK_STATUS_LABEL: d.status, names.STACK_NAME_LABEL: d.stack_name or ""},
    )
    return names.STACK_STATUS_CHANGE, resource, []


def _shapers(output_delivered_type: str) -> dict[str, Shaper]:
    return {
        names.FIRST_HEARTBEAT_TYPE: _first_heartbeat,
        names.TASK_COMPLETED_TYPE: _task_completed,
        output_delivered_type: _output_delivered,
        names.INSTANCE_STATE_CHANGE_TYPE: _instance_state,
        names.STACK_STATUS_CHANGE_TYPE: _stack_status,
    }


_CLOUDMONITOR_SHAPERS: dict[tuple[str, str], Shaper] = {
    ("ecs", "Instance:StateChange"): _instance_state,
    ("ecs", "CloudAssistant:FirstHeartbeat"): _first_heartbeat,
    ("ecs", "CloudAssistant:TaskCompleted"): _task_completed,
    ("ros", "Stack:StatusChange"): _stack_status,
}


def _event(
    *,
    event_id: str,
    name: str,
    resource: dict[str, str],
    related: list[dict[str, str]],
    payload: dict[str, Any],
    received: datetime,
) -> dict[str, Any]:
    return {
        "id": prefect_event_id(event_id),
        "occurred": received.astimezone(UTC).isoformat(),
        "event": name,
        "resource": resource,
        "related": related,
        "payload": payload,
    }


def from_cloud_event(
    raw: dict[str, Any],
    *,
    received: datetime,
    output_delivered_type: str = names.OUTPUT_DELIVERED_TYPE,
) -> dict[str, Any]:
    """Map one EventBridge CloudEvent; unknown types are forwarded under `acs.<product>.…`."""
    event: CloudEvent = _validate(CloudEvent, raw, "CloudEvent")
    product = event.source.removeprefix("acs.").split(".")[0] or "unknown"
    region, account = event.aliyunregionid, event.aliyunaccountid
    shaper = _shapers(output_delivered_type).get(event.type)
    if shaper is None and event.type.startswith(names.STACK_STATE_CHANGE_PREFIX):
        shaper = _stack_state
    if shaper is not None:
        name, resource, related = shaper(event.data, region, account)
    else:
        name = _as_name(product, event.type)
        resource = _resource(_unknown_resource(product, event.subject, event.id), region, account)
        related = []
    payload = {
        **event.data,
        "acs": {
            "id": event.id,
            "type": event.type,
            "source": event.source,
            "time": event.time,
            "subject": event.subject,
            "account_id": account,
            "region": region,
            "via": "eventbridge",
        },
    }
    return _event(
        event_id=event.id,
        name=name,
        resource=resource,
        related=related,
        payload=payload,
        received=received,
    )


def _cloudmonitor_id(raw: dict[str, Any], event: CloudMonitorEvent) -> str:
    if event.id:
        return event.id
    # ROS notifications carry no id: the notification's own content identifies it.
    digest = hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()
    return f"cloudmonitor:{digest}"


def from_cloudmonitor(raw: dict[str, Any], *, received: datetime) -> dict[str, Any]:
    """Map one CloudMonitor system-event notification (ECS and ROS formats)."""
    event: CloudMonitorEvent = _validate(CloudMonitorEvent, raw, "CloudMonitor event")
    product = event.product.lower()
    region = event.region_id
    account = event.user_id
    if (
        account is None
        and event.resource_id
        and (parts := event.resource_id.split(":"))[0] == "acs"
        and len(parts) > 3
    ):
        account = parts[3] or None
    shaper = _CLOUDMONITOR_SHAPERS.get((product, event.name))
    if shaper is not None:
        name, resource, related = shaper(event.content, region, account)
    else:
        name = _as_name(product, event.name)
        resource = _resource(
            _unknown_resource(product, event.resource_id, _cloudmonitor_id(raw, event)),
            region,
            account,
        )
        related = []
    source_id = _cloudmonitor_id(raw, event)
    payload = {
        **event.content,
        "acs": {
            "id": source_id,
            "type": event.name,
            "source": f"acs.{product}",
            "time": event.event_time if event.event_time is not None else event.time,
            "subject": event.resource_id,
            "account_id": account,
            "region": region,
            "level": event.level,
            "via": "cloudmonitor",
        },
    }
    return _event(
        event_id=source_id,
        name=name,
        resource=resource,
        related=related,
        payload=payload,
        received=received,
    )


def from_ros_notification(
    raw: dict[str, Any],
    *,
    received: datetime,
    region: str | None = None,
    account: str | None = None,
) -> dict[str, Any]:
    """Map one ROS NotificationURLs POST (`{Outputs, StackId, StackName, Status}`). It carries
    no id, time, region or account: the region and account come from the URL the stack was
    given, and each push is its own event (its id hashes the body and the time of receipt,
    so two updates that end alike stay two events)."""
    name, resource, related = _stack_state(raw, region, account)
    digest = hashlib.sha256(
        (json.dumps(raw, sort_keys=True, default=str) + received.isoformat()).encode()
    ).hexdigest()
    source_id = f"ros-notification:{digest}"
    payload = {
        **raw,
        "acs": {
            "id": source_id,
            "type": "ros:NotificationURL",
            "source": "acs.ros",
            "time": None,
            "subject": names.stack_resource(str(raw.get("StackId", ""))),
            "account_id": account,
            "region": resource.get(names.REGION_LABEL),
            "via": "notification",
        },
    }
    return _event(
        event_id=source_id,
        name=name,
        resource=resource,
        related=related,
        payload=payload,
        received=received,
    )
