"""Helpers shared by the alisim test modules: SDK clients, condition waits, the event log."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
from alibabacloud_ecs20140526.client import Client as EcsClient
from alibabacloud_tea_openapi.client import Client as OpenApiClient
from alibabacloud_tea_openapi.utils_models import Config, OpenApiRequest, Params
from darabonba.policy.retry import RetryOptions
from darabonba.runtime import RuntimeOptions

from alisim.server import AlisimServer

REGION = "cn-hangzhou"


def make_client(
    sim: AlisimServer,
    access_key: tuple[str, str],
    mode: str = "acs3",
    *,
    security_token: str | None = None,
    retry_options: RetryOptions | None = None,
) -> EcsClient:
    """An ECS client on alisim; `mode="v2"` signs with the older RPC HMAC-SHA1 signature."""
    config = Config(
        access_key_id=access_key[0],
        access_key_secret=access_key[1],
        endpoint=sim.endpoint,
        protocol="http",
        region_id=REGION,
    )
    if security_token is not None:
        config.security_token = security_token
    if mode == "v2":
        config.signature_algorithm = "v2"
    if retry_options is not None:
        config.retry_options = retry_options
    return EcsClient(config)


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll `predicate` until it returns something truthy; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value {value!r})")
        time.sleep(interval)


def events(sim: AlisimServer, type: str, contains: str | None = None) -> list[dict[str, Any]]:
    query: dict[str, str] = {"type": type}
    if contains:
        query["contains"] = contains
    response = httpx.get(f"{sim.url}/_alisim/events", params=query)
    response.raise_for_status()
    return response.json()["events"]


def patch_settings(sim: AlisimServer, **changes: Any) -> None:
    httpx.patch(f"{sim.url}/_alisim/settings", json=changes).raise_for_status()


def call_action(
    client: OpenApiClient, action: str, version: str, query: dict[str, str]
) -> dict[str, Any]:
    """Call any action with hand-made (possibly malformed) parameters, signed by the SDK."""
    params = Params(
        action=action,
        version=version,
        protocol="HTTPS",
        pathname="/",
        method="POST",
        auth_type="AK",
        style="RPC",
        req_body_type="formData",
        body_type="json",
    )
    return client.call_api(params, OpenApiRequest(query=query), RuntimeOptions())


def events_in_store(prefect_server: Any, **filter: Any) -> list[dict[str, Any]]:
    """Up to 50 events in Prefect's store matching `filter` (`event=`, `related=`, `id=` …)."""
    response = httpx.post(
        f"{prefect_server.api_url}/events/filter",
        json={"filter": {"occurred": {"since": "2020-01-01T00:00:00Z"}, **filter}, "limit": 50},
    )
    response.raise_for_status()
    return response.json()["events"]
