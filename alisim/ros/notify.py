"""What ROS announces when a stack reaches a terminal status, in its three forms. This module
is the one place their types and payloads are decided (settings: `ros_events`).

1. **`ros:Stack:StatusChange`** (EventBridge), for the ten statuses CloudMonitor notifies
   (`NOTIFIED`; never IN_PROGRESS), for every stack. Its `data` is the `Content` of the
   CloudMonitor notification (`callerId, requestId, stackId, stackName, status,
   statusReason`); `subject` the stack's ARN. CloudMonitor subscriptions receive it as the
   `Stack:StatusChange` notification, exactly as `shared/reference/ros-stack-event-
   notifications.txt` shows it (`status_change_notice`). Its `Level` for failures is not
   documented: alisim sends `WARN` for `*_FAILED` and `INFO` otherwise.
2. **`ros:StackStateChange:<Status in PascalCase>`** (e.g. `ros:StackStateChange:
   CreateRollbackComplete`), for terminal statuses, by default only for stacks whose
   NotificationURLs hold `eventbridge` (the documented opt-in; setting
   `ros_events.state_change_events`). Alibaba does not document its `data`; alisim sends the
   NotificationURLs body plus `StatusReason` and `RegionId`.
3. **NotificationURLs** HTTP POSTs of the documented body (`Outputs`, `StackId`,
   `StackName`, `Status`; Outputs always present), on every status change except
   IN_PROGRESS, through EventBridge's delivery engine (retries, dead letters, the delivery
   log under channel `notification`).
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from typing import TYPE_CHECKING, Any

from alisim.eventbridge.delivery import Delivery
from alisim.eventbridge.models import DEFAULT_RETRY_STRATEGY
from alisim.events import documents
from alisim.events.documents import Notice

if TYPE_CHECKING:
    from alisim.cloud import Cloud
    from alisim.ros.models import Stack

STATUS_CHANGE = "ros:Stack:StatusChange"
STATE_CHANGE_PREFIX = "ros:StackStateChange:"
NOTICE_NAME = "Stack:StatusChange"
EVENTBRIDGE_URL = "eventbridge"
NOTIFIED = frozenset(
    {
        "CREATE_FAILED",
        "CREATE_COMPLETE",
        "UPDATE_FAILED",
        "UPDATE_COMPLETE",
        "DELETE_FAILED",
        "DELETE_COMPLETE",
        "ROLLBACK_FAILED",
        "ROLLBACK_COMPLETE",
        "CREATE_ROLLBACK_FAILED",
        "CREATE_ROLLBACK_COMPLETE",
    }
)


def state_change_type(status: str) -> str:
    """`CREATE_ROLLBACK_COMPLETE` -> `ros:StackStateChange:CreateRollbackComplete`."""
    return STATE_CHANGE_PREFIX + "".join(part.capitalize() for part in status.split("_"))


def stack_arn(cloud: Cloud, stack: Stack) -> str:
    settings = cloud.settings
    return documents.arn("ros", stack.region, settings.account_id, f"stack/{stack.stack_id}")


def status_change_data(stack: Stack) -> dict[str, str]:
    return {
        "callerId": stack.caller,
        "requestId": stack.request_id,
        "stackId": stack.stack_id,
        "stackName": stack.name,
        "status": str(stack.status),
        "statusReason": stack.reason,
    }


def notification_body(stack: Stack, outputs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "Outputs": outputs,
        "StackId": stack.stack_id,
        "StackName": stack.name,
        "Status": str(stack.status),
    }


def state_change_data(stack: Stack, outputs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        **notification_body(stack, outputs),
        "StatusReason": stack.reason,
        "RegionId": stack.region,
    }


def stack_status_changed(cloud: Cloud, stack: Stack) -> None:
    """Called on every terminal status the engine sets."""
    from alisim.ros.views import outputs_of

    settings = cloud.settings.ros_events
    outputs = outputs_of(cloud, stack)
    status = str(stack.status)
    subject = stack_arn(cloud, stack)
    if status in NOTIFIED:
        cloud.publish_event(
            source=settings.source,
            type=STATUS_CHANGE,
            subject=subject,
            data=status_change_data(stack),
        )
    wants_state_change = settings.state_change_events == "always" or (
        settings.state_change_events == "notification"
        and EVENTBRIDGE_URL in stack.notification_urls
    )
    if wants_state_change:
        cloud.publish_event(
            source=settings.source,
            type=state_change_type(status),
            subject=subject,
            data=state_change_data(stack, outputs),
        )
    body = json.dumps(notification_body(stack, outputs), ensure_ascii=False, default=str)
    for url in stack.notification_urls:
        if url == EVENTBRIDGE_URL:
            continue
        event_id = str(uuid.uuid4())
        cloud.eventbridge.deliveries.submit(
            Delivery(
                channel="notification",
                rule=f"stack/{stack.stack_id}",
                target="NotificationURLs",
                url=url,
                body=body,
                event={"id": event_id, **json.loads(body)},
                event_id=event_id,
                event_type=f"ros:NotificationURL:{status}",
                strategy=DEFAULT_RETRY_STRATEGY,
                errors_tolerance="ALL",
            )
        )


def status_change_notice(event: dict[str, Any]) -> Notice:
    """The CloudMonitor `Stack:StatusChange` notification of a `ros:Stack:StatusChange`."""
    data = event.get("data") or {}
    status = str(data.get("status", ""))
    document = {
        "Status": "Normal",
        "InstanceName": "",
        "ResourceId": event.get("subject", ""),
        "Content": {
            "callerId": data.get("callerId", ""),
            "requestId": data.get("requestId", ""),
            "stackId": data.get("stackId", ""),
            "stackName": data.get("stackName", ""),
            "status": status,
            "statusReason": data.get("statusReason", ""),
        },
        "Product": "ros",
        "Level": "WARN" if status.endswith("FAILED") else "INFO",
        "Time": _epoch_ms(event),
        "RegionId": event.get("aliyunregionid", ""),
        "Name": NOTICE_NAME,
        "GroupId": "0",
    }
    return Notice("ros", NOTICE_NAME, document)


def _epoch_ms(event: dict[str, Any]) -> int:
    raw = str(event.get("time", ""))
    try:
        return int(dt.datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return int(time.time() * 1000)


NOTICES = {STATUS_CHANGE: status_change_notice}
