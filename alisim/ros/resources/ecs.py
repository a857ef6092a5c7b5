"""`ALIYUN::ECS::Instance` and `ALIYUN::ECS::InstanceGroup` on alisim's ECS: the instances
are real there (their StateChange and FirstHeartbeat events, Cloud Assistant on them). A
resource is complete when its instances are Running, as ROS waits for."""

from __future__ import annotations

import re
import uuid
from typing import Any

from alisim.ecs.actions import INSTANCE_TYPE
from alisim.ecs.models import Instance, InstanceStatus
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

INSTANCE_ATTRIBUTES = frozenset(
    {
        "InstanceId",
        "PrivateIp",
        "PublicIp",
        "InnerIp",
        "HostName",
        "ZoneId",
        "SecurityGroupIds",
        "PrimaryNetworkInterfaceId",
        "VpcId",
        "VSwitchId",
    }
)
GROUP_ATTRIBUTES = frozenset(
    {
        "InstanceIds",
        "PrivateIps",
        "PublicIps",
        "InnerIps",
        "HostNames",
        "ZoneIds",
        "OrderId",
        "Ipv6Addresses",
        "Ipv6AddressIds",
    }
)
# ECS cannot move an instance to another zone or network in place.
MOVES = frozenset({"ZoneId", "VSwitchId", "VpcId"})


SEQUENCE = re.compile(r"\[(\d+),(\d+)\]")


def _numbered(name: str, position: int, suffix: bool) -> str:
    match = SEQUENCE.search(name)
    if match:
        number = str(int(match.group(1)) + position).zfill(int(match.group(2)))
        return name[: match.start()] + number + name[match.end() :]
    return f"{name}{position + 1:03d}" if suffix else name


def _image(props: dict[str, Any]) -> str:
    image = text(props, "ImageId") or text(props, "ImageFamily")
    if image is None:
        raise ResourceFailed("MissingParameter", "The input parameter ImageId should be specified.")
    return image


def _instance_type(props: dict[str, Any]) -> str:
    instance_type = required_text(props, "InstanceType")
    if not INSTANCE_TYPE.match(instance_type):
        raise ResourceFailed(
            "InvalidInstanceType.ValueNotSupported",
            f"The specified InstanceType {instance_type!r} does not exist.",
        )
    return instance_type


def _groups(props: dict[str, Any]) -> list[str]:
    groups = text_list(props, "SecurityGroupIds")
    single = text(props, "SecurityGroupId")
    return [single, *groups] if single and single not in groups else groups


def _launch(
    ctx: Context, props: dict[str, Any], name: str | None, hostname: str | None
) -> Instance:
    network = ctx.cloud.ros.network
    vswitch_id = text(props, "VSwitchId", "") or ""
    vswitch = network.vswitches.get(vswitch_id)
    zone = text(props, "ZoneId") or (vswitch.zone_id if vswitch else None)
    return ctx.cloud.instances.create(
        image_id=_image(props),
        instance_type=_instance_type(props),
        name=name,
        hostname=hostname,
        tags=ctx.tags(props),
        zone=zone,
        private_ip=network.private_ip(vswitch_id),
        vpc_id=text(props, "VpcId", "") or (vswitch.vpc_id if vswitch else ""),
        vswitch_id=vswitch_id,
        security_group_ids=_groups(props),
        user_data=(text(props, "UserData", "") or "").encode(),
    )


async def _running(ctx: Context, instance_ids: list[str]) -> None:
    instances = ctx.cloud.instances.instances

    def settled() -> bool:
        for instance_id in instance_ids:
            instance = instances.get(instance_id)
            if instance is None:
                raise ResourceFailed(
                    "InvalidInstanceId.NotFound",
                    f"The instance {instance_id} was released before it was running.",
                )
            if instance.status != InstanceStatus.RUNNING:
                return False
        return True

    await ctx.cloud.ros.until(instance_ids, settled)


def _release(ctx: Context, instance_ids: list[str]) -> None:
    for instance_id in instance_ids:
        instance = ctx.cloud.instances.instances.get(instance_id)
        if instance is not None:
            ctx.cloud.instances.delete(instance)


def _modify(ctx: Context, instance_id: str, props: dict[str, Any], name: str | None) -> None:
    instance = ctx.cloud.instances.instances.get(instance_id)
    if instance is None:
        raise ResourceFailed("InvalidInstanceId.NotFound", f"The instance {instance_id} is gone.")
    instance.instance_type = _instance_type(props)
    instance.image_id = _image(props)
    instance.tags = ctx.tags(props)
    instance.security_group_ids = _groups(props)
    if name:
        instance.name = name


