"""The relay through its real path: HTTP → relay → a real Prefect server (SQLite)."""

from __future__ import annotations

import json
import logging
import select
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from alicloud_runbooks.events.mapping import prefect_event_id
from alicloud_runbooks.relay.app import create_app
from alicloud_runbooks.relay.settings import RelaySettings
from local_stack.servers import ThreadedServer, free_port
from tests import samples
from tests.helpers import wait_until

TOKEN = "relay-test-token-123"


def _relay(**overrides: Any) -> ThreadedServer:
    settings = RelaySettings(token=TOKEN, **overrides)
    return ThreadedServer(create_app(settings)).start()


@pytest.fixture(scope="module")
def relay(prefect_server) -> Iterator[ThreadedServer]:
    server = _relay(
        prefect_api_url=prefect_server.api_url,
        allowed_account_ids=[samples.ACCOUNT, "169070000000030", "175458090349000"],
    )
    yield server
    server.stop()


def stored(prefect_server, ids: list[str], expect: int, timeout: float = 20) -> list[dict]:
    """Events with these ids once Prefect has persisted `expect` of them."""
    deadline = time.monotonic() + timeout
    while True:
        body = httpx.post(
            f"{prefect_server.api_url}/events/filter",
            json={"filter": {"id": {"id": ids}}, "limit": 50},
        ).json()
        if len(body["events"]) >= expect or time.monotonic() > deadline:
            return body["events"]
        time.sleep(0.2)


def post(relay: ThreadedServer, path: str, body: Any, **kwargs: Any) -> httpx.Response:
    headers = {
        "Authorization": f"Bearer {TOKEN}",
        "Content-Type": "application/json",
        **kwargs.pop("headers", {}),
    }
    content = body if isinstance(body, bytes | str) else json.dumps(body)
    return httpx.post(f"{relay.url}{path}", content=content, headers=headers, **kwargs)


@pytest.mark.parametrize(
    ("path", "sample", "name", "resource", "labels"),
    [
        (
            "/eventbridge",
            samples.TASK_COMPLETED,
            "acs.ecs.CloudAssistant.TaskCompleted",
            "acs.ecs.instance.i-bp114aaaaaaaaaaaaaaa",
            {"acs.ecs.invocation-status": "Success"},
        ),
        (
            "/eventbridge",
            samples.FIRST_HEARTBEAT,
            "acs.ecs.CloudAssistant.FirstHeartbeat",
            "acs.ecs.instance.i-bp19aaaaaaaaaaaaaaaa",
            {"acs.region": "cn-hangzhou"},
        ),
        (
            "/eventbridge",
            samples.OUTPUT_DELIVERED,
            "acs.ecs.CloudAssistant.OutputDelivered",
            "acs.ecs.instance.i-bp114aaaaaaaaaaaaaaa",
            {"acs.ecs.delivery-status": "Finished"},
        ),
        (
            "/eventbridge",
            samples.INSTANCE_STATE_CHANGE_EB,
            "acs.ecs.Instance.StateChange",
            "acs.ecs.instance.i-bp1ecr0000005go2go",
            {"acs.ecs.instance-state": "Stopping"},
        ),
        (
            "/cloudmonitor",
            samples.INSTANCE_STATE_CHANGE_CM,
            "acs.ecs.Instance.StateChange",
            "acs.ecs.instance.i-bp1ecr0000005go2go",
            {"acs.ecs.instance-state": "Stopping"},
        ),
        (
            "/cloudmonitor",
            samples.STACK_STATUS_CHANGE_CM,
            "acs.ros.Stack.StatusChange",
            "acs.ros.stack.a797d0e1-c067-472a-ba86-2f0cdcbb0000",
            {"acs.ros.stack-status": "CREATE_COMPLETE"},
        ),
    ],
)
def test_each_reference_sample_arrives_in_prefect(
    relay, prefect_server, path, sample, name, resource, labels
) -> None:
    raw = samples.fresh(sample)
    response = post(relay, path, raw)
    assert response.status_code == 200, response.text
    [event_id] = response.json()["ids"]
    [event] = stored(prefect_server, [event_id], expect=1)
    assert event["event"] == name
    assert event["resource"]["prefect.resource.id"] == resource
    for key, value in labels.items():
        assert event["resource"][key] == value


