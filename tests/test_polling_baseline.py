"""The polling baseline of the side-by-side bench runs, end to end, against alisim."""

from __future__ import annotations

from itertools import islice

import httpx
import pytest
from alibabacloud_ecs20140526 import models as ecs_models

from alicloud_runbooks.blocks import AlibabaCloudCredentials
from alisim.config import DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET, BootTime
from alisim.server import AlisimServer
from bench.polling_runbook import (
    Intervals,
    _done,
    fixed,
    oos_backoff,
    polling_provision_and_run,
)
from tests.helpers import patch_settings

BUCKET = "polling-baseline"


def test_oos_backoff_doubles_from_two_seconds_up_to_five_minutes() -> None:
    assert list(islice(oos_backoff()(), 10)) == [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
    assert list(islice(fixed(5)(), 3)) == [5, 5, 5]


@pytest.mark.parametrize("intervals", [fixed(0.2), oos_backoff(first=0.1)], ids=["fixed", "oos"])
def test_polling_runbook_runs_two_instances(sim: AlisimServer, intervals: Intervals) -> None:
    # Agents come up after a moment, so the status loop must poll more than once.
    patch_settings(sim, boot_time_linux=BootTime(min_seconds=0.5, max_seconds=0.5).model_dump())
    credentials = AlibabaCloudCredentials(
        access_key_id=DEFAULT_ACCESS_KEY_ID,
        access_key_secret=DEFAULT_ACCESS_KEY_SECRET,
        region_id="cn-hangzhou",
        openapi_endpoint=sim.endpoint,
        oss_endpoint=sim.endpoint,
        protocol="http",
    )
    credentials.oss_bucket(BUCKET).create_bucket()
    figures = polling_provision_and_run(credentials, 2, "echo ok-$INSTANCE_ID", BUCKET, intervals)
    ids = figures.instance_ids
    assert len(ids) == 2
    assert figures.statuses == dict.fromkeys(ids, "Success")
    assert figures.outputs == {i: f"ok-{i}\n" for i in ids}
    assert figures.polls["agents"] >= 2
    assert figures.describe_calls["DescribeCloudAssistantStatus"] == figures.polls["agents"]
    assert figures.describe_calls["DescribeInvocationResults"] == figures.polls["results"]
    calls = httpx.get(f"{sim.url}/_alisim/calls").json()["calls"]
    assert calls["Ecs"]["DescribeInvocationResults"] == figures.polls["results"]
    assert calls["Oss"]["GetObject"] == 2
    left = credentials.ecs_client().describe_instances(
        ecs_models.DescribeInstancesRequest(region_id="cn-hangzhou")
    )
    assert not left.body.instances.instance


def test_the_results_loop_waits_for_the_delivery_too() -> None:
    """A final status with its OSS delivery still in progress is not done: reading then would
    find no object (alisim delivers too fast for the end-to-end test to show it)."""
    assert not _done(("Success", "InProgress", ""))
    assert not _done(("Running", "", ""))
    assert _done(("Success", "Finished", "oss://b/k"))
    assert _done(("Failed", "Failed", ""))
    assert _done(("Aborted", "", ""))  # nothing to deliver
