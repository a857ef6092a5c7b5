"""Events in, end to end: alisim's EventBridge → HTTP → relay → a real Prefect server.

The rules are created by `runbooks subscribe` through the official EventBridge SDK, and the
events come from instances launched and commands run through the official ECS SDK.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from alibabacloud_ecs20140526 import models as ecs

from alicloud_runbooks.clients import Endpoint, ecs_client, eventbridge_client
from alicloud_runbooks.relay.app import create_app
from alicloud_runbooks.relay.settings import RelaySettings
from alicloud_runbooks.subscribe import subscribe
from local_stack.servers import ThreadedServer, free_port
from tests.runbook_stack import launch

TOKEN = "end-to-end-token"
REGION = "cn-hangzhou"


@pytest.fixture
def clients(sim, access_key):
    endpoint = Endpoint(openapi=sim.endpoint, protocol="http")
    keys = {"access_key_id": access_key[0], "access_key_secret": access_key[1]}
    return (
        ecs_client(region=REGION, endpoint=endpoint, **keys),
        eventbridge_client(region=REGION, endpoint=endpoint, **keys),
    )


@pytest.fixture
def relay(prefect_server) -> Iterator[ThreadedServer]:
    server = ThreadedServer(
        create_app(RelaySettings(token=TOKEN, prefect_api_url=prefect_server.api_url))
    )
    server.start()
    yield server
    server.stop()


def prefect_events(
    prefect_server, resource_id: str, expect: set[str], timeout: float = 30
) -> list[dict]:
    """Events about `resource_id` once every name in `expect` is among them."""
    deadline = time.monotonic() + timeout
    while True:
        events = httpx.post(
            f"{prefect_server.api_url}/events/filter",
            json={"filter": {"resource": {"id": [resource_id]}}, "limit": 50},
        ).json()["events"]
        if expect <= {e["event"] for e in events} or time.monotonic() > deadline:
            return events
        time.sleep(0.2)


def test_subscribe_is_idempotent_and_events_arrive_in_prefect(
    sim, clients, relay, prefect_server
) -> None:
    ecs_api, eb_api = clients
    url = f"{relay.url}/eventbridge"
    first = subscribe(eb_api, target_url=url, token=TOKEN, dead_letter_arn="acs:mns:x:/q")
    again = subscribe(eb_api, target_url=url, token=TOKEN, dead_letter_arn="acs:mns:x:/q")
    assert [line.split()[0] for line in first] == ["created"] * 3
    assert [line.split()[0] for line in again] == ["updated"] * 3
    assert all(TOKEN not in line for line in first + again)

    [instance] = launch(ecs_api)
    run = ecs_api.run_command(
        ecs.RunCommandRequest(
            region_id=REGION,
            type="RunShellScript",
            command_content="exit 3",
            instance_id=[instance],
        )
    ).body
    names = {"acs.ecs.CloudAssistant.FirstHeartbeat", "acs.ecs.CloudAssistant.TaskCompleted"}
    events = prefect_events(prefect_server, f"acs.ecs.instance.{instance}", names)
    assert names <= {e["event"] for e in events}
    [done] = [e for e in events if e["event"] == "acs.ecs.CloudAssistant.TaskCompleted"]
    assert done["resource"]["acs.ecs.invocation-status"] == "Failed"
    assert done["payload"]["exitCode"] == "3"
    assert {
        "prefect.resource.id": f"acs.ecs.invocation.{run.invoke_id}",
        "prefect.resource.role": "invocation",
    } in done["related"]
    assert len({e["id"] for e in events}) == len(events)

    # The rule forwards the state the runbooks act on (Stopped), not the launch's Pending,
    # Starting and Running nor the Stopping before it.
    ecs_api.stop_instances(ecs.StopInstancesRequest(region_id=REGION, instance_id=[instance]))
    state_change = {"acs.ecs.Instance.StateChange"}
    events = prefect_events(prefect_server, f"acs.ecs.instance.{instance}", state_change)
    states = [
        e["resource"]["acs.ecs.instance-state"]
        for e in events
        if e["event"] == "acs.ecs.Instance.StateChange"
    ]
    assert states == ["Stopped"]


def test_relay_down_then_up_the_event_still_arrives(sim, clients, prefect_server) -> None:
    ecs_api, eb_api = clients
    httpx.patch(f"{sim.url}/_alisim/settings", json={"time_scale": 0.01}).raise_for_status()
    port = free_port()
    subscribe(
        eb_api,
        target_url=f"http://127.0.0.1:{port}/eventbridge",
        token=TOKEN,
        dead_letter_arn="acs:mns:x:/q",
    )
    [instance] = launch(ecs_api)
    deadline = time.monotonic() + 10
    while not httpx.get(f"{sim.url}/_alisim/deliveries", params={"outcome": "failed"}).json()[
        "deliveries"
    ]:
        assert time.monotonic() < deadline, "alisim never tried the dead relay"
        time.sleep(0.05)
    late = ThreadedServer(
        create_app(RelaySettings(token=TOKEN, prefect_api_url=prefect_server.api_url)), port=port
    )
    late.start()
    try:
        events = prefect_events(
            prefect_server,
            f"acs.ecs.instance.{instance}",
            {"acs.ecs.CloudAssistant.FirstHeartbeat"},
        )
        assert "acs.ecs.CloudAssistant.FirstHeartbeat" in {e["event"] for e in events}
    finally:
        late.stop()
    assert httpx.get(f"{sim.url}/_alisim/dead-letters").json()["count"] == 0


def test_events_the_relay_refuses_land_in_the_dead_letter_file(sim, clients, relay) -> None:
    ecs_api, eb_api = clients
    httpx.patch(f"{sim.url}/_alisim/settings", json={"time_scale": 0.0001}).raise_for_status()
    subscribe(
        eb_api,
        target_url=f"{relay.url}/eventbridge",
        token="wrong-token",
        dead_letter_arn="acs:mns:x:/q",
    )
    [instance] = launch(ecs_api)
    deadline = time.monotonic() + 30
    while True:
        letters = httpx.get(f"{sim.url}/_alisim/dead-letters").json()["dead_letters"]
        if any(instance in str(letter) for letter in letters):
            break
        assert time.monotonic() < deadline, "the rejected events never reached the dead letters"
        time.sleep(0.1)
