"""How services are wired into alisim: one list, explicit routing tables, the region check in
dispatch, and reset rebuilding exactly what start-up builds."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import oss2
import pytest
from alibabacloud_ecs20140526 import models as ecs_models
from alibabacloud_ecs20140526.client import Client as EcsClient
from alibabacloud_eventbridge20200401 import models as eb
from alibabacloud_eventbridge20200401.client import Client as EventBridgeClient
from alibabacloud_tea_openapi import exceptions as sdk_errors
from alibabacloud_tea_openapi.client import Client as OpenApiClient
from alibabacloud_tea_openapi.utils_models import Config
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from alisim.cloud import Cloud
from alisim.config import zero_delay_settings
from alisim.openapi.params import Params
from alisim.openapi.registry import ECS, ActionTable, Product, Region
from alisim.server import AlisimServer, free_port
from alisim.service import Service
from alisim.services import SERVICES
from tests.helpers import REGION, call_action, events, make_client, patch_settings, wait_until

ECS_ROUTES = [
    route
    for service in SERVICES
    if service.actions is not None and service.actions.product == ECS
    for route in service.actions.routes()
]


def _snake(action: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", action).lower()


# ---------------------------------------------------------------- region check in dispatch
def test_every_ecs_action_but_delete_instance_requires_the_region() -> None:
    rules = {route.name: route.region for route in ECS_ROUTES}
    assert len(rules) == 17
    assert {name for name, rule in rules.items() if rule is not Region.REQUIRED} == {
        "DeleteInstance"
    }
    # The SDK's DeleteInstance sends no RegionId at all; every other request model has one.
    for name in rules:
        request = getattr(ecs_models, f"{name}Request")()
        assert hasattr(request, "region_id") == (name != "DeleteInstance"), name


@pytest.mark.parametrize(
    "action", [r.name for r in ECS_ROUTES if r.region is Region.REQUIRED], ids=str
)
def test_a_wrong_region_is_refused_before_the_handler_runs(ecs: EcsClient, action: str) -> None:
    """Through the SDK, in both signature modes: no other parameter given, so a handler that
    ran would answer something else (or succeed, for the Describe actions)."""
    request = getattr(ecs_models, f"{action}Request")(region_id="cn-nowhere")
    with pytest.raises(sdk_errors.ClientException) as info:
        getattr(ecs, _snake(action))(request)
    assert info.value.code == "InvalidRegionId.NotFound"
    assert info.value.status_code == 404
    assert "cn-nowhere" in info.value.message and REGION in info.value.message


@pytest.mark.parametrize(
    "action", [r.name for r in ECS_ROUTES if r.region is Region.REQUIRED], ids=str
)
def test_a_missing_region_is_refused_before_the_handler_runs(
    client: EcsClient, action: str
) -> None:
    with pytest.raises(sdk_errors.ClientException) as info:
        getattr(client, _snake(action))(getattr(ecs_models, f"{action}Request")())
    assert info.value.code == "MissingParameter"
    assert "RegionId" in info.value.message


def test_delete_instance_takes_no_region(client: EcsClient, sim: AlisimServer) -> None:
    [instance] = client.run_instances(
        ecs_models.RunInstancesRequest(
            region_id=REGION, image_id="aliyun_3_x64", instance_type="ecs.g7.large"
        )
    ).body.instance_id_sets.instance_id_set
    client.delete_instance(ecs_models.DeleteInstanceRequest(instance_id=instance, force=True))
    listed = client.describe_instances(ecs_models.DescribeInstancesRequest(region_id=REGION))
    assert listed.body.total_count == 0


# ---------------------------------------------------------------- one line adds a service
class Counter:
    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud
        self.count = 0
        self.stopped = False

    async def shutdown(self) -> None:
        self.stopped = True


async def _bump(cloud: Cloud, params: Params) -> dict[str, Any]:
    toy: Counter = cloud.toy  # type: ignore[attr-defined]
    toy.count += 1
    cloud.publish_event(
        source="acs.toy",
        type="toy:Counter:Bumped",
        subject=f"acs:toy:{cloud.settings.region}:{cloud.settings.account_id}:counter/1",
        data={"count": str(toy.count)},
    )
    return {"Count": toy.count}


async def _toy_route(cloud: Cloud, request: Request) -> Response:
    return JSONResponse({"count": cloud.toy.count})  # type: ignore[attr-defined]


TOY_PRODUCT = Product("Toy", "2099-01-01")
TOY = Service(
    "toy",
    Counter,
    actions=ActionTable(TOY_PRODUCT, {"Bump": _bump}),
    devapi={"toy": _toy_route},
    summary=lambda state: {"bumps": state.count},
    shutdown=Counter.shutdown,
)


@pytest.fixture
def toy_sim(access_key: tuple[str, str]):
    server = AlisimServer(zero_delay_settings(), services=(*SERVICES, TOY))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _openapi(server: AlisimServer, access_key: tuple[str, str]) -> OpenApiClient:
    return OpenApiClient(
        Config(
            access_key_id=access_key[0],
            access_key_secret=access_key[1],
            endpoint=server.endpoint,
            protocol="http",
            region_id=REGION,
        )
    )


def test_a_service_added_to_the_list_is_served_reset_and_shut_down(
    toy_sim: AlisimServer, access_key: tuple[str, str]
) -> None:
    client = _openapi(toy_sim, access_key)
    with pytest.raises(sdk_errors.ClientException) as info:
        call_action(client, "Bump", TOY_PRODUCT.version, {"RegionId": "cn-nowhere"})
    assert info.value.code == "InvalidRegionId.NotFound"
    assert (
        call_action(client, "Bump", TOY_PRODUCT.version, {"RegionId": REGION})["body"]["Count"] == 1
    )
    [event] = events(toy_sim, "toy:Counter:Bumped")
    assert event["source"] == "acs.toy" and event["data"] == {"count": "1"}
    assert httpx.get(f"{toy_sim.url}/_alisim/toy").json() == {"count": 1}
    health = httpx.get(f"{toy_sim.url}/_alisim/health").json()
    assert health["bumps"] == 1 and "toy" in health["services"]
    assert httpx.get(f"{toy_sim.url}/_alisim/calls").json()["calls"]["Toy"] == {"Bump": 2}

    before: Counter = toy_sim.cloud.toy  # type: ignore[attr-defined]
    httpx.post(f"{toy_sim.url}/_alisim/reset").raise_for_status()
    assert before.stopped
    assert httpx.get(f"{toy_sim.url}/_alisim/toy").json() == {"count": 0}
    assert (
        call_action(client, "Bump", TOY_PRODUCT.version, {"RegionId": REGION})["body"]["Count"] == 1
    )


def test_a_service_left_out_of_the_list_is_not_served(access_key: tuple[str, str]) -> None:
    without_sts = tuple(s for s in SERVICES if s.name != "sts")
    with AlisimServer(zero_delay_settings(), services=without_sts) as server:
        client = _openapi(server, access_key)
        with pytest.raises(sdk_errors.ClientException) as info:
            call_action(client, "GetCallerIdentity", "2015-04-01", {})
        assert info.value.code == "InvalidVersion"


def test_clashing_declarations_are_refused_at_start() -> None:
    twice = Service("toy2", actions=ActionTable(TOY_PRODUCT, {"Bump": _bump}))
    with pytest.raises(ValueError, match="Bump is registered twice"):
        Cloud(services=(TOY, twice))
    with pytest.raises(ValueError, match="two services declare the service 'toy'"):
        Cloud(services=(TOY, TOY))


# ---------------------------------------------------------------- reset == start-up
def test_reset_rebuilds_every_service_as_start_up_builds_it() -> None:
    async def scenario() -> None:
        fresh = Cloud(zero_delay_settings())
        used = Cloud(zero_delay_settings())
        try:
            used.oss.create_bucket("kept-nowhere")
            used.instances.create(
                image_id="aliyun_3_x64",
                instance_type="ecs.g7.large",
                name=None,
                hostname=None,
                tags={},
                zone=None,
            )
            used.eventbridge.cloudmonitor.converters = {}
            used.count_call("Ecs", "RunInstances")
            before = {s.name: used.state(s) for s in used.services}
            await used.reset()
            for service in used.services:
                state, new = before[service.name], used.state(service)
                assert type(new) is type(fresh.state(service)), service.name
                if new is not None:
                    assert new is not state, f"reset kept {service.name}'s state"
            assert used.summary() == fresh.summary()
            assert used.calls_by_product() == fresh.calls_by_product() == {}
            assert used.oss.buckets == fresh.oss.buckets == {}
            assert used.eventbridge.cloudmonitor.converters == used.notices
        finally:
            await fresh.shutdown()
            await used.shutdown()

    asyncio.run(scenario())


def _answers(server: AlisimServer, access_key: tuple[str, str]) -> dict[str, Any]:
    """What each service answers about its resources, through the official SDKs."""
    ecs = make_client(server, access_key)
    bridge = EventBridgeClient(
        Config(
            access_key_id=access_key[0],
            access_key_secret=access_key[1],
            endpoint=server.endpoint,
            protocol="http",
            region_id=REGION,
        )
    )
    oss = oss2.Service(oss2.AuthV4(*access_key), server.url, region=REGION)
    health = httpx.get(f"{server.url}/_alisim/health").json()
    health.pop("events")
    return {
        "instances": ecs.describe_instances(
            ecs_models.DescribeInstancesRequest(region_id=REGION)
        ).body.to_map()["Instances"],
        "commands": ecs.describe_commands(
            ecs_models.DescribeCommandsRequest(region_id=REGION)
        ).body.to_map()["Commands"],
        "invocations": ecs.describe_invocations(
            ecs_models.DescribeInvocationsRequest(region_id=REGION)
        ).body.to_map()["Invocations"],
        "buses": [
            b.event_bus_name
            for b in bridge.list_event_buses(eb.ListEventBusesRequest()).body.data.event_buses
        ],
        "rules": bridge.list_rules(eb.ListRulesRequest(event_bus_name="default")).body.data.total,
        "buckets": [b.name for b in oss.list_buckets().buckets],
        "subscriptions": httpx.get(f"{server.url}/_alisim/cloudmonitor/subscriptions").json(),
        "dead_letters": httpx.get(f"{server.url}/_alisim/dead-letters").json()["count"],
        "deliveries": httpx.get(f"{server.url}/_alisim/deliveries").json()["deliveries"],
        "calls": httpx.get(f"{server.url}/_alisim/calls").json(),
        "faults": httpx.get(f"{server.url}/_alisim/faults").json(),
        "endpoints": httpx.get(f"{server.url}/_alisim/no-such").json()["endpoints"],
        "health": health,
    }


def test_a_reset_cloud_answers_as_a_fresh_one(
    sim: AlisimServer, access_key: tuple[str, str]
) -> None:
    # Pushes to a closed port, retried at once (time_scale 0), end as dead letters.
    patch_settings(sim, time_scale=0)
    httpx.post(
        f"{sim.url}/_alisim/cloudmonitor/subscriptions",
        json={"url": f"http://127.0.0.1:{free_port()}/closed"},
    ).raise_for_status()
    ecs = make_client(sim, access_key)
    [instance] = ecs.run_instances(
        ecs_models.RunInstancesRequest(
            region_id=REGION, image_id="aliyun_3_x64", instance_type="ecs.g7.large"
        )
    ).body.instance_id_sets.instance_id_set
    wait_until(
        lambda: (
            ecs.describe_cloud_assistant_status(
                ecs_models.DescribeCloudAssistantStatusRequest(
                    region_id=REGION, instance_id=[instance]
                )
            )
            .body.instance_cloud_assistant_status_set.instance_cloud_assistant_status[0]
            .cloud_assistant_status
            == "true"
        )
    )
    ecs.run_command(
        ecs_models.RunCommandRequest(
            region_id=REGION,
            type="RunShellScript",
            command_content="echo hi",
            instance_id=[instance],
            keep_command=True,
        )
    )
    oss2.Bucket(oss2.AuthV4(*access_key), sim.url, "reset-me", region=REGION).create_bucket()
    httpx.put(
        f"{sim.url}/_alisim/faults", json={"api": [{"action": "Nothing", "error": "Throttling"}]}
    ).raise_for_status()
    wait_until(lambda: httpx.get(f"{sim.url}/_alisim/dead-letters").json()["count"])
    assert _answers(sim, access_key)["instances"]["Instance"]

    httpx.post(f"{sim.url}/_alisim/reset").raise_for_status()
    with AlisimServer(zero_delay_settings(send_window_seconds=5.0)) as fresh:
        assert _answers(sim, access_key) == _answers(fresh, access_key)
