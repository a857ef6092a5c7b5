"""The credentials block: key pair, STS token and default chain against alisim through the
official SDKs; secrets kept out of reprs and the API; one clear error per failure."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from alibabacloud_ecs20140526 import models as ecs
from prefect.settings import PREFECT_API_URL, temporary_settings
from pydantic import ValidationError

from alicloud_runbooks.blocks import AlibabaCloudCredentials
from alicloud_runbooks.errors import AlibabaCloudError, call
from local_stack.servers import free_port

REGION = "cn-hangzhou"
ROOT = Path(__file__).resolve().parents[1]


def block(sim, access_key, **changes) -> AlibabaCloudCredentials:
    fields = {
        "access_key_id": access_key[0],
        "access_key_secret": access_key[1],
        "region_id": REGION,
        "openapi_endpoint": sim.endpoint,
        "oss_endpoint": sim.endpoint,
        "protocol": "http",
        **changes,
    }
    return AlibabaCloudCredentials(**fields)


def works(credentials: AlibabaCloudCredentials, bucket: str) -> None:
    client = credentials.ecs_client()
    body = call(
        "DescribeInstances",
        lambda: client.describe_instances(ecs.DescribeInstancesRequest(region_id=REGION)).body,
    )
    assert body.total_count == 0
    oss = credentials.oss_bucket(bucket)
    oss.create_bucket()
    oss.put_object("probe", b"ok")
    assert oss.get_object("probe").read() == b"ok"


def test_a_key_pair_block_makes_working_ecs_and_oss_clients(sim, access_key) -> None:
    works(block(sim, access_key), "pair")


def test_an_sts_token_block_works(sim) -> None:
    sts = httpx.post(f"{sim.url}/_alisim/sts", json={}).json()
    credentials = block(
        sim,
        (sts["AccessKeyId"], sts["AccessKeySecret"]),
        security_token=sts["SecurityToken"],
    )
    works(credentials, "sts")


CHAIN_SCRIPT = """
from alibabacloud_ecs20140526 import models as ecs
from alicloud_runbooks.blocks import AlibabaCloudCredentials
from alicloud_runbooks.errors import AlibabaCloudError, call
credentials = AlibabaCloudCredentials.from_environment()
assert credentials.uses_default_chain
client = credentials.ecs_client()
try:
    body = call("DescribeInstances", lambda: client.describe_instances(
        ecs.DescribeInstancesRequest(region_id="cn-hangzhou")).body)
except AlibabaCloudError as exc:
    print(exc)
else:
    bucket = credentials.oss_bucket("chain")
    bucket.create_bucket()
    print("instances", body.total_count, "bucket", bucket.get_bucket_info().name)
