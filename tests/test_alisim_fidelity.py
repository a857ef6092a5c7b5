"""alisim's documents and answers against Alibaba's own samples (shared/reference/) and the
real services' behaviour: event envelopes, requests without an action, anonymous OSS calls,
and CRC-64 off the event loop."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import time
from typing import Any
from xml.etree import ElementTree

import httpx
import oss2
import pytest
from alibabacloud_ecs20140526 import models as ecs_models
from alibabacloud_ecs20140526.client import Client as EcsClient
from alibabacloud_tea_openapi import exceptions as sdk_errors

from alicloud_runbooks.events.mapping import from_cloud_event
from alisim.config import DEFAULT_ACCOUNT_ID
from alisim.oss.store import HASH_IN_THREAD_BYTES, OssObject
from alisim.server import AlisimServer
from tests.helpers import REGION, call_action, events, patch_settings, wait_until

# The samples: "time": "2020-11-19T21:04:41+08:00", "aliyunpublishtime": "2020-11-19T21:04:42Z".
SAMPLE_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+08:00$")
SAMPLE_PUBLISH_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
MS_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+08:00$")
MS_PUBLISH_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def _boot(client: EcsClient, sim: AlisimServer) -> str:
    [instance] = client.run_instances(
        ecs_models.RunInstancesRequest(
            region_id=REGION, image_id="aliyun_3_x64", instance_type="ecs.g7.large"
        )
    ).body.instance_id_sets.instance_id_set
    wait_until(lambda: events(sim, "ecs:CloudAssistant:FirstHeartbeat", instance))
    return instance


def _run(client: EcsClient, instance: str, **fields: Any) -> str:
    return client.run_command(
        ecs_models.RunCommandRequest(
            region_id=REGION,
            type="RunShellScript",
            command_content="echo hi",
            instance_id=[instance],
            **fields,
        )
    ).body.invoke_id


# ---------------------------------------------------------------- CloudEvents envelopes
def test_event_times_are_whole_seconds_in_utc_plus_8_as_in_the_samples(
    client: EcsClient, sim: AlisimServer
) -> None:
    patch_settings(sim, event_time_precision="seconds")
    before = time.time()
    instance = _boot(client, sim)
    invoke_id = _run(client, instance)
    wait_until(lambda: events(sim, "ecs:CloudAssistant:TaskCompleted", invoke_id))
    after = time.time()
    published = httpx.get(f"{sim.url}/_alisim/events").json()["events"]
    assert {e["type"] for e in published} >= {
        "ecs:Instance:StateChange",
        "ecs:CloudAssistant:FirstHeartbeat",
        "ecs:CloudAssistant:TaskCompleted",
    }
    for event in published:
        assert SAMPLE_TIME.match(event["time"]), event["time"]
        assert SAMPLE_PUBLISH_TIME.match(event["aliyunpublishtime"]), event["aliyunpublishtime"]
        moment = dt.datetime.fromisoformat(event["time"]).timestamp()
        assert int(before) <= moment <= after
        # The relay keeps the source's time as sent; the runbooks' waits parse it so.
        mapped = from_cloud_event(event, received=dt.datetime.now(dt.UTC))
        assert mapped["payload"]["acs"]["time"] == event["time"]


def test_event_times_keep_milliseconds_when_asked(client: EcsClient, sim: AlisimServer) -> None:
    patch_settings(sim, event_time_precision="milliseconds")
    instance = _boot(client, sim)
    for event in events(sim, "ecs:Instance:StateChange", instance):
        assert MS_TIME.match(event["time"]), event["time"]
        assert MS_PUBLISH_TIME.match(event["aliyunpublishtime"])


def test_task_events_carry_the_sample_subject_and_heartbeats_no_placeholder(
    client: EcsClient, sim: AlisimServer
) -> None:
    bucket = oss2.Bucket(
        oss2.Auth("LTAI5tAlisimLocalKey0001", "alisim-local-secret-not-for-production"),
        sim.url,
        "fidelity-out",
    )
    bucket.create_bucket()
    instance = _boot(client, sim)
    [heartbeat] = events(sim, "ecs:CloudAssistant:FirstHeartbeat", instance)
    assert heartbeat["data"]["extensions"] == ""
    assert heartbeat["subject"] == f"acs:ecs:{REGION}:{DEFAULT_ACCOUNT_ID}:instance/{instance}"

    invoke_id = _run(client, instance, oss_output_delivery="oss://fidelity-out/out")
    [done] = wait_until(lambda: events(sim, "ecs:CloudAssistant:TaskCompleted", invoke_id))
    [delivered] = wait_until(lambda: events(sim, "ecs:CloudAssistant:OutputDelivered", invoke_id))
    # The TaskCompleted sample: "subject": "acs.ecs:cn-hangzhou:123456789098****:215672".
    for event in (done, delivered):
        assert event["subject"] == f"acs.ecs:{REGION}:{DEFAULT_ACCOUNT_ID}:{invoke_id}"
    assert done["data"]["errorDesc"] == ""


# ---------------------------------------------------------------- requests without an action
def _json_error(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"].startswith("application/json"), response.text
    return response.json()


@pytest.mark.parametrize(
    ("method", "path", "headers", "data"),
    [
        ("POST", "/", {}, {"Version": "2014-05-26", "RegionId": REGION}),
        ("POST", "/", {}, {"RegionId": REGION}),
        ("GET", "/?Version=2014-05-26&SignatureMethod=HMAC-SHA1&Format=JSON", {}, None),
        ("GET", "/?SignatureNonce=1", {}, None),
        ("GET", "/", {"x-acs-version": "2014-05-26"}, None),
        ("POST", "/", {"Authorization": "ACS3-HMAC-SHA256 Credential=x"}, None),
        ("GET", "/anything", {"x-acs-signature-nonce": "n"}, None),
    ],
)
def test_an_openapi_request_without_action_gets_an_openapi_error(
    sim: AlisimServer,
    method: str,
    path: str,
    headers: dict[str, str],
    data: dict[str, str] | None,
) -> None:
    response = httpx.request(method, sim.url + path, headers=headers, data=data)
    assert response.status_code == 400
    body = _json_error(response)
    assert body["Code"] == "MissingParameter"
    assert '"Action"' in body["Message"]
    assert body["RequestId"] == response.headers["x-acs-request-id"]


def test_the_sdk_without_an_action_gets_missing_parameter(
    sim: AlisimServer, client: EcsClient
) -> None:
    with pytest.raises(sdk_errors.ClientException) as info:
        call_action(client, "", "2014-05-26", {"RegionId": REGION})
    assert info.value.code == "MissingParameter"


def test_requests_shaped_as_oss_still_reach_oss(sim: AlisimServer) -> None:
    for response in (httpx.get(f"{sim.url}/"), httpx.post(f"{sim.url}/")):
        assert response.headers["content-type"].startswith("application/xml")
        assert ElementTree.fromstring(response.content).tag == "Error"


# ---------------------------------------------------------------- anonymous OSS requests
def _anonymous(sim: AlisimServer, name: str) -> oss2.Bucket:
    return oss2.Bucket(oss2.AnonymousAuth(), sim.url, name)


def test_anonymous_requests_for_an_unknown_bucket_get_no_such_bucket(sim: AlisimServer) -> None:
    for call in (
        lambda b: b.get_object("k"),
        lambda b: b.head_object("k"),
        lambda b: b.put_object("k", b"v"),
        lambda b: b.list_objects(),
        lambda b: b.get_bucket_info(),
        lambda b: b.delete_object("k"),
    ):
        with pytest.raises(oss2.exceptions.NoSuchBucket) as info:
            call(_anonymous(sim, "no-such-bucket"))
        assert info.value.status == 404
    raw = httpx.get(f"{sim.url}/no-such-bucket/k")
    assert raw.status_code == 404
    assert ElementTree.fromstring(raw.content).findtext("BucketName") == "no-such-bucket"


def test_anonymous_requests_for_a_bucket_that_exists_are_denied(
    sim: AlisimServer, access_key: tuple[str, str]
) -> None:
    oss2.Bucket(oss2.Auth(*access_key), sim.url, "private-one").create_bucket()
    with pytest.raises(oss2.exceptions.AccessDenied):
        _anonymous(sim, "private-one").get_object("k")
    with pytest.raises(oss2.exceptions.AccessDenied):
        _anonymous(sim, "brand-new").create_bucket()


# ---------------------------------------------------------------- CRC-64 off the event loop
def test_a_large_object_is_hashed_off_the_event_loop() -> None:
    """While a 32 MiB object is hashed the loop keeps running other tasks; inline hashing
    would hold it until the end."""

    async def scenario() -> tuple[int, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        obj = OssObject("big", os.urandom(32 * 1024 * 1024))
        started = ticks
        await obj.hash()
        during = ticks - started
        task.cancel()
        small = OssObject("small", b"x" * HASH_IN_THREAD_BYTES)
        started = ticks
        await small.hash()
        return during, ticks - started

    during, small = asyncio.run(scenario())
    assert during >= 5
    assert small == 0, "a small object is hashed inline, without a thread hop"


def test_oss2_checks_the_crc_of_large_objects_both_ways(
    sim: AlisimServer, access_key: tuple[str, str]
) -> None:
    bucket = oss2.Bucket(oss2.Auth(*access_key), sim.url, "crc-checked", enable_crc=True)
    bucket.create_bucket()
    data = os.urandom(HASH_IN_THREAD_BYTES * 8 + 17)
    put = bucket.put_object("big", data)  # oss2 raises InconsistentError on a CRC mismatch
    got = bucket.get_object("big")
    assert got.read() == data
    assert got.client_crc == got.server_crc == put.crc
    copied = bucket.copy_object("crc-checked", "big", "copy")
    assert int(copied.headers["x-oss-hash-crc64ecma"]) == put.crc
