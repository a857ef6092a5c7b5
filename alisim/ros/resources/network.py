"""`ALIYUN::ECS::VPC`, `VSwitch`, `SecurityGroup` and `SecurityGroupIngress`: records with
real-looking ids, the checks VPC makes (CIDR blocks inside their VPC and not overlapping, a
VPC not deleted while it holds vSwitches or groups) and the addresses instances get.

alisim has no VPC API, so these live in the ROS service (`RosService.network`); instances a
stack puts in a vSwitch take their private IPs from its CIDR block.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from alisim import ids
from alisim.ros.resources.base import (
    Context,
    ResourceFailed,
    ResourceType,
    integer,
    required_text,
    text,
)

DEFAULT_VPC_CIDR = "172.16.0.0/12"
PROTOCOLS = {"tcp", "udp", "icmp", "gre", "all"}
PORT_RANGE = re.compile(r"^(-1/-1|\d{1,5}/\d{1,5})$")


@dataclass
class Vpc:
    vpc_id: str
    cidr: ipaddress.IPv4Network
    name: str
    vrouter_id: str
    route_table_id: str


@dataclass
class VSwitch:
    vswitch_id: str
    vpc_id: str
    zone_id: str
    cidr: ipaddress.IPv4Network
    name: str
    next_host: int = 1


@dataclass
class SecurityGroup:
    group_id: str
    vpc_id: str
    name: str
    rules: dict[str, dict[str, Any]] = field(default_factory=dict)


class Network:
    def __init__(self, region: str) -> None:
        self.region = region
        self.vpcs: dict[str, Vpc] = {}
        self.vswitches: dict[str, VSwitch] = {}
        self.groups: dict[str, SecurityGroup] = {}

    def private_ip(self, vswitch_id: str) -> str:
        """The next free address of the vSwitch ("" for one alisim does not know, and ECS
        gives an address of its default network)."""
        vswitch = self.vswitches.get(vswitch_id)
        if vswitch is None:
            return ""
        hosts = vswitch.cidr.num_addresses - 2
        if vswitch.next_host > hosts:
            raise ResourceFailed(
                "InvalidVSwitchId.IpNotEnough", f"The vSwitch {vswitch.vswitch_id} has no free IP."
            )
        address = vswitch.cidr.network_address + vswitch.next_host
        vswitch.next_host += 1
        return str(address)

    def vpc(self, vpc_id: str) -> Vpc:
        vpc = self.vpcs.get(vpc_id)
        if vpc is None:
            raise ResourceFailed(
                "InvalidVpcId.NotFound", f"The specified VPC {vpc_id} does not exist."
            )
        return vpc

    def group(self, group_id: str) -> SecurityGroup:
        group = self.groups.get(group_id)
        if group is None:
            raise ResourceFailed(
                "InvalidSecurityGroupId.NotFound",
                f"The specified security group {group_id} does not exist.",
            )
        return group


def _network(ctx: Context) -> Network:
    return ctx.cloud.ros.network


def _cidr(value: str, name: str = "CidrBlock") -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(value, strict=True)
    except ValueError:
        raise ResourceFailed(
            "InvalidCidrBlock.Malformed",
            f"The specified {name} {value!r} is not a valid CIDR block.",
        ) from None


class VpcType(ResourceType):
    name = "ALIYUN::ECS::VPC"
    attributes = frozenset({"VpcId", "VRouterId", "RouteTableId", "VpcName", "CidrBlock"})
    replace_on = frozenset({"CidrBlock"})

    async def create(self, ctx: Context, props: dict[str, Any]) -> None:
        network = _network(ctx)
        cidr = _cidr(text(props, "CidrBlock", DEFAULT_VPC_CIDR) or DEFAULT_VPC_CIDR)
        vpc = Vpc(
            vpc_id=ids.resource_id("vpc", network.region),
            cidr=cidr,
            name=text(props, "VpcName", "") or "",
            vrouter_id=ids.resource_id("vrt", network.region),
            route_table_id=ids.resource_id("vtb", network.region),
        )
        network.vpcs[vpc.vpc_id] = vpc
        ctx.resource.physical_id = vpc.vpc_id
        ctx.resource.state = vpc
        self._attributes(ctx, vpc)

    @staticmethod
    def _attributes(ctx: Context, vpc: Vpc) -> None:
        ctx.resource.attributes = {
            "VpcId": vpc.vpc_id,
            "VRouterId": vpc.vrouter_id,
            "RouteTableId": vpc.route_table_id,
            "VpcName": vpc.name,
            "CidrBlock": str(vpc.cidr),
        }

    async def update(self, ctx: Context, old: dict[str, Any], new: dict[str, Any]) -> None:
        vpc = ctx.resource.state
        vpc.name = text(new, "VpcName", "") or ""
        self._attributes(ctx, vpc)

    async def delete(self, ctx: Context) -> None:
        network = _network(ctx)
        vpc_id = ctx.resource.physical_id
        if vpc_id not in network.vpcs:
            return
        held = [v.vswitch_id for v in network.vswitches.values() if v.vpc_id == vpc_id]
        held += [g.group_id for g in network.groups.values() if g.vpc_id == vpc_id]
        if held:
            raise ResourceFailed(
                "DependencyViolation",
                f"The VPC {vpc_id} still holds {', '.join(sorted(held))}; delete them first.",
            )
        del network.vpcs[vpc_id]


class VSwitchType(ResourceType):
    name = "ALIYUN::ECS::VSwitch"
    attributes = frozenset({"VSwitchId", "CidrBlock", "VSwitchName", "Ipv6CidrBlock", "ZoneId"})
    required = ("CidrBlock", "VpcId", "ZoneId")
    replace_on = frozenset({"CidrBlock", "VpcId", "ZoneId"})

    async def create(self, ctx: Context, props: dict[str, Any]) -> None:
        network = _network(ctx)
        vpc = network.vpc(required_text(props, "VpcId"))
        cidr = _cidr(required_text(props, "CidrBlock"))
        if not cidr.subnet_of(vpc.cidr):
            raise ResourceFailed(
                "InvalidCidrBlock.Malformed",
                f"The CidrBlock {cidr} is not inside the VPC's {vpc.cidr}.",
            )
        for other in network.vswitches.values():
            if other.vpc_id == vpc.vpc_id and other.cidr.overlaps(cidr):
                raise ResourceFailed(
                    "InvalidCidrBlock.Overlapped",
                    f"The CidrBlock {cidr} overlaps {other.vswitch_id} ({other.cidr}).",
                )
        vswitch = VSwitch(
            vswitch_id=ids.resource_id("vsw", network.region),
            vpc_id=vpc.vpc_id,
            zone_id=required_text(props, "ZoneId"),
            cidr=cidr,
            name=text(props, "VSwitchName", "") or "",
        )
        network.vswitches[vswitch.vswitch_id] = vswitch
        ctx.resource.physical_id = vswitch.vswitch_id
        ctx.resource.state = vswitch
        self._attributes(ctx, vswitch)

    @staticmethod
    def _attributes(ctx: Context, vswitch: VSwitch) -> None:
        ctx.resource.attributes = {
            "VSwitchId": vswitch.vswitch_id,
            "CidrBlock": str(vswitch.cidr),
            "VSwitchName": vswitch.name,
            "Ipv6CidrBlock": "",
            "ZoneId": vswitch.zone_id,
        }

    async def update(self, ctx: Context, old: dict[str, Any], new: dict[str, Any]) -> None:
        vswitch = ctx.resource.state
        vswitch.name = text(new, "VSwitchName", "") or ""
        self._attributes(ctx, vswitch)

    async def delete(self, ctx: Context) -> None:
        _network(ctx).vswitches.pop(ctx.resource.physical_id, None)


def _rule(props: dict[str, Any], where: str) -> dict[str, Any]:
    protocol = (text(props, "IpProtocol") or "").lower()
    if protocol not in PROTOCOLS:
        raise ResourceFailed(
            "InvalidIpProtocol.Malformed",
            f"{where}: IpProtocol {protocol!r} is not one of {sorted(PROTOCOLS)}.",
        )
    port_range = text(props, "PortRange") or ""
    if not PORT_RANGE.match(port_range):
        raise ResourceFailed(
            "InvalidPortRange.Malformed", f"{where}: PortRange {port_range!r} is not like 22/22."
        )
    if port_range != "-1/-1":
        low, high = (int(p) for p in port_range.split("/"))
        if not 1 <= low <= high <= 65535:
            raise ResourceFailed(
                "InvalidPortRange.Malformed", f"{where}: PortRange {port_range} is out of range."
            )
    return {
        "IpProtocol": protocol,
        "PortRange": port_range,
        "SourceCidrIp": text(props, "SourceCidrIp", "") or "",
        "Policy": (text(props, "Policy", "accept") or "accept").lower(),
        "Priority": integer(props, "Priority", 1, 1, 100),
        "NicType": text(props, "NicType", "intranet") or "intranet",
    }


def _rule_id(group_id: str, rule: dict[str, Any]) -> str:
    digest = hashlib.sha256(repr(sorted(rule.items())).encode()).hexdigest()[:12]
    return f"{group_id}-{digest}"


class SecurityGroupType(ResourceType):
    name = "ALIYUN::ECS::SecurityGroup"
    attributes = frozenset({"SecurityGroupId", "SecurityGroupName"})
    replace_on = frozenset({"VpcId"})

    async def create(self, ctx: Context, props: dict[str, Any]) -> None:
        network = _network(ctx)
        vpc_id = text(props, "VpcId", "") or ""
        if vpc_id:
            network.vpc(vpc_id)
        group = SecurityGroup(
            group_id=ids.resource_id("sg", network.region),
            vpc_id=vpc_id,
            name=text(props, "SecurityGroupName", "") or "",
        )
        self._rules(group, props)
        network.groups[group.group_id] = group
        ctx.resource.physical_id = group.group_id
        ctx.resource.state = group
        ctx.resource.attributes = {
            "SecurityGroupId": group.group_id,
            "SecurityGroupName": group.name,
        }

    @staticmethod
    def _rules(group: SecurityGroup, props: dict[str, Any]) -> None:
        inline = {k: v for k, v in group.rules.items() if v.get("inline")}
        for key in inline:
            del group.rules[key]
        rules = props.get("SecurityGroupIngress") or []
        if not isinstance(rules, list):
            raise ResourceFailed("InvalidParameter", "SecurityGroupIngress must be a list.")
        for n, raw in enumerate(rules):
            if not isinstance(raw, dict):
                raise ResourceFailed(
                    "InvalidParameter", f"SecurityGroupIngress[{n}] must be a mapping."
                )
            rule = _rule(raw, f"SecurityGroupIngress[{n}]")
            group.rules[_rule_id(group.group_id, rule)] = {**rule, "inline": True}

    async def update(self, ctx: Context, old: dict[str, Any], new: dict[str, Any]) -> None:
        group = ctx.resource.state
        group.name = text(new, "SecurityGroupName", "") or ""
        self._rules(group, new)
        ctx.resource.attributes["SecurityGroupName"] = group.name

    async def delete(self, ctx: Context) -> None:
        _network(ctx).groups.pop(ctx.resource.physical_id, None)


class SecurityGroupIngressType(ResourceType):
    name = "ALIYUN::ECS::SecurityGroupIngress"
    required = ("IpProtocol", "PortRange")
    replace_on = frozenset({"*"})

    async def create(self, ctx: Context, props: dict[str, Any]) -> None:
        group = _network(ctx).group(required_text(props, "SecurityGroupId"))
        rule = _rule(props, ctx.resource.logical_id)
        rule_id = _rule_id(group.group_id, rule)
        group.rules[rule_id] = rule
        ctx.resource.physical_id = rule_id
        ctx.resource.state = (group.group_id, rule_id)

    async def delete(self, ctx: Context) -> None:
        group_id, rule_id = ctx.resource.state
        group = _network(ctx).groups.get(group_id)
        if group is not None:
            group.rules.pop(rule_id, None)
