"""ROS as one entry of alisim's service list: its plain HTTP endpoint, its count in health,
and reset stopping stacks mid-operation."""

from __future__ import annotations

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response

from alisim.cloud import Cloud
from alisim.service import Service
from alisim.services import SERVICES
from tests.helpers import wait_until
from tests.ros_support import HANDLE, create, make_ros_client, resource_statuses, template


async def _route(cloud: Cloud, request: Request) -> Response:
    return Response("ok")


def test_http_prefixes_cannot_hide_a_bucket() -> None:
    with pytest.raises(ValueError, match="must start with '/_'"):
        Cloud(services=[Service("x", http={"/logs": _route})])
    with pytest.raises(ValueError, match="two services declare the HTTP prefix"):
        Cloud(services=[Service("a", http={"/_a": _route}), Service("b", http={"/_a": _route})])


def test_ros_is_one_entry_of_the_list() -> None:
    [entry] = [s for s in SERVICES if s.name == "ros"]
    assert entry.actions is not None and entry.actions.product.version == "2019-09-10"
    assert set(entry.http) == {"/_ros/waitcondition"}
    assert set(entry.notices) == {"ros:Stack:StatusChange"}


def test_health_counts_stacks_and_reset_stops_them(sim, access_key) -> None:
    client = make_ros_client(sim, access_key)
    waiting = template(
        {
            "Handle": HANDLE,
            "Wait": {
                "Type": "ALIYUN::ROS::WaitCondition",
                "Properties": {"Handle": {"Ref": "Handle"}, "Timeout": 43200},
            },
        }
    )
    stack_id = create(client, waiting, name="busy")
    wait_until(lambda: resource_statuses(client, stack_id).get("Wait") == "CREATE_IN_PROGRESS")
    assert httpx.get(f"{sim.url}/_alisim/health").json()["stacks"] == 1
    [task] = [s.task for s in sim.cloud.ros.stacks.values()]
    httpx.post(f"{sim.url}/_alisim/reset").raise_for_status()
    assert task.done()
    assert httpx.get(f"{sim.url}/_alisim/health").json()["stacks"] == 0
