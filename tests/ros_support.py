"""Helpers of the ROS tests: the official ROS client on alisim, waits on stack statuses,
templates of the cheap resource types."""

from __future__ import annotations

import json
from typing import Any

import httpx
from alibabacloud_ros20190910 import models as ros
from alibabacloud_ros20190910.client import Client as RosClient
from alibabacloud_tea_openapi.exceptions import ClientException
from alibabacloud_tea_openapi.utils_models import Config

from alisim.server import AlisimServer
from tests.helpers import wait_until

REGION = "cn-hangzhou"
VERSION = "2015-09-01"


def make_ros_client(
    sim: AlisimServer, access_key: tuple[str, str], mode: str = "acs3"
) -> RosClient:
    config = Config(
        access_key_id=access_key[0],
        access_key_secret=access_key[1],
        endpoint=sim.endpoint,
        protocol="http",
        region_id=REGION,
    )
    if mode == "v2":
        config.signature_algorithm = "v2"
    return RosClient(config)


def template(resources: dict[str, Any], **sections: Any) -> str:
    return json.dumps({"ROSTemplateFormatVersion": VERSION, "Resources": resources, **sections})


HANDLE = {"Type": "ALIYUN::ROS::WaitConditionHandle"}


def create(
    client: RosClient,
    body: str,
    name: str = "stack",
    parameters: dict[str, str] | None = None,
    **options: Any,
) -> str:
    request = ros.CreateStackRequest(
        region_id=REGION,
        stack_name=name,
        template_body=body,
        parameters=[
            ros.CreateStackRequestParameters(parameter_key=k, parameter_value=v)
            for k, v in (parameters or {}).items()
        ]
        or None,
        **options,
    )
    return client.create_stack(request).body.stack_id


def get(client: RosClient, stack_id: str, **options: Any) -> Any:
    return client.get_stack(
        ros.GetStackRequest(region_id=REGION, stack_id=stack_id, **options)
    ).body


def settle(client: RosClient, stack_id: str, timeout: float = 30.0) -> Any:
    """GetStack until the stack leaves *_IN_PROGRESS (a client learns of it only by asking,
    or by the events); fail at the deadline."""

    def done() -> Any:
        body = get(client, stack_id)
        return None if body.status.endswith("_IN_PROGRESS") else body

    return wait_until(done, timeout=timeout)


def gone(client: RosClient, stack_id: str, timeout: float = 30.0) -> None:
    """Wait until GetStack answers StackNotFound (a deleted stack)."""

    def deleted() -> bool:
        try:
            status = get(client, stack_id).status
        except ClientException as exc:
            return exc.code == "StackNotFound"
        assert status in ("DELETE_IN_PROGRESS", "DELETE_COMPLETE"), status
        return False

    wait_until(deleted, timeout=timeout)


def events(client: RosClient, stack_id: str) -> list[Any]:
    """All the stack's events, oldest first."""
    found: list[Any] = []
    page = 1
    while True:
        body = client.list_stack_events(
            ros.ListStackEventsRequest(
                region_id=REGION, stack_id=stack_id, page_number=page, page_size=50
            )
        ).body
        found += body.events
        if page * 50 >= body.total_count:
            return list(reversed(found))
        page += 1


def resource_statuses(client: RosClient, stack_id: str) -> dict[str, str]:
    body = client.list_stack_resources(
        ros.ListStackResourcesRequest(region_id=REGION, stack_id=stack_id)
    ).body
    return {r.logical_resource_id: r.status for r in body.resources}


def outputs(body: Any) -> dict[str, Any]:
    return {o["OutputKey"]: o["OutputValue"] for o in body.outputs or []}


def set_faults(sim: AlisimServer, plan: dict[str, Any]) -> None:
    httpx.put(f"{sim.url}/_alisim/faults", json=plan).raise_for_status()


def patch_settings(sim: AlisimServer, **changes: Any) -> None:
    httpx.patch(f"{sim.url}/_alisim/settings", json=changes).raise_for_status()
