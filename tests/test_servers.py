"""`PrefectServer`: the UI it serves calls its own API, whatever the caller's environment."""

from __future__ import annotations

import httpx
import pytest

from local_stack.servers import PrefectServer


def test_the_ui_calls_its_own_api_despite_the_callers_prefect_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Settings a shell keeps for another server (Prefect's default port) must not leak in.
    for name in ("PREFECT_API_URL", "PREFECT_UI_API_URL", "PREFECT_SERVER_UI_API_URL"):
        monkeypatch.setenv(name, "http://127.0.0.1:4200/api")
    monkeypatch.setenv("PREFECT_SERVER_API_PORT", "4200")
    with PrefectServer() as server:
        settings = httpx.get(f"{server.ui_url}/ui-settings", timeout=10).json()
    assert settings["api_url"] == server.api_url
