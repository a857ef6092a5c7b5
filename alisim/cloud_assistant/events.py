"""Cloud Assistant's events as EventBridge delivers them (`shared/reference/cloud-assistant-*`).

Data fields are strings where the samples show strings (`"exitCode": "0"`). The subject of
the task events takes the form of the TaskCompleted sample, `acs.ecs:<region>:<account>:<id>`,
with the task's id, the InvokeId (the docs call it "the ID of the Cloud Assistant task"); the
sample's own id (`215672`) is a placeholder, so the id is our inference. FirstHeartbeat has no
sample envelope and keeps the instance's ARN. Where the docs' field table shows `-` for "no
value" (FirstHeartbeat `extensions`, TaskCompleted `errorDesc`), the sample event carries `""`,
so alisim sends `""`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from alisim import ids
from alisim.cloud_assistant.models import Invocation, InvokeInstance
from alisim.ecs import events as ecs_events
from alisim.ecs.models import Instance
from alisim.events import documents

if TYPE_CHECKING:
    from alisim.cloud import Cloud

SOURCE = "acs.ecs"
FIRST_HEARTBEAT = "ecs:CloudAssistant:FirstHeartbeat"
TASK_COMPLETED = "ecs:CloudAssistant:TaskCompleted"
# Alibaba's references do not name the output delivery type: setting `output_delivery_event_type`.


def task_subject(cloud: Cloud, invoke_id: str) -> str:
    settings = cloud.settings
    return documents.source_subject(SOURCE, settings.region, settings.account_id, invoke_id)


def publish_first_heartbeat(cloud: Cloud, instance: Instance) -> None:
    now = time.time()
    cloud.publish_event(
        source=SOURCE,
        type=FIRST_HEARTBEAT,
        subject=ecs_events.instance_subject(cloud, instance.instance_id),
        data={
            "bizEventId": ids.event_id(),
            "vmName": instance.instance_id,
            "extensions": "",
            "azone": instance.zone,
            "region": instance.region,
            "agentVersion": instance.agent_version,
            "uptime": int((now - (instance.started_at or now)) * 1000),
        },
    )


def publish_task_completed(cloud: Cloud, invocation: Invocation, ii: InvokeInstance) -> None:
    account = cloud.settings.account_id
    cloud.publish_event(
        source=SOURCE,
        type=TASK_COMPLETED,
        subject=task_subject(cloud, invocation.invoke_id),
        data={
            "commandId": invocation.command.command_id,
            "commandName": invocation.command.name,
            "exitCode": str(ii.exit_code if ii.exit_code is not None else ""),
            "finishTime": documents.iso_utc(ii.finish_time),
            "instanceId": ii.instance_id,
            "invocationStatus": ii.status,
            "invokeId": invocation.invoke_id,
            "ownerId": account,
            "playerUid": account,
            "repeatMode": invocation.repeat_mode,
            "repeats": str(ii.repeats),
            "startTime": documents.iso_utc(ii.start_time or ii.finish_time),
            "errorCode": ii.error_code or "0",
            "errorDesc": ii.error_info,
        },
    )


def publish_output_delivered(cloud: Cloud, invocation: Invocation, ii: InvokeInstance) -> None:
    account = cloud.settings.account_id
    data: dict[str, str] = {
        "instanceId": ii.instance_id,
        "invokeId": invocation.invoke_id,
        "ownerUid": account,
        "playerUid": account,
        "repeatMode": invocation.repeat_mode,
        "repeats": str(ii.repeats),
        "ossOutputDelivery": invocation.oss_output_delivery,
        "ossOutputUri": ii.oss_uri,
        "status": ii.oss_status,
    }
    if ii.oss_status == "Failed":
        data["statusCode"] = ii.oss_status_code
        data["errorCode"] = ii.oss_error_code
        data["errorInfo"] = ii.oss_error_info
    cloud.publish_event(
        source=SOURCE,
        type=cloud.settings.output_delivery_event_type,
        subject=task_subject(cloud, invocation.invoke_id),
        data=data,
    )
