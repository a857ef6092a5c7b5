"""Builders of the CloudEvents 1.0 documents EventBridge delivers for ECS and Cloud Assistant.

Field names and value types follow `shared/reference/`: Cloud Assistant task fields are
strings (`"exitCode": "0"`), as in Alibaba's samples.
"""

from __future__ import annotations

import time
from typing import Any

from alisim import ids

FIRST_HEARTBEAT = "ecs:CloudAssistant:FirstHeartbeat"
TASK_COMPLETED = "ecs:CloudAssistant:TaskCompleted"
# Alibaba's references do not name this type; one constant, overridable in settings.
OUTPUT_DELIVERED = "ecs:CloudAssistant:OutputDelivered"
INSTANCE_STATE_CHANGE = "ecs:Instance:StateChange"


def iso_utc(ts: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts if ts is not None else time.time()))


def iso_utc_ms(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


def cloud_event(
    *,
    type: str,
    source: str,
    region: str,
    account_id: str,
    subject: str,
    data: dict[str, Any],
    at: float | None = None,
) -> dict[str, Any]:
    now = time.time() if at is None else at
    return {
        "id": ids.event_id(),
        "source": source,
        "specversion": "1.0",
        "subject": subject,
        "time": iso_utc_ms(now),
        "type": type,
        "datacontenttype": "application/json;charset=utf-8",
        "aliyunaccountid": account_id,
        "aliyunpublishtime": iso_utc_ms(time.time()),
        "aliyuneventbusname": "default",
        "aliyunregionid": region,
        "aliyunpublishaddr": "127.0.0.1",
        "data": data,
    }


def instance_arn(region: str, account_id: str, instance_id: str) -> str:
    return f"acs:ecs:{region}:{account_id}:instance/{instance_id}"
