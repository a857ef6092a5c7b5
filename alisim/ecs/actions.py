"""ECS instance actions, answered in ECS's JSON shapes (Cloud Assistant's are in
`alisim/cloud_assistant/actions.py`). `ACTIONS` is the routing table; dispatch checks
`RegionId` before any handler runs.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from alisim.ecs.models import Instance
from alisim.ecs.wire import api_time, dry_run, instance_ids_required, tag_set, tags_of
from alisim.errors import ApiError, invalid_parameter
from alisim.openapi.paging import paginate
from alisim.openapi.params import Params
from alisim.openapi.registry import ECS, Action, ActionTable, Region

if TYPE_CHECKING:
    from alisim.cloud import Cloud

INSTANCE_TYPE = re.compile(r"^ecs\.[a-z0-9\-]+\.[a-z0-9]+$")


def _instance_view(instance: Instance) -> dict[str, Any]:
    cpu, memory = 2, 4096
    return {
        "InstanceId": instance.instance_id,
        "InstanceName": instance.name,
        "HostName": instance.hostname,
        "ImageId": instance.image_id,
        "InstanceType": instance.instance_type,
        "Status": str(instance.status),
        "RegionId": instance.region,
        "ZoneId": instance.zone,
        "OSType": instance.os_type,
        "OSName": "Windows Server" if instance.is_windows else "Alibaba Cloud Linux 3",
        "Cpu": cpu,
        "Memory": memory,
        "CreationTime": api_time(instance.created_at, minutes_only=True),
        "StartTime": api_time(instance.started_at, minutes_only=True),
        "InstanceChargeType": "PostPaid",
        "InternetChargeType": "PayByTraffic",
        "InstanceNetworkType": "vpc",
        "Tags": tag_set(instance.tags),
        "VpcAttributes": {
            "PrivateIpAddress": {"IpAddress": [instance.private_ip] if instance.private_ip else []},
            "VpcId": instance.vpc_id,
            "VSwitchId": instance.vswitch_id,
        },
        "SecurityGroupIds": {"SecurityGroupId": instance.security_group_ids},
        "PublicIpAddress": {"IpAddress": []},
    }


async def run_instances(cloud: Cloud, params: Params) -> dict[str, Any]:
    cached = cloud.idempotency.lookup("RunInstances", params)
    if cached is not None:
        return cached
    image_id = params.require("ImageId")
    instance_type = params.require("InstanceType")
    if not INSTANCE_TYPE.match(instance_type):
        raise ApiError(
            "InvalidInstanceType.ValueNotSupported",
            f"The specified InstanceType {instance_type!r} does not exist.",
            400,
        )
    amount = params.int("Amount", 1, minimum=1, maximum=100) or 1
    min_amount = params.int("MinAmount", amount, minimum=1, maximum=amount)
    del min_amount
    tags = tags_of(params)
    dry_run(params)
    name = params.get("InstanceName")
    hostname = params.get("HostName")
    created = []
    for n in range(amount):
        suffix = f"{n + 1:03d}" if amount > 1 and params.bool("UniqueSuffix") else ""
        created.append(
            cloud.instances.create(
                image_id=image_id,
                instance_type=instance_type,
                name=f"{name}{suffix}" if name else None,
                hostname=f"{hostname}{suffix}" if hostname else None,
                tags=tags,
                zone=params.get("ZoneId"),
            )
        )
    result = {
        "InstanceIdSets": {"InstanceIdSet": [i.instance_id for i in created]},
        "OrderId": "",
        "TradePrice": 0.0,
    }
    cloud.idempotency.store("RunInstances", params, result)
    return result


def _filtered_instances(cloud: Cloud, params: Params) -> list[Instance]:
    wanted_ids = params.id_list("InstanceIds")
    if len(wanted_ids) > 100:
        raise invalid_parameter("InstanceIds", "At most 100 ids may be given.")
    instances: list[Instance] = (
        [cloud.instances.instances[i] for i in wanted_ids if i in cloud.instances.instances]
        if wanted_ids
        else list(cloud.instances.instances.values())
    )
    status = params.get("Status")
    name = params.get("InstanceName")
    image_id = params.get("ImageId")
    instance_type = params.get("InstanceType")
    tags = params.objects("Tag")
    result = []
    for instance in instances:
        if status and str(instance.status) != status:
            continue
        if name and not fnmatch.fnmatchcase(instance.name, name):
            continue
        if image_id and instance.image_id != image_id:
            continue
        if instance_type and instance.instance_type != instance_type:
            continue
        if not all(
            t.get("Key") in instance.tags
            and ("Value" not in t or instance.tags[t["Key"]] == t["Value"])
            for t in tags
        ):
            continue
        result.append(instance)
    return result


async def describe_instances(cloud: Cloud, params: Params) -> dict[str, Any]:
    page, paging = paginate(_filtered_instances(cloud, params), params)
    return {"Instances": {"Instance": [_instance_view(i) for i in page]}, **paging}


async def describe_instance_status(cloud: Cloud, params: Params) -> dict[str, Any]:
    ids = params.list("InstanceId")
    instances = (
        [cloud.instances.instances[i] for i in ids if i in cloud.instances.instances]
        if (ids)
        else list(cloud.instances.instances.values())
    )
    page, paging = paginate(instances, params, max_size=50)
    return {
        "InstanceStatuses": {
            "InstanceStatus": [{"InstanceId": i.instance_id, "Status": str(i.status)} for i in page]
        },
        **paging,
    }


def _instances_of(cloud: Cloud, params: Params) -> list[Instance]:
    ids = params.list("InstanceId")
    if not ids:
        raise instance_ids_required()
    if len(ids) > 100:
        raise invalid_parameter("InstanceId", "At most 100 instances may be given per call.")
    return [cloud.instances.get(i) for i in ids]


def _batch_result(instances: list[Instance], previous: list[str]) -> dict[str, Any]:
    return {
        "InstanceResponses": {
            "InstanceResponse": [
                {
                    "InstanceId": i.instance_id,
                    "Code": "200",
                    "Message": "success",
                    "CurrentStatus": str(i.status),
                    "PreviousStatus": before,
                }
                for i, before in zip(instances, previous, strict=True)
            ]
        }
    }


def _transition(cloud: Cloud, params: Params, apply: Callable[[Instance], None]) -> dict[str, Any]:
    instances = _instances_of(cloud, params)
    dry_run(params)
    previous = [str(i.status) for i in instances]
    for instance in instances:
        apply(instance)
    return _batch_result(instances, previous)


async def start_instances(cloud: Cloud, params: Params) -> dict[str, Any]:
    return _transition(cloud, params, cloud.instances.start)


async def stop_instances(cloud: Cloud, params: Params) -> dict[str, Any]:
    force = params.bool("ForceStop")
    return _transition(cloud, params, lambda i: cloud.instances.stop(i, force))


async def reboot_instances(cloud: Cloud, params: Params) -> dict[str, Any]:
    force = params.bool("ForceReboot")
    return _transition(cloud, params, lambda i: cloud.instances.reboot(i, force))


async def delete_instances(cloud: Cloud, params: Params) -> dict[str, Any]:
    instances = _instances_of(cloud, params)
    force = params.bool("Force")
    for instance in instances:
        cloud.instances.check_deletable(instance, force)
    dry_run(params)
    for instance in instances:
        cloud.instances.delete(instance)
    return {}


async def delete_instance(cloud: Cloud, params: Params) -> dict[str, Any]:
    instance = cloud.instances.get(params.require("InstanceId"))
    cloud.instances.check_deletable(instance, params.bool("Force"))
    cloud.instances.delete(instance)
    return {}


ACTIONS = ActionTable(
    ECS,
    {
        "RunInstances": run_instances,
        "DescribeInstances": describe_instances,
        "DescribeInstanceStatus": describe_instance_status,
        "StartInstances": start_instances,
        "StopInstances": stop_instances,
        "RebootInstances": reboot_instances,
        "DeleteInstances": delete_instances,
        "DeleteInstance": Action(delete_instance, Region.NONE),
    },
)
