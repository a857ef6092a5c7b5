"""Request bodies are bounded before they are buffered, on every route, and the developer API
answers bad input with a 400 that says why, never a 500.

Oversized bodies go over a raw socket: a declared Content-Length with almost nothing sent, or
a chunked body that passes the limit and never ends. An answer at all proves alisim did not
wait for the whole body.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import time
from calendar import timegm
from typing import Any
from xml.etree import ElementTree

import httpx
import pytest

from alisim.server import AlisimServer
from tests.helpers import patch_settings

LIMIT = 64 * 1024


def exchange(sim: AlisimServer, head: str, sent: bytes) -> tuple[int, bytes]:
    """Send a request head and part of a body, then read the answer (the body never ends)."""
    with socket.create_connection((sim.host, sim.port), timeout=10) as sock:
        sock.sendall(head.encode("latin-1") + b"\r\n" + sent)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, response.read()


def declared(method: str, path: str, length: int, extra: str = "") -> str:
    return f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n{extra}"


def chunked(method: str, path: str, extra: str = "") -> str:
    return f"{method} {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n{extra}"


def chunks(total: int, size: int = 16 * 1024) -> bytes:
    """`total` bytes as chunks, without the closing zero-size chunk."""
    out = b""
    while total > 0:
        n = min(size, total)
        out += f"{n:x}\r\n".encode() + b"a" * n + b"\r\n"
        total -= n
    return out


OPENAPI = "x-acs-action: DescribeInstances\r\nx-acs-version: 2014-05-26\r\n"


def openapi_code(body: bytes) -> str:
    return json.loads(body)["Code"]


@pytest.mark.parametrize("streamed", [False, True], ids=["declared", "chunked"])
def test_openapi_bodies_are_bounded(sim: AlisimServer, streamed: bool) -> None:
    patch_settings(sim, openapi_max_body_bytes=LIMIT)
    if streamed:
        status, body = exchange(sim, chunked("POST", "/", OPENAPI), chunks(LIMIT + 1))
    else:
        status, body = exchange(sim, declared("POST", "/", LIMIT + 1, OPENAPI), b"x")
    assert status == 413
    assert openapi_code(body) == "InvalidParameter.BodyTooLarge"
    assert "openapi_max_body_bytes" in json.loads(body)["Message"]


@pytest.mark.parametrize("streamed", [False, True], ids=["declared", "chunked"])
def test_oss_bodies_are_bounded_by_the_object_size_setting(
    sim: AlisimServer, streamed: bool
) -> None:
    patch_settings(sim, oss_max_object_bytes=LIMIT)
    if streamed:
        status, body = exchange(sim, chunked("PUT", "/bucket/key"), chunks(LIMIT + 1))
    else:
        status, body = exchange(sim, declared("PUT", "/bucket/key", LIMIT + 1), b"x")
    assert status == 400
    error = ElementTree.fromstring(body)
    assert error.findtext("Code") == "EntityTooLarge"
    assert error.findtext("MaxSizeAllowed") == str(LIMIT)


def test_the_object_size_setting_stops_at_real_oss_5_gib(sim: AlisimServer) -> None:
    response = httpx.patch(f"{sim.url}/_alisim/settings", json={"oss_max_object_bytes": 5 << 30})
    assert response.status_code == 200
    response = httpx.patch(
        f"{sim.url}/_alisim/settings", json={"oss_max_object_bytes": (5 << 30) + 1}
    )
    assert response.status_code == 400
    assert "oss_max_object_bytes" in response.json()["error"]
    assert httpx.get(f"{sim.url}/_alisim/settings").json()["oss_max_object_bytes"] == 5 << 30


@pytest.mark.parametrize("streamed", [False, True], ids=["declared", "chunked"])
def test_developer_api_bodies_are_bounded(sim: AlisimServer, streamed: bool) -> None:
    patch_settings(sim, devapi_max_body_bytes=LIMIT)
    if streamed:
        status, body = exchange(sim, chunked("POST", "/_alisim/events"), chunks(LIMIT + 1))
    else:
        status, body = exchange(sim, declared("POST", "/_alisim/events", LIMIT + 1), b"[")
    assert status == 413
    assert "devapi_max_body_bytes" in json.loads(body)["error"]


def test_bodies_under_the_limits_still_work(sim: AlisimServer) -> None:
    patch_settings(sim, devapi_max_body_bytes=LIMIT)
    events = [{"type": "test:Big", "source": "test", "data": {"pad": "x" * 1000}}] * 40
    response = httpx.post(f"{sim.url}/_alisim/events", json=events)
    assert response.status_code == 201
    assert response.json() == {"published": 40}


# ---------------------------------------------------------------- bad input: 400, never 500
DEEP = b"[" * 100_000 + b"]" * 100_000
BAD_INPUT: list[tuple[str, str, Any, str]] = [
    ("POST", "sts", {"DurationSeconds": "abc"}, "DurationSeconds"),
    ("POST", "sts", {"DurationSeconds": 10**30}, "DurationSeconds"),
    ("POST", "sts", {"DurationSeconds": 1.5}, "DurationSeconds"),
    ("POST", "sts", {"RoleSessionName": "no spaces"}, "RoleSessionName"),
    ("POST", "sts", {"Duration": 900}, "Duration"),
    ("POST", "sts", [1, 2], "StsRequest"),
    ("POST", "sts", b"not json", "not valid JSON"),
    ("POST", "sts", b'{"DurationSeconds": NaN}', "NaN"),
    ("POST", "sts", DEEP, "nested too deeply"),
    ("PATCH", "settings", {"no_such_setting": 1}, "no_such_setting"),
    ("PATCH", "settings", {"time_scale": "fast"}, "time_scale"),
    ("PATCH", "settings", b'{"time_scale": 1e999}', "too large"),
    ("PATCH", "settings", b"[1]", "JSON object"),
    ("POST", "events", {"type": "t", "source": "s", "id": {"a": 1}}, "id"),
    ("POST", "events", b'{"type": "\\ud800", "source": "s"}', "surrogate"),
    ("POST", "events", b'{"type": "t", "source": "s", "data": {"v": Infinity}}', "Infinity"),
    ("POST", "events", b'{"type": "t", "source": "s"}\xff', "UTF-8"),
    ("POST", "events", DEEP, "nested too deeply"),
    ("GET", "events?limit=0", None, "limit"),
    ("GET", "events?after=x", None, "integers"),
    ("PUT", "faults", {"api": [{"rate": 2}]}, "rate"),
    ("PUT", "faults", b"{", "not valid JSON"),
    ("GET", "deliveries?limit=z", None, "limit"),
    ("POST", "cloudmonitor/subscriptions", DEEP, "nested too deeply"),
    ("POST", "cloudmonitor/subscriptions", {"url": "ftp://x"}, "http"),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "reason"),
    BAD_INPUT,
    ids=[f"{m} {p} {i}" for i, (m, p, _, _) in enumerate(BAD_INPUT)],
)
def test_bad_developer_input_is_a_400_with_the_reason(
    sim: AlisimServer, method: str, path: str, body: Any, reason: str
) -> None:
    content = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    response = httpx.request(method, f"{sim.url}/_alisim/{path}", content=content)
    assert response.status_code == 400, response.text
    assert reason in json.dumps(response.json(), ensure_ascii=False)
    # Nothing half-accepted poisons later reads.
    assert httpx.get(f"{sim.url}/_alisim/events").status_code == 200
    assert httpx.get(f"{sim.url}/_alisim/settings").status_code == 200


def test_sts_expiration_is_iso_8601_like_assume_role(sim: AlisimServer) -> None:
    before = time.time()
    creds = httpx.post(f"{sim.url}/_alisim/sts", json={"DurationSeconds": 900}).json()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", creds["Expiration"])
    expires = timegm(time.strptime(creds["Expiration"], "%Y-%m-%dT%H:%M:%SZ"))
    assert before + 900 - 2 <= expires <= time.time() + 900 + 1
