"""The OpenAPI protocol through the official SDK: signatures, credentials, errors, throttling.

Raw requests are signed with the SDK's own signing functions (`alibabacloud_tea_openapi.utils`)
and sent with httpx, so a test can replay or tamper with exactly what the SDK would send.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from typing import Any

import httpx
import pytest
from alibabacloud_ecs20140526 import models as ecs_models
from alibabacloud_ecs20140526.client import Client as EcsClient
from alibabacloud_tea_openapi import exceptions as sdk_errors
from alibabacloud_tea_openapi.utils import Utils
from darabonba.policy.retry import RetryOptions
from darabonba.request import DaraRequest

from alisim.server import AlisimServer
from tests.helpers import call_action, make_client

REGION = "cn-hangzhou"
ECS_VERSION = "2014-05-26"
ACS3 = "ACS3-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


# ---------------------------------------------------------------- helpers
def describe_instances(client: EcsClient) -> Any:
    return client.describe_instances(ecs_models.DescribeInstancesRequest(region_id=REGION)).body


def calls(sim: AlisimServer) -> dict[str, dict[str, int]]:
    response = httpx.get(f"{sim.url}/_alisim/calls")
    response.raise_for_status()
    return response.json()["calls"]


def set_faults(sim: AlisimServer, *faults: dict[str, Any]) -> None:
    httpx.put(f"{sim.url}/_alisim/faults", json={"api": list(faults)}).raise_for_status()


def iso_utc(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def acs3_signed(
    sim: AlisimServer,
    access_key: tuple[str, str],
    action: str,
    query: dict[str, str],
    *,
    date: str | None = None,
    nonce: str | None = None,
    extra_headers: dict[str, str] | None = None,
) -> tuple[dict[str, str], dict[str, str]]:
    """Query and headers of an ACS3-HMAC-SHA256 request, signed as the SDK signs it."""
    request = DaraRequest()
    request.method = "POST"
    request.pathname = "/"
    request.query = dict(query)
    request.headers = {
        "host": sim.endpoint,
        "x-acs-version": ECS_VERSION,
        "x-acs-action": action,
        "x-acs-date": date or Utils.get_timestamp(),
        "x-acs-signature-nonce": nonce or uuid.uuid4().hex,
        "accept": "application/json",
        "x-acs-content-sha256": EMPTY_SHA256,
        **(extra_headers or {}),
    }
    request.headers["Authorization"] = Utils.get_authorization(
        request, ACS3, EMPTY_SHA256, access_key[0], access_key[1]
    )
    return request.query, request.headers


def rpc_signed(
    access_key: tuple[str, str],
    action: str,
    params: dict[str, str],
    *,
    timestamp: str | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """The query of an RPC (HMAC-SHA1) request, signed as the SDK signs it."""
    query = {
        "Action": action,
        "Format": "json",
        "Version": ECS_VERSION,
        "Timestamp": timestamp or Utils.get_timestamp(),
        "SignatureNonce": nonce or uuid.uuid4().hex,
        "SignatureMethod": "HMAC-SHA1",
        "SignatureVersion": "1.0",
        "AccessKeyId": access_key[0],
        **params,
    }
    query["Signature"] = Utils.get_rpcsignature(query, "POST", access_key[1])
    return query


def post(sim: AlisimServer, query: dict[str, str], headers: dict[str, str] | None = None) -> Any:
    return httpx.post(f"{sim.url}/", params=query, headers=headers or {})


def error_code(response: httpx.Response) -> str:
    assert response.headers["content-type"].startswith("application/json"), response.text
    body = response.json()
    assert body["RequestId"]
    return body["Code"]


@pytest.fixture(params=["acs3", "v2"])
def mode(request: pytest.FixtureRequest) -> str:
    return request.param


# ---------------------------------------------------------------- credentials
def test_valid_key_in_both_modes(sim: AlisimServer, access_key: tuple[str, str], mode: str) -> None:
    body = describe_instances(make_client(sim, access_key, mode))
    assert body.total_count == 0
    assert body.request_id


def test_wrong_secret_is_signature_mismatch(
    sim: AlisimServer, access_key: tuple[str, str], mode: str
) -> None:
    client = make_client(sim, (access_key[0], access_key[1] + "x"), mode)
    with pytest.raises(sdk_errors.ClientException) as info:
        describe_instances(client)
    assert info.value.code == "SignatureDoesNotMatch"
    assert info.value.status_code == 400


def test_unknown_access_key_id(sim: AlisimServer, access_key: tuple[str, str], mode: str) -> None:
    client = make_client(sim, ("LTAI5tNoSuchKey000000000", access_key[1]), mode)
    with pytest.raises(sdk_errors.ClientException) as info:
        describe_instances(client)
    assert info.value.code == "InvalidAccessKeyId.NotFound"


def sts(sim: AlisimServer, duration: int = 3600) -> dict[str, Any]:
    response = httpx.post(f"{sim.url}/_alisim/sts", json={"DurationSeconds": duration})
    response.raise_for_status()
    return response.json()


def test_sts_token(sim: AlisimServer, mode: str) -> None:
    creds = sts(sim)
    assert creds["AccessKeyId"].startswith("STS.")
    key = (creds["AccessKeyId"], creds["AccessKeySecret"])
    body = describe_instances(make_client(sim, key, mode, security_token=creds["SecurityToken"]))
    assert body.total_count == 0

    with pytest.raises(sdk_errors.ClientException) as info:
        describe_instances(make_client(sim, key, mode))
    assert info.value.code == "MissingSecurityToken"

    with pytest.raises(sdk_errors.ClientException) as info:
        describe_instances(make_client(sim, key, mode, security_token="forged-token"))
    assert info.value.code == "InvalidSecurityToken.Mismatch"

    other = sts(sim)
    with pytest.raises(sdk_errors.ClientException) as info:
        describe_instances(make_client(sim, key, mode, security_token=other["SecurityToken"]))
    assert info.value.code == "InvalidSecurityToken.Mismatch"


def test_expired_sts_token(sim: AlisimServer, mode: str) -> None:
    creds = sts(sim, duration=-1)
    key = (creds["AccessKeyId"], creds["AccessKeySecret"])
    with pytest.raises(sdk_errors.ClientException) as info:
        describe_instances(make_client(sim, key, mode, security_token=creds["SecurityToken"]))
    assert info.value.code == "InvalidSecurityToken.Expired"


# ---------------------------------------------------------------- raw ACS3 requests
def test_raw_acs3_request_is_accepted_once(sim: AlisimServer, access_key: tuple[str, str]) -> None:
    query, headers = acs3_signed(
        sim, access_key, "DescribeInstances", {"RegionId": REGION, "PageSize": "5"}
    )
    first = post(sim, query, headers)
    assert first.status_code == 200, first.text
    assert first.json()["PageSize"] == 5

    replay = post(sim, query, headers)
    assert replay.status_code == 400
    assert error_code(replay) == "SignatureNonceUsed"


def test_tampered_acs3_request_is_rejected(sim: AlisimServer, access_key: tuple[str, str]) -> None:
    query, headers = acs3_signed(
        sim, access_key, "DescribeInstances", {"RegionId": REGION, "PageSize": "5"}
    )
    changed_value = post(sim, {**query, "PageSize": "50"}, headers)
    assert error_code(changed_value) == "SignatureDoesNotMatch"
    added_param = post(sim, {**query, "Status": "Running"}, headers)
    assert error_code(added_param) == "SignatureDoesNotMatch"
    other_action = post(sim, query, {**headers, "x-acs-action": "RunInstances"})
    assert error_code(other_action) == "SignatureDoesNotMatch"
    other_host = post(sim, query, {**headers, "host": "ecs.aliyuncs.com"})
    assert error_code(other_host) == "SignatureDoesNotMatch"
    unsigned_header = post(sim, query, {**headers, "x-acs-security-token": "x"})
    assert error_code(unsigned_header) == "IncompleteSignature"

    # A body added to a request signed without one.
    form = {"content-type": "application/x-www-form-urlencoded"}
    form_query, form_headers = acs3_signed(
        sim, access_key, "DescribeInstances", {"RegionId": REGION}, extra_headers=form
    )
    with_body = httpx.post(
        f"{sim.url}/", params=form_query, headers=form_headers, content=b"Status=Running"
    )
    assert error_code(with_body) == "SignatureDoesNotMatch"
    assert post(sim, form_query, form_headers).status_code == 200

    # None of the rejected tries used up the nonce: the untouched request still works.
    assert post(sim, query, headers).status_code == 200


def test_acs3_headers_must_all_be_signed(sim: AlisimServer, access_key: tuple[str, str]) -> None:
    """x-acs-* headers left out of SignedHeaders could be swapped: such requests are refused."""
    request = DaraRequest()
    request.method = "POST"
    request.pathname = "/"
    request.query = {"RegionId": REGION}
    request.headers = {
        "host": sim.endpoint,
        "x-acs-date": Utils.get_timestamp(),
        "x-acs-signature-nonce": uuid.uuid4().hex,
        "x-acs-content-sha256": EMPTY_SHA256,
    }
    authorization = Utils.get_authorization(
        request, ACS3, EMPTY_SHA256, access_key[0], access_key[1]
    )
    headers = {
        **request.headers,
        "x-acs-action": "DescribeInstances",
        "x-acs-version": ECS_VERSION,
        "Authorization": authorization,
    }
    response = post(sim, request.query, headers)
    assert response.status_code == 400
    assert error_code(response) == "IncompleteSignature"


@pytest.mark.parametrize("skew", [-3600, 3600])
def test_acs3_skewed_date_is_rejected(
    sim: AlisimServer, access_key: tuple[str, str], skew: int
) -> None:
    query, headers = acs3_signed(
        sim, access_key, "DescribeInstances", {"RegionId": REGION}, date=iso_utc(time.time() + skew)
    )
    response = post(sim, query, headers)
    assert response.status_code == 400
    assert error_code(response) == "InvalidTimeStamp.Expired"

    query, headers = acs3_signed(
        sim, access_key, "DescribeInstances", {"RegionId": REGION}, date=iso_utc(time.time() + 60)
    )
    assert post(sim, query, headers).status_code == 200


# ---------------------------------------------------------------- raw RPC requests
def test_raw_rpc_request_replay_and_tamper(sim: AlisimServer, access_key: tuple[str, str]) -> None:
    query = rpc_signed(access_key, "DescribeInstances", {"RegionId": REGION, "PageSize": "7"})
    tampered = post(sim, {**query, "PageSize": "8"})
    assert error_code(tampered) == "SignatureDoesNotMatch"
    other_action = post(sim, {**query, "Action": "RunInstances"})
    assert error_code(other_action) == "SignatureDoesNotMatch"

    first = post(sim, query)
    assert first.status_code == 200, first.text
    assert first.json()["PageSize"] == 7
    replay = post(sim, query)
    assert error_code(replay) == "SignatureNonceUsed"


def test_rpc_action_comes_from_the_signed_parameters(
    sim: AlisimServer, access_key: tuple[str, str]
) -> None:
    """An RPC request carries `x-acs-action` unsigned: it must not choose the action."""
    query = rpc_signed(access_key, "DescribeInstances", {"RegionId": REGION})
    response = post(sim, query, {"x-acs-action": "DeleteInstances", "x-acs-version": "1999-01-01"})
    assert response.status_code == 200, response.text
    assert "Instances" in response.json()
    assert calls(sim) == {"Ecs": {"DescribeInstances": 1}}


@pytest.mark.parametrize("skew", [-3600, 3600])
def test_rpc_skewed_timestamp_is_rejected(
    sim: AlisimServer, access_key: tuple[str, str], skew: int
) -> None:
    query = rpc_signed(
        access_key, "DescribeInstances", {"RegionId": REGION}, timestamp=iso_utc(time.time() + skew)
    )
    assert error_code(post(sim, query)) == "InvalidTimeStamp.Expired"


def test_rpc_bad_timestamp_format(sim: AlisimServer, access_key: tuple[str, str]) -> None:
    query = rpc_signed(access_key, "DescribeInstances", {"RegionId": REGION}, timestamp="yesterday")
    assert error_code(post(sim, query)) == "InvalidTimeStamp.Format"


# ---------------------------------------------------------------- actions and parameters
def test_unknown_action(sim: AlisimServer, access_key: tuple[str, str], mode: str) -> None:
    client = make_client(sim, access_key, mode)
    with pytest.raises(sdk_errors.ClientException) as info:
        call_action(client, "DescribeUnicorns", ECS_VERSION, {"RegionId": REGION})
    assert info.value.code == "InvalidAction.NotFound"
    assert info.value.status_code == 404
    # The generic call path works for a known action.
    body = call_action(client, "DescribeInstances", ECS_VERSION, {"RegionId": REGION})["body"]
    assert body["TotalCount"] == 0


def test_unknown_version(sim: AlisimServer, access_key: tuple[str, str], mode: str) -> None:
    client = make_client(sim, access_key, mode)
    with pytest.raises(sdk_errors.ClientException) as info:
        call_action(client, "DescribeInstances", "2099-01-01", {"RegionId": REGION})
    assert info.value.code == "InvalidVersion"


def test_missing_required_parameter(
    sim: AlisimServer, access_key: tuple[str, str], mode: str
) -> None:
    client = make_client(sim, access_key, mode)
    with pytest.raises(sdk_errors.ClientException) as info:
        client.describe_instances(ecs_models.DescribeInstancesRequest())
    assert info.value.code == "MissingParameter"
    assert "RegionId" in info.value.message

    with pytest.raises(sdk_errors.ClientException) as info:
        client.run_command(
            ecs_models.RunCommandRequest(
                region_id=REGION, command_content="echo hi", instance_id=["i-bp1x"]
            )
        )
    assert info.value.code == "MissingParameter"
    assert "Type" in info.value.message


def test_invalid_parameter_value(sim: AlisimServer, access_key: tuple[str, str], mode: str) -> None:
    client = make_client(sim, access_key, mode)
    with pytest.raises(sdk_errors.ClientException) as info:
        client.describe_instances(
            ecs_models.DescribeInstancesRequest(region_id=REGION, page_size=1000)
        )
    assert info.value.code == "InvalidParameter"
    with pytest.raises(sdk_errors.ClientException) as info:
        client.describe_instances(
            ecs_models.DescribeInstancesRequest(region_id=REGION, instance_ids="not json")
        )
    assert info.value.code == "InvalidParameter"


# ---------------------------------------------------------------- throttling and faults
def test_throttling_fault_raises_throttling_exception(
    sim: AlisimServer, access_key: tuple[str, str], mode: str
) -> None:
    set_faults(sim, {"action": "DescribeInstances", "error": "Throttling.User", "count": 2})
    client = make_client(sim, access_key, mode)
    for _ in range(2):
        with pytest.raises(sdk_errors.ThrottlingException) as info:
            describe_instances(client)
        assert info.value.code == "Throttling.User"
        assert info.value.status_code == 400
        assert info.value.retry_after == 100
    # Other actions are not affected; after `count` faults the action works again.
    client.describe_cloud_assistant_status(
        ecs_models.DescribeCloudAssistantStatusRequest(region_id=REGION)
    )
    assert describe_instances(client).total_count == 0
    faults = httpx.get(f"{sim.url}/_alisim/faults").json()
    assert faults["injected"] == 2


def test_throttling_without_retry_after_is_client_exception(
    sim: AlisimServer, access_key: tuple[str, str]
) -> None:
    set_faults(
        sim, {"action": "DescribeInstances", "error": "Throttling", "count": 1, "retry_after_ms": 0}
    )
    with pytest.raises(sdk_errors.ClientException) as info:
        describe_instances(make_client(sim, access_key))
    assert not isinstance(info.value, sdk_errors.ThrottlingException)
    assert info.value.code == "Throttling"


def test_server_error_fault(sim: AlisimServer, access_key: tuple[str, str]) -> None:
    set_faults(sim, {"product": "Ecs", "error": "ServiceUnavailable", "count": 1})
    with pytest.raises(sdk_errors.ServerException) as info:
        describe_instances(make_client(sim, access_key))
    assert info.value.code == "ServiceUnavailable"
    assert info.value.status_code == 503


def throttling_retries(max_attempts: int) -> RetryOptions:
    return RetryOptions(
        {
            "retryable": True,
            "retryCondition": [
                {
                    "maxAttempts": max_attempts,
                    "exception": ["ThrottlingException"],
                    "errorCode": ["Throttling.User", "Throttling"],
                    "backoff": {"policy": "Fixed", "period": 10},
                }
            ],
        }
    )


def test_sdk_retry_outlasts_throttling(
    sim: AlisimServer, access_key: tuple[str, str], mode: str
) -> None:
    set_faults(sim, {"action": "DescribeInstances", "error": "Throttling.User", "count": 2})
    client = make_client(sim, access_key, mode, retry_options=throttling_retries(3))
    assert describe_instances(client).total_count == 0
    # Two throttled tries and the one that succeeded: all three spent quota.
    assert calls(sim) == {"Ecs": {"DescribeInstances": 3}}


def test_sdk_retry_gives_up(sim: AlisimServer, access_key: tuple[str, str]) -> None:
    set_faults(sim, {"action": "DescribeInstances", "error": "Throttling.User", "count": 5})
    client = make_client(sim, access_key, retry_options=throttling_retries(2))
    with pytest.raises(sdk_errors.ThrottlingException):
        describe_instances(client)
    assert calls(sim) == {"Ecs": {"DescribeInstances": 2}}


def test_fault_rate_zero_never_fires(sim: AlisimServer, access_key: tuple[str, str]) -> None:
    set_faults(sim, {"action": "*", "error": "InternalError", "rate": 0.0})
    client = make_client(sim, access_key)
    for _ in range(5):
        describe_instances(client)
    assert httpx.get(f"{sim.url}/_alisim/faults").json()["injected"] == 0


def test_bad_fault_plan_is_rejected(sim: AlisimServer) -> None:
    response = httpx.put(
        f"{sim.url}/_alisim/faults", json={"api": [{"action": "X", "error": "NoSuchError"}]}
    )
    assert response.status_code == 400
    assert "error" in response.json()


# ---------------------------------------------------------------- robustness
MALFORMED: list[tuple[str, dict[str, str], bytes]] = [
    ("/?Action=DescribeInstances", {}, b"\xff\xfe garbage"),
    (
        "/",
        {"x-acs-action": "DescribeInstances", "content-type": "application/x-www-form-urlencoded"},
        b"\xff\xfe%%%=&&",
    ),
    ("/", {"x-acs-action": "DescribeInstances", "authorization": "ACS3-HMAC-SHA256 junk"}, b""),
    (
        "/",
        {
            "x-acs-action": "DescribeInstances",
            "authorization": "ACS3-HMAC-SHA256 Credential=a,SignedHeaders=host,Signature=zz",
            "x-acs-date": "not a date",
            "x-acs-signature-nonce": "n",
        },
        b"",
    ),
    ("/?Action=%zz&&&==&Signature", {}, b""),
    ("/?Action=DescribeInstances&Signature=%ff&AccessKeyId=&Timestamp=", {}, b""),
    (
        "/?Action=DescribeInstances&Signature=a&AccessKeyId=LTAI5tAlisimLocalKey0001"
        "&SignatureNonce=1&Timestamp=2024-13-45T99:99:99Z",
        {},
        b"",
    ),
    (
        "/?Action=DescribeInstances&SignatureMethod=MD5&Signature=a&AccessKeyId=a"
        "&SignatureNonce=1&Timestamp=x",
        {},
        b"",
    ),
    ("/", {"x-acs-action": "", "x-acs-version": "garbage"}, b"{not json"),
]


@pytest.mark.parametrize(("path", "headers", "body"), MALFORMED)
def test_malformed_requests_get_error_json(
    sim: AlisimServer, access_key: tuple[str, str], path: str, headers: dict[str, str], body: bytes
) -> None:
    response = httpx.post(f"{sim.url}{path}", headers=headers, content=body)
    assert 400 <= response.status_code < 500, response.text
    body_json = response.json()
    assert body_json["Code"]
    assert body_json["Message"]
    # The server keeps serving.
    assert describe_instances(make_client(sim, access_key)).total_count == 0


def test_oversized_body_is_rejected(sim: AlisimServer, access_key: tuple[str, str]) -> None:
    response = httpx.post(
        f"{sim.url}/",
        headers={"x-acs-action": "DescribeInstances"},
        content=b"a" * (9 * 1024 * 1024),
    )
    assert response.status_code == 413
    assert response.json()["Code"] == "InvalidParameter.BodyTooLarge"
    assert describe_instances(make_client(sim, access_key)).total_count == 0


# ---------------------------------------------------------------- call counts
def test_call_counts_match_calls_made(
    sim: AlisimServer, access_key: tuple[str, str], mode: str
) -> None:
    client = make_client(sim, access_key, mode)
    for _ in range(3):
        describe_instances(client)
    client.run_instances(
        ecs_models.RunInstancesRequest(
            region_id=REGION, image_id="aliyun_3_x64.vhd", instance_type="ecs.g7.large"
        )
    )
    with pytest.raises(sdk_errors.ClientException):
        client.delete_instances(
            ecs_models.DeleteInstancesRequest(region_id=REGION, instance_id=["i-bp1nope"])
        )
    # A request that fails authentication spends no quota.
    with pytest.raises(sdk_errors.ClientException):
        describe_instances(make_client(sim, (access_key[0], "wrong"), mode))

    assert calls(sim) == {"Ecs": {"DescribeInstances": 3, "RunInstances": 1, "DeleteInstances": 1}}
    total = httpx.get(f"{sim.url}/_alisim/calls").json()["total"]
    assert total == 5

    httpx.delete(f"{sim.url}/_alisim/calls").raise_for_status()
    assert calls(sim) == {}
    describe_instances(client)
    assert calls(sim) == {"Ecs": {"DescribeInstances": 1}}


def test_responses_carry_request_id(sim: AlisimServer, access_key: tuple[str, str]) -> None:
    query, headers = acs3_signed(sim, access_key, "DescribeInstances", {"RegionId": REGION})
    response = post(sim, query, headers)
    assert response.headers["x-acs-request-id"] == response.json()["RequestId"]
    assert json.loads(response.text)["Instances"] == {"Instance": []}
