"""ECS's own event: `ecs:Instance:StateChange`, as a CloudEvent and as CloudMonitor's notice.

The subject is the instance's ARN, as CloudMonitor's `resourceId` is in Alibaba's sample
(`shared/reference/ecs-event-notifications.txt`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from alisim.events import documents
from alisim.events.documents import Notice

if TYPE_CHECKING:
    from alisim.cloud import Cloud

SOURCE = "acs.ecs"
INSTANCE_STATE_CHANGE = "ecs:Instance:StateChange"


def instance_subject(cloud: Cloud, instance_id: str) -> str:
    settings = cloud.settings
    return documents.arn("ecs", settings.region, settings.account_id, f"instance/{instance_id}")


def publish_state(cloud: Cloud, instance_id: str, state: str) -> None:
    cloud.publish_event(
        source=SOURCE,
        type=INSTANCE_STATE_CHANGE,
        subject=instance_subject(cloud, instance_id),
        data={
            "resourceId": instance_id,
            "resourceType": "ALIYUN::ECS::Instance",
            "state": state,
        },
    )


def state_change_notice(event: dict[str, Any]) -> Notice:
    data = event.get("data") or {}
    document = {
        "id": str(event.get("id", "")).upper(),
        "eventTime": documents.cloudmonitor_time(event),
        "level": "INFO",
        "name": "Instance:StateChange",
        "product": "ECS",
        "regionId": event.get("aliyunregionid", ""),
        "resourceId": event.get("subject", ""),
        "userId": event.get("aliyunaccountid", ""),
        "ver": "1.0",
        "content": {
            "resourceId": data.get("resourceId", ""),
            "resourceType": data.get("resourceType", "ALIYUN::ECS::Instance"),
            "state": data.get("state", ""),
        },
    }
    return Notice("ECS", "Instance:StateChange", document)


NOTICES = {INSTANCE_STATE_CHANGE: state_change_notice}
