"""Contract 1 vocabulary: Alibaba event types and the Prefect names and resource ids they get."""

from __future__ import annotations

import hashlib

FIRST_HEARTBEAT_TYPE = "ecs:CloudAssistant:FirstHeartbeat"
TASK_COMPLETED_TYPE = "ecs:CloudAssistant:TaskCompleted"
# Alibaba's references do not give this EventBridge type; it is also a relay setting.
OUTPUT_DELIVERED_TYPE = "ecs:CloudAssistant:OutputDelivered"
INSTANCE_STATE_CHANGE_TYPE = "ecs:Instance:StateChange"
STACK_STATUS_CHANGE_TYPE = "ros:Stack:StatusChange"
# `ros:StackStateChange:CreateComplete`, `…:CreateRollbackFailed`…: one type per status.
STACK_STATE_CHANGE_PREFIX = "ros:StackStateChange:"

FIRST_HEARTBEAT = "acs.ecs.CloudAssistant.FirstHeartbeat"
TASK_COMPLETED = "acs.ecs.CloudAssistant.TaskCompleted"
OUTPUT_DELIVERED = "acs.ecs.CloudAssistant.OutputDelivered"
INSTANCE_STATE_CHANGE = "acs.ecs.Instance.StateChange"
STACK_STATUS_CHANGE = "acs.ros.Stack.StatusChange"

REGION_LABEL = "acs.region"
ACCOUNT_LABEL = "acs.account-id"
INVOCATION_STATUS_LABEL = "acs.ecs.invocation-status"
DELIVERY_STATUS_LABEL = "acs.ecs.delivery-status"
# On TaskCompleted, always present ("" when the event names no command), so a trigger can
# leave a command out by name (`!collect-diagnostics`: Prefect's negation needs the label).
COMMAND_NAME_LABEL = "acs.ecs.command-name"
INSTANCE_STATE_LABEL = "acs.ecs.instance-state"
STACK_STATUS_LABEL = "acs.ros.stack-status"
STACK_NAME_LABEL = "acs.ros.stack-name"

# Prefect refuses event names over 1,024 characters. Resource ids and other label values have
# no documented limit, but an id is a database key and labels are what triggers match on.
MAX_NAME_LENGTH = 200
MAX_LABEL_LENGTH = 256


def bounded(text: str, limit: int) -> str:
    """`text` itself if short enough, else its start and a hash of the whole: two long values
    stay distinct, and the start still matches a prefix filter."""
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{text[: limit - len(digest) - 1]}.{digest}"


def instance_resource(instance_id: str) -> str:
    return f"acs.ecs.instance.{instance_id}"


def invocation_resource(invoke_id: str) -> str:
    return f"acs.ecs.invocation.{invoke_id}"


def command_resource(command_id: str) -> str:
    return f"acs.ecs.command.{command_id}"


def stack_resource(stack_id: str) -> str:
    return f"acs.ros.stack.{stack_id}"
