"""STS GetCallerIdentity through the official SDK, in both signature modes and with STS keys."""

from __future__ import annotations

import httpx
import pytest
from alibabacloud_sts20150401.client import Client as StsClient
from alibabacloud_tea_openapi import exceptions as sdk_errors

from alicloud_runbooks.clients import Endpoint, openapi_config, sts_client
from alisim.server import AlisimServer
from tests.helpers import REGION, patch_settings


def client(
    sim: AlisimServer, key: tuple[str, str], mode: str, security_token: str | None = None
) -> StsClient:
    endpoint = Endpoint(openapi=sim.endpoint, protocol="http")
    if mode == "acs3":
        # The factory the runbooks use, unchanged.
        return sts_client(
            access_key_id=key[0],
            access_key_secret=key[1],
            security_token=security_token,
            region=REGION,
            endpoint=endpoint,
        )
    config = openapi_config(
        "sts",
        access_key_id=key[0],
        access_key_secret=key[1],
        security_token=security_token,
        region=REGION,
        endpoint=endpoint,
    )
    config.signature_algorithm = "v2"
    return StsClient(config)


@pytest.fixture(params=["acs3", "v2"])
def mode(request: pytest.FixtureRequest) -> str:
    return request.param


def test_a_key_pair_is_the_ram_user_alisim(
    sim: AlisimServer, access_key: tuple[str, str], mode: str
) -> None:
    body = client(sim, access_key, mode).get_caller_identity().body
    account = sim.cloud.settings.account_id
    assert body.account_id == account
    assert body.identity_type == "RAMUser"
    assert body.arn == f"acs:ram::{account}:user/alisim"
    assert body.user_id and body.user_id.isdigit()
    assert body.principal_id == body.user_id
    assert body.role_id is None
    assert body.request_id
    calls = httpx.get(f"{sim.url}/_alisim/calls").json()["calls"]
    assert calls["Sts"] == {"GetCallerIdentity": 1}


def test_the_account_is_alisims_setting(
    sim: AlisimServer, access_key: tuple[str, str], mode: str
) -> None:
    patch_settings(sim, account_id="5555666677778888")
    body = client(sim, access_key, mode).get_caller_identity().body
    assert body.account_id == "5555666677778888"
    assert body.arn == "acs:ram::5555666677778888:user/alisim"


def test_an_sts_key_is_an_assumed_role(sim: AlisimServer, mode: str) -> None:
    creds = httpx.post(f"{sim.url}/_alisim/sts", json={"RoleSessionName": "runbook-42"}).json()
    key = (creds["AccessKeyId"], creds["AccessKeySecret"])
    body = client(sim, key, mode, creds["SecurityToken"]).get_caller_identity().body
    account = sim.cloud.settings.account_id
    assert body.account_id == account
    assert body.identity_type == "AssumedRoleUser"
    assert body.arn == f"acs:ram::{account}:assumed-role/alisim-role/runbook-42"
    assert body.role_id and body.principal_id == f"{body.role_id}:runbook-42"
    assert body.user_id is None

    with pytest.raises(sdk_errors.ClientException) as info:
        client(sim, key, mode).get_caller_identity()
    assert info.value.code == "MissingSecurityToken"


def test_a_wrong_secret_is_refused(
    sim: AlisimServer, access_key: tuple[str, str], mode: str
) -> None:
    with pytest.raises(sdk_errors.ClientException) as info:
        client(sim, (access_key[0], "wrong"), mode).get_caller_identity()
    assert info.value.code == "SignatureDoesNotMatch"
