"""alisim's developer endpoints that no service test covers: event injection, settings."""

from __future__ import annotations

import httpx


def test_injected_events_are_published_with_a_full_envelope(sim) -> None:
    body = [
        {
            "type": "ecs:CloudAssistant:TaskCompleted",
            "source": "acs.ecs",
            "data": {"instanceId": "i-x", "invokeId": "t-x", "invocationStatus": "Success"},
        },
        {"type": "custom:Thing:Happened", "source": "acs.custom", "id": "fixed-id"},
    ]
    answer = httpx.post(f"{sim.url}/_alisim/events", json=body)
    assert answer.status_code == 201
    assert answer.json() == {"published": 2}
    events = httpx.get(f"{sim.url}/_alisim/events").json()["events"]
    assert [e["type"] for e in events] == [b["type"] for b in body]
    assert events[0]["aliyunregionid"] == "cn-hangzhou"
    assert events[0]["specversion"] == "1.0"
    assert events[1]["id"] == "fixed-id"


def test_malformed_injection_and_settings_get_clear_errors(sim) -> None:
    bad_event = httpx.post(f"{sim.url}/_alisim/events", json=[{"source": "acs.ecs"}])
    assert bad_event.status_code == 400
    assert "type" in bad_event.json()["error"]
    assert httpx.post(f"{sim.url}/_alisim/events", content=b"{").status_code == 400
    bad_setting = httpx.patch(f"{sim.url}/_alisim/settings", json={"time_scale": -1})
    assert bad_setting.status_code == 400
    assert httpx.get(f"{sim.url}/_alisim/nothing").status_code == 404
    assert httpx.get(f"{sim.url}/_alisim/health").json()["status"] == "ok"