def test_redelivered_and_duplicated_events_are_stored_once(relay, prefect_server) -> None:
    raw = samples.fresh(samples.TASK_COMPLETED)
    batch = [raw, raw]
    first = post(relay, "/eventbridge", batch)
    again = post(relay, "/eventbridge", raw)
    assert first.status_code == again.status_code == 200
    event_id = prefect_event_id(raw["id"])
    other = samples.fresh(samples.TASK_COMPLETED)
    post(relay, "/eventbridge", other)
    # Once the later event is stored, any second copy of the first would be too.
    stored(prefect_server, [prefect_event_id(other["id"])], expect=1)
    assert len(stored(prefect_server, [event_id], expect=2, timeout=2)) == 1


def test_token_in_the_query_string_is_accepted(relay, prefect_server) -> None:
    raw = samples.fresh(samples.FIRST_HEARTBEAT)
    response = httpx.post(f"{relay.url}/eventbridge?token={TOKEN}", json=raw)
    assert response.status_code == 200
    assert stored(prefect_server, response.json()["ids"], expect=1)


@pytest.mark.parametrize(
    ("kwargs", "status", "reason"),
    [
        ({"headers": {"Authorization": "Bearer wrong"}}, 401, "token"),
        ({"headers": {"Authorization": ""}}, 401, "token"),
        ({"headers": {"Content-Type": "text/plain"}}, 415, "content type"),
    ],
)
def test_forged_requests_are_rejected(relay, prefect_server, kwargs, status, reason) -> None:
    raw = samples.fresh(samples.TASK_COMPLETED)
    response = post(relay, "/eventbridge", raw, **kwargs)
    assert response.status_code == status
    assert reason in response.json()["error"]
    assert stored(prefect_server, [prefect_event_id(raw["id"])], expect=1, timeout=1.5) == []


def test_wrong_account_is_forbidden(relay, prefect_server) -> None:
    raw = samples.fresh(samples.TASK_COMPLETED)
    raw["aliyunaccountid"] = "9999"
    response = post(relay, "/eventbridge", raw)
    assert response.status_code == 403
    assert "9999" in response.json()["error"]


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (b"{not json", 400, "not valid JSON"),
        ({"specversion": "1.0", "source": "acs.ecs"}, 400, "id"),
        ({**samples.TASK_COMPLETED, "data": {"instanceId": "i-1"}}, 400, "invokeId"),
        ([], 400, "empty"),
        ([1, 2], 400, "not a JSON object"),
        (b"[" * 100_000 + b"]" * 100_000, 400, ""),
        (b'{"a":' + b"[" * 40 + b"]" * 40 + b"}", 400, "nested"),
        (b"x" * (2 * 1024 * 1024), 413, "larger"),
    ],
)
def test_malformed_input_gets_a_clear_4xx_and_the_relay_keeps_serving(
    relay, body, status, reason
) -> None:
    response = post(relay, "/eventbridge", body)
    assert response.status_code == status, response.text
    assert reason in response.json()["error"]
    assert httpx.get(f"{relay.url}/healthz").status_code == 200


def test_prefect_down_means_503_so_eventbridge_retries() -> None:
    server = _relay(prefect_api_url=f"http://127.0.0.1:{free_port()}/api")
    try:
        response = post(server, "/eventbridge", samples.fresh(samples.TASK_COMPLETED))
        assert response.status_code == 503
        assert "unreachable" in response.json()["error"]
        assert httpx.get(f"{server.url}/healthz").status_code == 503
    finally:
        server.stop()


