"""A stack's terminal statuses in their three forms (EventBridge events, the CloudMonitor
`Stack:StatusChange` notification, NotificationURLs POSTs), pushed by alisim's delivery engine
to real HTTP receivers, with its retries and dead letters; then through the relay into a real
Prefect server as one event name for every form."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from alibabacloud_eventbridge20200401.client import Client as EventBridgeClient
from alibabacloud_ros20190910 import models as ros

from alicloud_runbooks.events.mapping import from_cloud_event, from_ros_notification
from alicloud_runbooks.relay.app import create_app
from alicloud_runbooks.relay.settings import RelaySettings
from alicloud_runbooks.subscribe import subscribe
from local_stack.servers import ThreadedServer
from tests import samples
from tests.helpers import wait_until
from tests.ros_support import (
    HANDLE,
    REGION,
    create,
    gone,
    make_ros_client,
    patch_settings,
    set_faults,
    settle,
    template,
)
from tests.test_eventbridge_delivery import Receiver, config, create_rule, http_target

TOKEN = "ros-events-token"
OUTPUTS = {"Url": {"Value": {"Fn::GetAtt": ["Handle", "URL"]}, "Description": "signal here"}}
BODY = template({"Handle": HANDLE}, Outputs=OUTPUTS)
FAILING = template(
    {
        "Handle": HANDLE,
        "Wait": {
            "Type": "ALIYUN::ROS::WaitCondition",
            "Properties": {"Handle": {"Ref": "Handle"}, "Timeout": 1},
        },
    }
)


@pytest.fixture
def client(sim, access_key):
    return make_ros_client(sim, access_key)


@pytest.fixture
def bridge(sim, access_key) -> EventBridgeClient:
    return EventBridgeClient(config(sim, access_key))


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def pushed(receiver: Receiver, path: str) -> list[dict[str, Any]]:
    return [r.json() for r in receiver.delivered(path)]


def types_at(receiver: Receiver, path: str) -> list[str]:
    return [e.get("type") for e in pushed(receiver, path)]


def test_three_forms_reach_their_receivers(sim, client, bridge, receiver) -> None:
    create_rule(
        bridge,
        "ros-events",
        json.dumps({"source": ["acs.ros"]}),
        [http_target("receiver", f"{receiver.url}/eventbridge")],
    )
    httpx.post(
        f"{sim.url}/_alisim/cloudmonitor/subscriptions",
        json={"url": f"{receiver.url}/cloudmonitor", "names": ["Stack:StatusChange"]},
    ).raise_for_status()
    urls = [f"{receiver.url}/notify", "eventbridge"]
    stack_id = create(client, BODY, name="announced", notification_urls=urls)
    stack = settle(client, stack_id)
    assert stack.status == "CREATE_COMPLETE"

    def arrived(requests: list[Any]) -> bool:
        paths = [r.path for r in requests]
        return {"/eventbridge", "/cloudmonitor", "/notify"} <= set(paths) and (
            paths.count("/eventbridge") >= 2
        )

    receiver.wait_for(arrived)
    by_type = {e["type"]: e for e in pushed(receiver, "/eventbridge")}
    assert set(by_type) == {"ros:Stack:StatusChange", "ros:StackStateChange:CreateComplete"}
    status_change = by_type["ros:Stack:StatusChange"]
    arn = f"acs:ros:{REGION}:{sim.cloud.settings.account_id}:stack/{stack_id}"
    assert status_change["source"] == "acs.ros" and status_change["subject"] == arn
    assert status_change["data"] == {
        "callerId": sim.cloud.settings.account_id,
        "requestId": status_change["data"]["requestId"],
        "stackId": stack_id,
        "stackName": "announced",
        "status": "CREATE_COMPLETE",
        "statusReason": "Stack CREATE completed successfully",
    }
    assert status_change["data"]["requestId"]
    state = by_type["ros:StackStateChange:CreateComplete"]["data"]
    assert state["StackId"] == stack_id and state["Status"] == "CREATE_COMPLETE"
    assert state["Outputs"][0]["OutputKey"] == "Url" and state["RegionId"] == REGION

    [notice] = pushed(receiver, "/cloudmonitor")
    sample = samples.STACK_STATUS_CHANGE_CM
    assert set(notice) == set(sample)
    assert set(notice["Content"]) == set(sample["Content"])
    assert {k: type(v) for k, v in notice.items()} == {k: type(v) for k, v in sample.items()}
    assert notice["ResourceId"] == arn and notice["Content"]["stackId"] == stack_id
    assert notice["Content"]["status"] == "CREATE_COMPLETE"
    assert (notice["Status"], notice["Product"], notice["Level"], notice["Name"]) == (
        "Normal",
        "ros",
        "INFO",
        "Stack:StatusChange",
    )
    assert notice["GroupId"] == "0" and notice["InstanceName"] == ""
    assert abs(notice["Time"] / 1000 - datetime.now(UTC).timestamp()) < 60

    [posted] = pushed(receiver, "/notify")
    assert set(posted) == {"Outputs", "StackId", "StackName", "Status"}
    assert posted["Status"] == "CREATE_COMPLETE" and posted["StackName"] == "announced"
    assert posted["Outputs"] == [
        {
            "OutputKey": "Url",
            "OutputValue": posted["Outputs"][0]["OutputValue"],
            "Description": "signal here",
        }
    ]

    client.delete_stack(ros.DeleteStackRequest(region_id=REGION, stack_id=stack_id))
    gone(client, stack_id)
    receiver.wait_for(lambda requests: sum(r.path == "/notify" for r in requests) == 2)
    assert [p["Status"] for p in pushed(receiver, "/notify")] == [
        "CREATE_COMPLETE",
        "DELETE_COMPLETE",
    ]
    receiver.wait_for(lambda r: len(types_at(receiver, "/eventbridge")) >= 4)
    assert "ros:StackStateChange:DeleteComplete" in types_at(receiver, "/eventbridge")
    statuses = [
        e["data"].get("status") or e["data"].get("Status") for e in pushed(receiver, "/eventbridge")
    ]
    assert len(statuses) == 4 and not any(s.endswith("IN_PROGRESS") for s in statuses)


def test_rollback_announces_create_rollback_not_create_failed(
    sim, client, bridge, receiver
) -> None:
    create_rule(
        bridge,
        "ros-events",
        json.dumps({"source": ["acs.ros"]}),
        [http_target("receiver", f"{receiver.url}/eventbridge")],
    )
    stack_id = create(
        client, FAILING, name="rolled", notification_urls=[f"{receiver.url}/notify", "eventbridge"]
    )
    assert settle(client, stack_id).status == "CREATE_ROLLBACK_COMPLETE"
    receiver.wait_for(lambda r: len([x for x in r if x.path == "/eventbridge"]) >= 2)
    receiver.wait_for(lambda r: any(x.path == "/notify" for x in r))
    assert sorted(types_at(receiver, "/eventbridge")) == [
        "ros:Stack:StatusChange",
        "ros:StackStateChange:CreateRollbackComplete",
    ]
    [status] = [
        e for e in pushed(receiver, "/eventbridge") if e["type"] == "ros:Stack:StatusChange"
    ]
    assert status["data"]["status"] == "CREATE_ROLLBACK_COMPLETE"
    assert [p["Status"] for p in pushed(receiver, "/notify")] == ["CREATE_ROLLBACK_COMPLETE"]


def test_state_change_events_follow_the_setting(sim, client, bridge, receiver) -> None:
    create_rule(
        bridge,
        "ros-events",
        json.dumps({"type": [{"prefix": "ros:StackStateChange:"}]}),
        [http_target("receiver", f"{receiver.url}/eventbridge")],
    )
    settle(client, create(client, BODY, name="quiet"))
    patch_settings(sim, ros_events={"state_change_events": "always", "source": "acs.ros"})
    settle(client, create(client, BODY, name="loud"))
    receiver.wait_for(lambda r: len(r) >= 1)
    [event] = pushed(receiver, "/eventbridge")
    assert event["data"]["StackName"] == "loud"


def test_notification_urls_retry_then_dead_letter(sim, client) -> None:
    patch_settings(sim, time_scale=0.0001)
    flaky = Receiver(fail_first=1)
    broken = Receiver(always_fail=True, fail_status=503)
    try:
        urls = [f"{flaky.url}/n", f"{broken.url}/n"]
        settle(client, create(client, BODY, name="retried", notification_urls=urls))
        flaky.wait_for(lambda r: any(x.status == 200 for x in r))
        assert [x.status for x in flaky.requests] == [500, 200]

        def dead() -> list[Any]:
            letters = httpx.get(f"{sim.url}/_alisim/dead-letters").json()["dead_letters"]
            return [d for d in letters if d["event"] and d["event"].get("StackName") == "retried"]

        [letter] = wait_until(dead)
        assert letter["attempts"] == 4 and letter["last_status_code"] == 503
        records = httpx.get(
            f"{sim.url}/_alisim/deliveries", params={"channel": "notification"}
        ).json()["deliveries"]
        assert {r["outcome"] for r in records} >= {"delivered", "failed", "dead-lettered"}
    finally:
        flaky.close()
        broken.close()


def test_delivery_faults_apply_to_notifications(sim, client, receiver) -> None:
    set_faults(
        sim,
        {"delivery": {"drop_rate": 1.0, "event_types": ["ros:NotificationURL:CREATE_COMPLETE"]}},
    )
    settle(client, create(client, BODY, name="dropped", notification_urls=[f"{receiver.url}/n"]))
    wait_until(
        lambda: httpx.get(f"{sim.url}/_alisim/deliveries", params={"outcome": "dropped"}).json()[
            "deliveries"
        ]
    )
    assert receiver.requests == []


# ---------------------------------------------------------------- the relay's mapping


def test_every_form_maps_to_one_prefect_event_name() -> None:
    now = datetime.now(UTC)
    state = from_cloud_event(
        {
            "specversion": "1.0",
            "id": "e-1",
            "source": "acs.ros",
            "type": "ros:StackStateChange:CreateRollbackFailed",
            "aliyunregionid": REGION,
            "aliyunaccountid": "123",
            "data": {"StackId": "s-1", "StackName": "web", "Status": "CREATE_ROLLBACK_FAILED"},
        },
        received=now,
    )
    posted = from_ros_notification(
        {"Outputs": [], "StackId": "s-1", "StackName": "web", "Status": "UPDATE_COMPLETE"},
        received=now,
        region=REGION,
        account="123",
    )
    for event, status in ((state, "CREATE_ROLLBACK_FAILED"), (posted, "UPDATE_COMPLETE")):
        assert event["event"] == "acs.ros.Stack.StatusChange"
        assert event["resource"]["prefect.resource.id"] == "acs.ros.stack.s-1"
        assert event["resource"]["acs.ros.stack-status"] == status
        assert event["resource"]["acs.ros.stack-name"] == "web"
        assert event["resource"]["acs.region"] == REGION
    again = from_ros_notification(
        {"Outputs": [], "StackId": "s-1", "StackName": "web", "Status": "UPDATE_COMPLETE"},
        received=datetime.now(UTC),
        region=REGION,
    )
    assert again["id"] != posted["id"]


# ---------------------------------------------------------------- into Prefect


@pytest.fixture
def relay(prefect_server) -> Iterator[ThreadedServer]:
    server = ThreadedServer(
        create_app(RelaySettings(token=TOKEN, prefect_api_url=prefect_server.api_url))
    )
    server.start()
    yield server
    server.stop()


def test_all_forms_arrive_in_prefect_as_one_event_name(
    sim, client, bridge, relay, prefect_server
) -> None:
    subscribe(
        bridge, target_url=f"{relay.url}/eventbridge", token=TOKEN, dead_letter_arn="acs:mns:x:/q"
    )
    create_rule(
        bridge,
        "ros-state-changes",
        json.dumps({"source": ["acs.ros"], "type": [{"prefix": "ros:StackStateChange:"}]}),
        [http_target("relay", f"{relay.url}/eventbridge?token={TOKEN}")],
    )
    httpx.post(
        f"{sim.url}/_alisim/cloudmonitor/subscriptions",
        json={"url": f"{relay.url}/cloudmonitor?token={TOKEN}", "products": ["ros"]},
    ).raise_for_status()
    account = sim.cloud.settings.account_id
    notify = f"{relay.url}/ros-notification?token={TOKEN}&region={REGION}&account={account}"
    stack_id = create(client, FAILING, name="to-prefect", notification_urls=[notify, "eventbridge"])
    assert settle(client, stack_id).status == "CREATE_ROLLBACK_COMPLETE"

    def stored() -> list[dict[str, Any]] | None:
        events = httpx.post(
            f"{prefect_server.api_url}/events/filter",
            json={"filter": {"resource": {"id": [f"acs.ros.stack.{stack_id}"]}}, "limit": 50},
        ).json()["events"]
        return events if len(events) >= 4 else None

    events = wait_until(stored, timeout=30)
    assert {e["event"] for e in events} == {"acs.ros.Stack.StatusChange"}
    assert sorted(e["payload"]["acs"]["via"] for e in events) == [
        "cloudmonitor",
        "eventbridge",
        "eventbridge",
        "notification",
    ]
    for event in events:
        assert event["resource"]["acs.ros.stack-status"] == "CREATE_ROLLBACK_COMPLETE"
        assert event["resource"]["acs.ros.stack-name"] == "to-prefect"
        assert event["resource"]["acs.region"] == REGION
