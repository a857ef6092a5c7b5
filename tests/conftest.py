"""Shared fixtures: one alisim server per test session, reset between tests that ask for it."""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest

os.environ.setdefault("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")

from alisim.config import DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET, zero_delay_settings
from alisim.server import AlisimServer

pytest_plugins = ["tests.runbook_stack"]  # the runbook tests' `stack` and `cloud` fixtures


@pytest.fixture(scope="session")
def alisim() -> Iterator[AlisimServer]:
    server = AlisimServer(zero_delay_settings(send_window_seconds=5.0))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def sim(alisim: AlisimServer) -> Iterator[AlisimServer]:
    """The session's alisim, reset to an empty cloud with default zero-delay settings."""
    httpx.post(f"{alisim.url}/_alisim/reset").raise_for_status()
    httpx.patch(
        f"{alisim.url}/_alisim/settings",
        json=zero_delay_settings(send_window_seconds=5.0).model_dump(),
    ).raise_for_status()
    yield alisim


@pytest.fixture
def access_key() -> tuple[str, str]:
    return DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[object]:
    """A real `prefect server start` (SQLite) for the session; flushes events quickly."""
    from local_stack.servers import FAST_EVENT_STORE, PrefectServer

    server = PrefectServer(extra_env=FAST_EVENT_STORE)
    server.start()
    try:
        yield server
    finally:
        from local_stack.stack import flush_prefect_clients

        flush_prefect_clients()
        server.stop()


@pytest.fixture(params=["acs3", "v2"])
def ecs(sim: AlisimServer, access_key: tuple[str, str], request: pytest.FixtureRequest):
    """An ECS client in each signature mode (ACS3-HMAC-SHA256 and the RPC HMAC-SHA1)."""
    from tests.helpers import make_client

    return make_client(sim, access_key, request.param)


@pytest.fixture
def client(sim: AlisimServer, access_key: tuple[str, str]):
    from tests.helpers import make_client

    return make_client(sim, access_key)