class InstanceType(ResourceType):
    name = "ALIYUN::ECS::Instance"
    attributes = INSTANCE_ATTRIBUTES
    required = ("InstanceType",)
    replace_on = MOVES

    async def create(self, ctx: Context, props: dict[str, Any]) -> None:
        instance = _launch(ctx, props, text(props, "InstanceName"), text(props, "HostName"))
        ctx.resource.physical_id = instance.instance_id
        await _running(ctx, [instance.instance_id])
        ctx.resource.attributes = self._attributes(instance)

    @staticmethod
    def _attributes(instance: Instance) -> dict[str, Any]:
        return {
            "InstanceId": instance.instance_id,
            "PrivateIp": instance.private_ip,
            "InnerIp": instance.private_ip,
            "PublicIp": "",
            "HostName": instance.hostname,
            "ZoneId": instance.zone,
            "SecurityGroupIds": instance.security_group_ids,
            "PrimaryNetworkInterfaceId": f"eni-{instance.instance_id[2:]}",
            "VpcId": instance.vpc_id,
            "VSwitchId": instance.vswitch_id,
        }

    async def update(self, ctx: Context, old: dict[str, Any], new: dict[str, Any]) -> None:
        instance_id = ctx.resource.physical_id
        _modify(ctx, instance_id, new, text(new, "InstanceName"))
        ctx.resource.attributes = self._attributes(ctx.cloud.instances.instances[instance_id])

    async def delete(self, ctx: Context) -> None:
        _release(ctx, [ctx.resource.physical_id])


class InstanceGroupType(ResourceType):
    """`MaxAmount` instances at once (1-1000); a change of it scales the group in place.
    `MinAmount` is accepted: alisim never runs out of stock, so MaxAmount are made."""

    name = "ALIYUN::ECS::InstanceGroup"
    attributes = GROUP_ATTRIBUTES
    required = ("InstanceType", "MaxAmount")
    replace_on = MOVES

    @staticmethod
    def _names(props: dict[str, Any], position: int, amount: int) -> tuple[str | None, str | None]:
        """ECS's names for a batch: `web-[1,4]` numbers them `web-0001`, `web-0002`…;
        otherwise a name gets a 3-digit suffix when there are several."""
        name, hostname = text(props, "InstanceName"), text(props, "HostName")
        hostnames = text_list(props, "HostNames")
        if hostnames and position < len(hostnames):
            hostname = hostnames[position]
        elif hostname:
            hostname = _numbered(hostname, position, amount > 1)
        if name:
            name = _numbered(name, position, amount > 1 and boolean(props, "UniqueSuffix", True))
        return name, hostname

    async def create(self, ctx: Context, props: dict[str, Any]) -> None:
        amount = integer(props, "MaxAmount", 1, 1, 1000)
        integer(props, "MinAmount", amount, 1, amount)
        _instance_type(props)
        ctx.resource.physical_id = str(uuid.uuid4())
        ctx.resource.state = []
        await self._grow(ctx, props, amount)

    async def _grow(self, ctx: Context, props: dict[str, Any], amount: int) -> None:
        ids: list[str] = ctx.resource.state
        start = len(ids)
        for position in range(start, amount):
            name, hostname = self._names(props, position, amount)
            ids.append(_launch(ctx, props, name, hostname).instance_id)
        await _running(ctx, ids)
        self._refresh(ctx)

    @staticmethod
    def _refresh(ctx: Context) -> None:
        instances = [ctx.cloud.instances.instances[i] for i in ctx.resource.state]
        ctx.resource.attributes = {
            "InstanceIds": [i.instance_id for i in instances],
            "PrivateIps": [i.private_ip for i in instances],
            "InnerIps": [i.private_ip for i in instances],
            "PublicIps": [],
            "HostNames": [i.hostname for i in instances],
            "ZoneIds": [i.zone for i in instances],
            "OrderId": "",
            "Ipv6Addresses": [],
            "Ipv6AddressIds": [],
        }

    async def update(self, ctx: Context, old: dict[str, Any], new: dict[str, Any]) -> None:
        amount = integer(new, "MaxAmount", 1, 1, 1000)
        ids: list[str] = ctx.resource.state
        if amount < len(ids):
            _release(ctx, ids[amount:])
            del ids[amount:]
        for position, instance_id in enumerate(ids):
            _modify(ctx, instance_id, new, self._names(new, position, amount)[0])
        await self._grow(ctx, new, amount)

    async def delete(self, ctx: Context) -> None:
        _release(ctx, list(ctx.resource.state or []))
