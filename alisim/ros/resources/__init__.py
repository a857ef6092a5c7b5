"""The resource types alisim's ROS creates, by name (`TYPES`)."""

from __future__ import annotations

from alisim.ros.resources.base import ResourceType
from alisim.ros.resources.commands import CommandType, InvocationType, RunCommandType
from alisim.ros.resources.ecs import InstanceGroupType, InstanceType
from alisim.ros.resources.network import (
    SecurityGroupIngressType,
    SecurityGroupType,
    VpcType,
    VSwitchType,
)
from alisim.ros.resources.oss import BucketType
from alisim.ros.resources.wait import WaitConditionHandleType, WaitConditionType

TYPES: dict[str, ResourceType] = {
    kind.name: kind()
    for kind in (
        InstanceType,
        InstanceGroupType,
        RunCommandType,
        CommandType,
        InvocationType,
        WaitConditionHandleType,
        WaitConditionType,
        BucketType,
        VpcType,
        VSwitchType,
        SecurityGroupType,
        SecurityGroupIngressType,
    )
}
