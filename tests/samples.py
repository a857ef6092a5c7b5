"""Alibaba's own event samples (shared/reference/), as the relay receives them."""

from __future__ import annotations

import copy
import uuid
from typing import Any

ACCOUNT = "1234567890987654"

TASK_COMPLETED: dict[str, Any] = {
    "id": "45ef4dewdwe1-7c35-447a-bd93-fab****",
    "source": "acs.ecs",
    "specversion": "1.0",
    "subject": "acs.ecs:cn-hangzhou:123456789098****:215672",
    "time": "2020-11-19T21:04:41+08:00",
    "type": "ecs:CloudAssistant:TaskCompleted",
    "aliyunaccountid": ACCOUNT,
    "aliyunpublishtime": "2020-11-19T21:04:42Z",
    "aliyuneventbusname": "default",
    "aliyunregionid": "cn-hangzhou",
    "aliyunpublishaddr": "172.25.XX.XX",
    "data": {
        "commandId": "c-hz045aaaaaaaaaa",
        "commandName": "hello-linux.sh",
        "exitCode": "0",
        "finishTime": "2023-12-14T07:39:48Z",
        "instanceId": "i-bp114aaaaaaaaaaaaaaa",
        "invocationStatus": "Success",
        "invokeId": "t-hz045aaaaaaaaaa",
        "ownerId": "158000000000000",
        "playerUid": "256000000000000",
        "repeatMode": "Once",
        "repeats": "1",
        "startTime": "2023-12-14T07:39:48Z",
        "errorCode": "0",
        "errorDesc": "",
    },
}


def _cloud_event(type_: str, data: dict[str, Any]) -> dict[str, Any]:
    event = copy.deepcopy(TASK_COMPLETED)
    event.update(id=str(uuid.uuid4()), type=type_, data=data)
    return event


FIRST_HEARTBEAT = _cloud_event(
    "ecs:CloudAssistant:FirstHeartbeat",
    {
        "bizEventId": "ea33c3e2-aaf0-0000-0000-5d49b1ecce99",
        "vmName": "i-bp19aaaaaaaaaaaaaaaa",
        "extensions": "-",
        "azone": "cn-shenzhen-e",
        "region": "cn-shenzhen",
        "agentVersion": "2.2.3.529",
        "uptime": 19000,
    },
)

OUTPUT_DELIVERED = _cloud_event(
    "ecs:CloudAssistant:OutputDelivered",
    {
        "instanceId": "i-bp114aaaaaaaaaaaaaaa",
        "invokeId": "t-hz045aaaaaaaaaa",
        "ownerUid": "158000000000000",
        "playerUid": "256000000000000",
        "repeatMode": "Once",
        "repeats": "1",
        "ossOutputDelivery": "oss://bucket/prefix",
        "ossOutputUri": "oss://bucket/prefix/t-hz045aaaaaaaaaa/i-bp114aaaaaaaaaaaaaaa",
        "status": "Finished",
    },
)

INSTANCE_STATE_CHANGE_EB = _cloud_event(
    "ecs:Instance:StateChange",
    {
        "resourceId": "i-bp1ecr0000005go2go",
        "resourceType": "ALIYUN::ECS::Instance",
        "state": "Stopping",
    },
)

INSTANCE_STATE_CHANGE_CM: dict[str, Any] = {
    "eventTime": "20181226T220114.058+0800",
    "id": "9435EAD6-3CF6-4494-8F7A-3A0000000077",
    "level": "INFO",
    "name": "Instance:StateChange",
    "product": "ECS",
    "regionId": "cn-hangzhou",
    "resourceId": "acs:ecs:cn-hangzhou:169070000000030:instance/i-bp1ecr0000005go2go",
    "userId": "169070000000030",
    "ver": "1.0",
    "content": {
        "resourceId": "i-bp1ecr0000005go2go",
        "resourceType": "ALIYUN::ECS::Instance",
        "state": "Stopping",
    },
}

STACK_STATUS_CHANGE_CM: dict[str, Any] = {
    "Status": "Normal",
    "InstanceName": "",
    "ResourceId": "acs:ros:cn-hangzhou:175458090349000:stack/a797d0e1-c067-472a-ba86-2f0cdcbb0000",
    "Content": {
        "callerId": "229050894712720000",
        "requestId": "4D693712-0868-51DD-A736-4067AD7C0119",
        "stackId": "a797d0e1-c067-472a-ba86-2f0cdcbb0000",
        "stackName": "diagnostic-dr-7a7c8fdc57e94f790000",
        "status": "CREATE_COMPLETE",
        "statusReason": "Stack CREATE completed successfully",
    },
    "Product": "ros",
    "Level": "INFO",
    "Time": 1663815166000,
    "RegionId": "cn-hangzhou",
    "Name": "Stack:StatusChange",
    "GroupId": "0",
}


def fresh(event: dict[str, Any]) -> dict[str, Any]:
    """A copy with a new source id, so tests sharing one Prefect server do not collide."""
    copied = copy.deepcopy(event)
    if "specversion" in copied or "id" in copied:
        copied["id"] = str(uuid.uuid4())
    if "Content" in copied:
        copied["Content"]["requestId"] = str(uuid.uuid4())
    return copied