def test_the_token_never_reaches_the_logs(relay, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    post(relay, "/eventbridge", samples.fresh(samples.TASK_COMPLETED))
    httpx.post(f"{relay.url}/eventbridge?token={TOKEN}x", json={})
    server_side = [r for r in caplog.records if r.name.startswith(("alicloud_runbooks", "uvicorn"))]
    assert server_side, "the relay logs what it accepts and rejects"
    assert all(TOKEN not in record.getMessage() for record in server_side)


def test_function_compute_handler_behaves_like_the_service(prefect_server, monkeypatch) -> None:
    from alicloud_runbooks.relay import fc

    monkeypatch.setenv("RUNBOOKS_RELAY_TOKEN", TOKEN)
    monkeypatch.setenv("PREFECT_API_URL", prefect_server.api_url)
    raw = samples.fresh(samples.TASK_COMPLETED)
    event = {
        "version": "v1",
        "rawPath": "/eventbridge",
        "isBase64Encoded": False,
        "headers": {"Content-Type": "application/json"},
        "queryParameters": {"token": TOKEN},
        "body": json.dumps(raw),
        "requestContext": {"http": {"method": "POST"}},
    }
    answer = fc.handler(json.dumps(event).encode())
    assert answer["statusCode"] == 200, answer
    assert stored(prefect_server, json.loads(answer["body"])["ids"], expect=1)
    forged = fc.handler({**event, "queryParameters": {"token": "nope"}})
    assert forged["statusCode"] == 401
    assert fc.handler(b"not json")["statusCode"] == 400


# ---------------------------------------------------------------- paths and slow clients
@pytest.mark.parametrize(
    ("path", "sample"),
    [
        ("/eventbridge/", samples.TASK_COMPLETED),
        ("/cloudmonitor/", samples.INSTANCE_STATE_CHANGE_CM),
    ],
)
def test_a_trailing_slash_is_served_not_redirected(relay, prefect_server, path, sample) -> None:
    response = httpx.post(
        f"{relay.url}{path}?token={TOKEN}", json=samples.fresh(sample), follow_redirects=False
    )
    assert response.status_code == 200, response.text
    assert stored(prefect_server, response.json()["ids"], expect=1)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/eventbridge/"),
        ("POST", "/eventbridge//"),
        ("POST", "/EventBridge"),
        ("POST", "/eventbridge/more"),
        ("POST", "/cloudmonitor/"),
        ("GET", "/eventbridge"),
        ("GET", "/eventbridge/"),
        ("GET", "/healthz/"),
        ("POST", "/"),
    ],
)
def test_no_answer_redirects_or_carries_the_token(relay, method, path) -> None:
    for token in (TOKEN, TOKEN + "x"):
        response = httpx.request(
            method, f"{relay.url}{path}?token={token}", json={}, follow_redirects=False
        )
        assert not 300 <= response.status_code < 400, response.headers
        assert TOKEN not in response.text
        assert all(TOKEN not in value for value in response.headers.values())


def _open(server: ThreadedServer, body_length: int, first_bytes: bytes) -> socket.socket:
    sock = socket.create_connection((server.host, server.port), timeout=10)
    sock.sendall(
        f"POST /eventbridge HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {body_length}\r\n\r\n".encode()
        + first_bytes
    )
    return sock


def _answer(sock: socket.socket) -> bytes:
    """Everything the relay sends until it closes the connection."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


@pytest.fixture
def impatient_relay(prefect_server) -> Iterator[ThreadedServer]:
    server = _relay(prefect_api_url=prefect_server.api_url, body_timeout_seconds=0.5)
    yield server
    server.stop()


def test_a_stalled_body_gets_408_at_the_body_timeout(impatient_relay) -> None:
    with _open(impatient_relay, 200, b'{"specversion":') as sock:
        started = time.monotonic()
        answer = _answer(sock)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"did not arrive within 0.5 s" in answer
    assert time.monotonic() - started < 3


def test_a_trickling_body_is_not_held_past_the_body_timeout(impatient_relay) -> None:
    """One byte every 0.1 s would take 20 s; the timeout is for the whole body."""
    with _open(impatient_relay, 200, b"[") as sock:
        started = time.monotonic()
        try:
            while not select.select([sock], [], [], 0.1)[0]:
                assert time.monotonic() - started < 5, "the relay is still reading a trickle"
                sock.sendall(b" ")
            answer = _answer(sock)
        except ConnectionResetError:
            # A byte sent just as the relay answered and closed: the reset may drop the 408.
            answer = b"HTTP/1.1 408 (reset)"
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert time.monotonic() - started < 3


def test_the_body_timeout_is_a_setting(monkeypatch) -> None:
    assert RelaySettings(token=TOKEN).body_timeout_seconds == 10
    monkeypatch.setenv("RUNBOOKS_RELAY_BODY_TIMEOUT_SECONDS", "2.5")
    assert RelaySettings(token=TOKEN).body_timeout_seconds == 2.5


def test_a_client_that_disconnects_mid_body_is_one_log_line(impatient_relay, caplog) -> None:
    caplog.set_level(logging.INFO)
    with _open(impatient_relay, 200, b'{"specversion":'):
        pass
    health = f"{impatient_relay.url}/healthz"
    wait_until(lambda: httpx.get(health).json()["pushes"]["disconnected"] == 1)
    server_side = [r for r in caplog.records if r.name.startswith(("alicloud_runbooks", "uvicorn"))]
    assert [r.getMessage() for r in server_side] == [
        "/eventbridge from 127.0.0.1: the client disconnected mid-body"
    ]
    assert server_side[0].levelno == logging.WARNING and server_side[0].exc_info is None