"""


def chain(sim, tmp_path, **env: str) -> str:
    """The default chain reads the environment when the SDK is imported: a fresh process."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("ALIBABA_CLOUD_")}
    base.update(
        HOME=str(tmp_path),
        PYTHONPATH=str(ROOT),
        ALIBABA_CLOUD_ECS_METADATA_DISABLED="true",
        RUNBOOKS_OPENAPI_ENDPOINT=sim.endpoint,
        RUNBOOKS_OSS_ENDPOINT=sim.endpoint,
        RUNBOOKS_PROTOCOL="http",
        **env,
    )
    done = subprocess.run(
        [sys.executable, "-c", CHAIN_SCRIPT], env=base, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_without_keys_the_default_chain_reads_the_environment(sim, access_key, tmp_path):
    out = chain(
        sim,
        tmp_path,
        ALIBABA_CLOUD_ACCESS_KEY_ID=access_key[0],
        ALIBABA_CLOUD_ACCESS_KEY_SECRET=access_key[1],
    )
    assert out.strip() == "instances 0 bucket chain"


def test_no_credentials_anywhere_is_one_clear_error(sim, tmp_path) -> None:
    out = chain(sim, tmp_path)
    assert out.startswith("DescribeInstances failed: NoCredentials: no credentials found")


def test_half_a_key_pair_is_refused_with_the_reason() -> None:
    with pytest.raises(ValidationError, match="give both access_key_id and access_key_secret"):
        AlibabaCloudCredentials(access_key_id="LTAI5tOnlyTheId")
    with pytest.raises(ValidationError, match="security_token needs"):
        AlibabaCloudCredentials(security_token="token")


def test_secrets_stay_out_of_reprs_dumps_and_the_api(sim, access_key, prefect_server) -> None:
    credentials = block(sim, access_key, security_token="sts-token-value")
    secret = access_key[1]
    for text in (repr(credentials), str(credentials), credentials.model_dump_json()):
        assert secret not in text and "sts-token-value" not in text
    with temporary_settings(updates={PREFECT_API_URL: prefect_server.api_url}):
        document_id = credentials.save("blocks-test", overwrite=True)
        loaded = AlibabaCloudCredentials.load("blocks-test")
    assert loaded.access_key_secret.get_secret_value() == secret
    assert loaded.openapi_endpoint == sim.endpoint
    stored = httpx.get(f"{prefect_server.api_url}/block_documents/{document_id}").text
    assert secret not in stored and "sts-token-value" not in stored


def test_an_endpoint_that_is_down_is_one_clear_error(access_key) -> None:
    credentials = AlibabaCloudCredentials(
        access_key_id=access_key[0],
        access_key_secret=access_key[1],
        openapi_endpoint=f"127.0.0.1:{free_port()}",
        protocol="http",
    )
    client = credentials.ecs_client()
    with pytest.raises(AlibabaCloudError) as raised:
        call(
            "DescribeInstances",
            lambda: client.describe_instances(ecs.DescribeInstancesRequest(region_id=REGION)),
        )
    assert "EndpointUnreachable: connection refused" in str(raised.value)


def test_throttling_is_retried_by_the_sdk_and_explained_when_it_persists(sim, access_key):
    client = block(sim, access_key).ecs_client()

    def describe() -> object:
        return client.describe_instances(ecs.DescribeInstancesRequest(region_id=REGION))

    fault = {"product": "Ecs", "action": "DescribeInstances", "retry_after_ms": 10}
    httpx.post(f"{sim.url}/_alisim/faults", json={"api": [{**fault, "count": 2}]})
    assert call("DescribeInstances", describe).body.total_count == 0
    httpx.post(f"{sim.url}/_alisim/faults", json={"api": [fault]})
    with pytest.raises(AlibabaCloudError, match=r"Throttling.User.*run fewer at once"):
        asyncio.run(asyncio.to_thread(call, "DescribeInstances", describe))


def test_clients_are_cached_per_credentials_without_the_secret_in_the_key(sim, access_key):
    first, same = block(sim, access_key), block(sim, access_key)
    assert first.ecs_client() is same.ecs_client()
    assert first.oss_bucket("a-bucket") is same.oss_bucket("a-bucket")
    assert first.oss_bucket("a-bucket") is not first.oss_bucket("another-bucket")
    # Other credentials or another endpoint: another client, and each one works.
    other_secret = block(sim, access_key, access_key_secret="not-the-secret")
    other_region = block(sim, access_key, region_id="cn-beijing")
    assert first.ecs_client() is not other_secret.ecs_client()
    assert first.ecs_client() is not other_region.ecs_client()
    assert first.eventbridge_client() is not first.ecs_client()
    works(first, "cached-bucket")
    with pytest.raises(AlibabaCloudError, match="SignatureDoesNotMatch"):
        call(
            "DescribeRegions",
            lambda: other_secret.ecs_client().describe_regions(ecs.DescribeRegionsRequest()),
        )
    # The keys can be shown: a digest stands for the secret and the STS token.
    sts = block(sim, access_key, security_token="a-secret-sts-token")
    assert sts.cache_key() != first.cache_key()
    for credentials in (first, other_secret, sts):
        shown = repr(credentials.cache_key())
        assert access_key[1] not in shown and "not-the-secret" not in shown
        assert "a-secret-sts-token" not in shown
