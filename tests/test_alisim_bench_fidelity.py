"""alisim as benches need it: commands bounded per instance (not across the account), and a
timed log of API calls and events to measure runbooks from outside."""

from __future__ import annotations

import time

import httpx
from alibabacloud_ecs20140526 import models as ecs_models
from alibabacloud_ecs20140526.client import Client as EcsClient

from alisim.cloud import Cloud
from alisim.config import Settings
from alisim.server import AlisimServer
from tests.helpers import patch_settings
from tests.test_cloud_assistant import REGION, booted_instances, results, run, wait_status

MANY = 40  # more than the old global cap of 32


def test_commands_on_many_instances_all_run_at_once(client: EcsClient, sim: AlisimServer) -> None:
    ids = booted_instances(client, sim, amount=MANY)
    invoke_id = run(client, ids, "sleep 20")
    try:
        wait_status(client, invoke_id, "Running")
    finally:
        client.stop_invocation(
            ecs_models.StopInvocationRequest(region_id=REGION, invoke_id=invoke_id)
        )


def test_an_instance_runs_its_own_commands_up_to_its_bound(
    client: EcsClient, sim: AlisimServer
) -> None:
    patch_settings(sim, max_concurrent_commands_per_instance=1)
    first, second = booted_instances(client, sim, amount=2)
    busy = run(client, [first], "sleep 20")
    wait_status(client, busy, "Running")
    queued = run(client, [first], "echo later")
    elsewhere = run(client, [second], "sleep 20")
    try:
        wait_status(client, elsewhere, "Running")  # another instance is not held up
        assert {r.invocation_status for r in results(client, queued)} == {"Pending"}
    finally:
        for invoke_id in (busy, queued, elsewhere):
            client.stop_invocation(
                ecs_models.StopInvocationRequest(region_id=REGION, invoke_id=invoke_id)
            )


def test_call_log_times_each_call_and_event(client: EcsClient, sim: AlisimServer) -> None:
    before = time.time()
    client.describe_instances(ecs_models.DescribeInstancesRequest(region_id=REGION))
    httpx.post(
        f"{sim.url}/_alisim/events", json={"type": "custom:Thing:Happened", "source": "acs.x"}
    ).raise_for_status()
    after = time.time()
    log = httpx.get(f"{sim.url}/_alisim/call-log", params={"since": before}).json()
    [call] = [c for c in log["calls"] if c["action"] == "DescribeInstances"]
    assert call["product"] == "Ecs"
    assert before <= call["time"] <= after
    [event] = log["events"]
    assert event["type"] == "custom:Thing:Happened"
    assert call["time"] <= event["time"] <= after
    assert httpx.get(f"{sim.url}/_alisim/call-log", params={"since": after + 1}).json() == {
        "calls": [],
        "events": [],
    }
    assert httpx.get(f"{sim.url}/_alisim/call-log", params={"since": "x"}).status_code == 400
    httpx.delete(f"{sim.url}/_alisim/call-log").raise_for_status()
    assert httpx.get(f"{sim.url}/_alisim/call-log").json()["calls"] == []


def test_call_log_is_bounded() -> None:
    cloud = Cloud(Settings(call_log_limit=100))
    try:
        for n in range(150):
            cloud.count_call("Ecs", f"Action{n}")
        calls = cloud.call_log.since(0)["calls"]
        assert [c["action"] for c in calls] == [f"Action{n}" for n in range(50, 150)]
    finally:
        cloud._tmp and cloud._tmp.cleanup()
