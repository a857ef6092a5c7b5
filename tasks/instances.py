"""Batch tasks around ECS instances: launch (idempotent per flow run), select (by ids, tags
or a ROS stack), delete."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from alibabacloud_ecs20140526 import models as ecs
from alibabacloud_ros20190910 import models as ros
from prefect import get_run_logger, task
from prefect.runtime import flow_run
from pydantic import BaseModel

from alicloud_runbooks.blocks import AlibabaCloudCredentials
from alicloud_runbooks.cloud_assistant import chunks
from alicloud_runbooks.errors import call
from alicloud_runbooks.text import plural

RUN_INSTANCES_MAX = 100
DELETE_INSTANCES_MAX = 100
DESCRIBE_PAGE_SIZE = 100
FLOW_RUN_TAG = "runbooks:flow-run"
_TOKENS = uuid.UUID("7b0c8f39-5a4e-4d0c-9a51-2f6c1d3e8b10")


def client_token(step: str, *parts: object) -> str:
    """A ClientToken that is the same each time this flow run reaches this step, so a retried
    flow run gets the instances (or invocation) of its first attempt instead of new ones."""
    run_id = flow_run.get_id() or uuid.uuid4().hex
    return str(uuid.uuid5(_TOKENS, "/".join(str(p) for p in (run_id, step, *parts))))


class Launched(BaseModel):
    instance_ids: list[str]
    launched_at: datetime
    client_tokens: list[str]


@task(name="launch-instances", persist_result=True)
def launch_instances(
    credentials: AlibabaCloudCredentials,
    count: int,
    image_id: str,
    instance_type: str,
    name: str = "runbook",
    tags: dict[str, str] | None = None,
    security_group_id: str | None = None,
    vswitch_id: str | None = None,
) -> Launched:
    """RunInstances, 100 per call (the API's limit), each call with its own derived token.

    Example:
        ```python
        from alicloud_runbooks.blocks import AlibabaCloudCredentials
        from tasks.instances import launch_instances

        launched = launch_instances(
            AlibabaCloudCredentials.load("prod"), 2, "aliyun_3_x64_20G_alibase_20240819.vhd",
            "ecs.g7.large", name="smoke-test",
        )
        print(launched.instance_ids)
        ```
    """
    logger = get_run_logger()
    client = credentials.ecs_client()
    all_tags = {**(tags or {}), FLOW_RUN_TAG: flow_run.get_id() or "none"}
    launched_at = datetime.now(UTC)
    ids: list[str] = []
    tokens: list[str] = []
    remaining, batch = count, 0
    while remaining > 0:
        amount = min(remaining, RUN_INSTANCES_MAX)
        token = client_token("launch-instances", batch, amount, image_id, instance_type)
        request = ecs.RunInstancesRequest(
            region_id=credentials.region_id,
            image_id=image_id,
            instance_type=instance_type,
            amount=amount,
            instance_name=name,
            security_group_id=security_group_id,
            v_switch_id=vswitch_id,
            client_token=token,
            tag=[ecs.RunInstancesRequestTag(key=k, value=v) for k, v in all_tags.items()],
        )
        body = call("RunInstances", lambda r=request: client.run_instances(r).body)
        ids += body.instance_id_sets.instance_id_set
        tokens.append(token)
        remaining -= amount
        batch += 1
    logger.info("Launched %s (%s): %s", plural(len(ids), "instance"), instance_type, ", ".join(ids))
    return Launched(instance_ids=ids, launched_at=launched_at, client_tokens=tokens)


@task(name="select-instances", persist_result=True)
def select_instances(
    credentials: AlibabaCloudCredentials,
    instance_ids: Sequence[str] | None = None,
    tags: dict[str, str] | None = None,
) -> list[str]:
    """The given ids, or the running instances carrying every tag (DescribeInstances, paged).

    Example:
        ```python
        from alicloud_runbooks.blocks import AlibabaCloudCredentials
        from tasks.instances import select_instances

        ids = select_instances(AlibabaCloudCredentials.load("prod"), tags={"env": "staging"})
        ```
    """
    if instance_ids:
        return list(dict.fromkeys(instance_ids))
    if not tags:
        raise ValueError("choose instances by instance_ids or by tags")
    client = credentials.ecs_client()
    found: list[str] = []
    token: str | None = None
    while True:
        request = ecs.DescribeInstancesRequest(
            region_id=credentials.region_id,
            status="Running",
            tag=[ecs.DescribeInstancesRequestTag(key=k, value=v) for k, v in tags.items()],
            max_results=DESCRIBE_PAGE_SIZE,
            next_token=token,
        )
        body = call("DescribeInstances", lambda r=request: client.describe_instances(r).body)
        found += [i.instance_id for i in body.instances.instance or []]
        token = body.next_token
        if not token:
            break
    get_run_logger().info("Selected %d running instances tagged %s", len(found), tags)
    return found


STACK_INSTANCE = "ALIYUN::ECS::Instance"
STACK_INSTANCE_GROUP = "ALIYUN::ECS::InstanceGroup"


def group_instance_ids(attributes: Sequence[Mapping[str, Any]] | None) -> list[str]:
    """The `InstanceIds` attribute of an InstanceGroup, from GetStackResource's
    `ResourceAttributes` (elements `{Key, Value}`; the value a list, or a JSON list as text)."""
    for attribute in attributes or []:
        if attribute.get("Key") != "InstanceIds":
            continue
        value = attribute.get("Value")
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list):
            return [str(v) for v in value]
    return []


@task(name="stack-instances", persist_result=True)
def stack_instances(credentials: AlibabaCloudCredentials, stack_id: str) -> list[str]:
    """The ECS instances of a ROS stack: ListStackResources (one call, the API does not page),
    each `ALIYUN::ECS::Instance`'s physical id, and each `ALIYUN::ECS::InstanceGroup`'s
    `InstanceIds` attribute (GetStackResource: a group's own physical id is not an instance
    id). Resources deleted or never created are left out.

    Example:
        ```python
        from alicloud_runbooks.blocks import AlibabaCloudCredentials
        from tasks.instances import stack_instances

        ids = stack_instances(AlibabaCloudCredentials.load("prod"), "4a6c9851-3b0f-4f5f-…")
        ```
    """
    client = credentials.ros_client()
    region = credentials.region_id
    body = call(
        "ListStackResources",
        lambda: (
            client.list_stack_resources(
                ros.ListStackResourcesRequest(region_id=region, stack_id=stack_id)
            ).body
        ),
    )
    found: list[str] = []
    for resource in body.resources or []:
        if (resource.status or "").startswith("DELETE_") or resource.status == "INIT_COMPLETE":
            continue
        if resource.resource_type == STACK_INSTANCE and resource.physical_resource_id:
            found.append(resource.physical_resource_id)
        elif resource.resource_type == STACK_INSTANCE_GROUP:
            logical_id = resource.logical_resource_id
            detail = call(
                "GetStackResource",
                lambda r=logical_id: (
                    client.get_stack_resource(
                        ros.GetStackResourceRequest(
                            region_id=region,
                            stack_id=stack_id,
                            logical_resource_id=r,
                            show_resource_attributes=True,
                            resource_attributes=["InstanceIds"],
                        )
                    ).body
                ),
            )
            found += group_instance_ids(detail.resource_attributes)
    found = list(dict.fromkeys(found))
    get_run_logger().info("Stack %s has %s", stack_id, plural(len(found), "ECS instance"))
    return found


@task(name="delete-instances")
def delete_instances(credentials: AlibabaCloudCredentials, instance_ids: Sequence[str]) -> None:
    """DeleteInstances (forced), 100 per call.

    Example:
        ```python
        from alicloud_runbooks.blocks import AlibabaCloudCredentials
        from tasks.instances import delete_instances

        delete_instances(AlibabaCloudCredentials.load("prod"), ["i-bp1…", "i-bp1…"])
        ```
    """
    client = credentials.ecs_client()
    for batch in chunks(list(instance_ids), DELETE_INSTANCES_MAX):
        request = ecs.DeleteInstancesRequest(
            region_id=credentials.region_id, instance_id=batch, force=True
        )
        call("DeleteInstances", lambda r=request: client.delete_instances(r))
    get_run_logger().info("Deleted %s", plural(len(instance_ids), "instance"))


@task(name="stop-instances")
def stop_instances(
    credentials: AlibabaCloudCredentials, instance_ids: Sequence[str], reason: str = "runbook"
) -> None:
    """StopInstances, 100 per call. Each instance's `runbooks.instance.stop-requested` event
    is emitted first, so `restart-stopped` knows a runbook asked for this stop and leaves the
    instance stopped.

    Example:
        ```python
        from alicloud_runbooks.blocks import AlibabaCloudCredentials
        from tasks.instances import stop_instances

        stop_instances(AlibabaCloudCredentials.load("prod"), ["i-bp1…"], reason="resize")
        ```
    """
    from prefect.events import Event

    from alicloud_runbooks.events import names
    from alicloud_runbooks.events.posting import post_events
    from alicloud_runbooks.restarts import STOP_REQUESTED

    client = credentials.ecs_client()
    for batch in chunks(list(instance_ids), DELETE_INSTANCES_MAX):
        post_events(
            [
                Event(
                    event=STOP_REQUESTED,
                    resource={
                        "prefect.resource.id": names.instance_resource(instance_id),
                        "prefect.resource.name": instance_id,
                    },
                    payload={"reason": reason, "flow_run": flow_run.get_id()},
                )
                for instance_id in batch
            ]
        )
        request = ecs.StopInstancesRequest(region_id=credentials.region_id, instance_id=batch)
        call("StopInstances", lambda r=request: client.stop_instances(r))
    get_run_logger().info("Stopped %s (%s)", plural(len(instance_ids), "instance"), reason)
