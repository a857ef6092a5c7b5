"""A bad event costs only the push that carried it: many valid pushes and one poison push,
sent at once to a relay backed by a real `prefect server start`."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from alicloud_runbooks.events import names
from alicloud_runbooks.events.mapping import prefect_event_id
from alicloud_runbooks.relay.app import create_app
from alicloud_runbooks.relay.prefect_sink import PrefectRefused, PrefectSink
from alicloud_runbooks.relay.settings import RelaySettings
from alicloud_runbooks.relay.strict_json import StrictJSONError, loads
from local_stack.servers import PrefectServer, ThreadedServer
from tests import samples
from tests.helpers import wait_until

TOKEN = "poison-test-token-456"
VALID_PUSHES = 40
# A Prefect stricter than the relay's own bound on names: what it refuses is only found by
# writing, so this is how a refusal by Prefect (422) is provoked through the real path.
STRICT_NAME_LENGTH = 100
STRICT_AUTH = "relay:strict-prefect-password"


def _relay(api_url: str, **overrides: Any) -> ThreadedServer:
    settings = RelaySettings(token=TOKEN, prefect_api_url=api_url, **overrides)
    return ThreadedServer(create_app(settings)).start()


@pytest.fixture(scope="module")
def relay(prefect_server) -> Iterator[ThreadedServer]:
    server = _relay(prefect_server.api_url)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def strict_prefect() -> Iterator[PrefectServer]:
    server = PrefectServer(
        extra_env={
            "PREFECT_SERVER_EVENTS_MAXIMUM_EVENT_NAME_LENGTH": str(STRICT_NAME_LENGTH),
            "PREFECT_SERVER_API_AUTH_STRING": STRICT_AUTH,
            "PREFECT_SERVER_EVENTS_PERSISTER_FLUSH_INTERVAL": "0.5",
        }
    )
    server.start()
    yield server
    server.stop()


def _stored(api_url: str, ids: list[str], auth: str | None = None) -> list[dict[str, Any]]:
    headers = {}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
    found: list[dict[str, Any]] = []
    for start in range(0, len(ids), 50):
        chunk = ids[start : start + 50]
        response = httpx.post(
            f"{api_url}/events/filter",
            json={"filter": {"id": {"id": chunk}}, "limit": 50},
            headers=headers,
        )
        response.raise_for_status()
        found += response.json()["events"]
    return found


def stored(api_url: str, ids: list[str], auth: str | None = None) -> list[dict[str, Any]]:
    """The events with these ids once Prefect has persisted every one of them."""

    def complete() -> list[dict[str, Any]]:
        found = _stored(api_url, ids, auth)
        return found if len(found) == len(ids) else []

    return wait_until(complete, 30)


def _event(data: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    event = samples.fresh(samples.TASK_COMPLETED)
    if data:
        event["data"] = {**event["data"], **data}
    event.update(fields)
    return event


POISON: dict[str, tuple[bytes, str]] = {
    "nan": (json.dumps(_event({"metric": math.nan})).encode(), "is NaN"),
    "infinity": (json.dumps(_event({"metric": math.inf})).encode(), "is Infinity"),
    "-infinity": (json.dumps(_event({"metric": -math.inf})).encode(), "is -Infinity"),
    "overflow": (
        json.dumps(_event({"metric": 0.5})).replace("0.5", "1e999").encode(),
        "is 1e999",
    ),
    "surrogate in a value": (
        json.dumps(_event({"output": "ok \ud800"})).encode(),
        "string at $.data.output holds a lone UTF-16 surrogate",
    ),
    "surrogate in a key": (
        json.dumps(_event({"\udfff": "x"})).encode(),
        "a key at $.data.\\udfff holds a lone UTF-16 surrogate",
    ),
    "surrogate in a batch": (
        json.dumps([_event(), _event(subject="acs.ecs:\udc00")]).encode(),
        "string at $[1].subject",
    ),
}


async def _push_all(url: str, bodies: list[bytes]) -> list[httpx.Response]:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=len(bodies))
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        return await asyncio.gather(
            *(client.post(url, content=body, headers=headers) for body in bodies)
        )


def push_at_once(url: str, valid: list[dict[str, Any]], poison: bytes) -> list[httpx.Response]:
    """Every push at once, the poison in the middle; answers in the order sent."""
    bodies = [json.dumps(event).encode() for event in valid]
    bodies.insert(len(bodies) // 2, poison)
    return asyncio.run(_push_all(url, bodies))


@pytest.mark.parametrize("kind", list(POISON))
def test_a_poison_push_gets_400_and_its_neighbours_are_stored(relay, prefect_server, kind) -> None:
    poison, reason = POISON[kind]
    valid = [_event() for _ in range(VALID_PUSHES)]
    answers = push_at_once(f"{relay.url}/eventbridge", valid, poison)
    bad = answers.pop(VALID_PUSHES // 2)
    assert bad.status_code == 400, bad.text
    assert reason in bad.json()["error"]
    assert [a.status_code for a in answers] == [200] * VALID_PUSHES, [a.text for a in answers]
    ids = [prefect_event_id(event["id"]) for event in valid]
    assert {e["id"] for e in stored(prefect_server.api_url, ids)} == set(ids)
    health = httpx.get(f"{relay.url}/healthz").json()
    assert health["last_rejection"]["status"] == 400
    assert reason in health["last_rejection"]["reason"]


def test_a_long_unknown_type_is_stored_under_a_bounded_name(relay, prefect_server) -> None:
    """The longest source and type a CloudEvent may have made a name over Prefect's 1,024
    characters, which refused the whole write; now it is an ordinary, bounded event."""
    source = "acs." + "s" * 508
    long_types = [letter * 512 for letter in "ab"]
    unknown = [_event(source=source, type=kind) for kind in long_types]
    valid = [_event() for _ in range(VALID_PUSHES)]
    first = json.dumps(unknown[0]).encode()
    answers = push_at_once(f"{relay.url}/eventbridge", valid + unknown[1:], first)
    assert [a.status_code for a in answers] == [200] * (VALID_PUSHES + 2), [a.text for a in answers]
    ids = [prefect_event_id(e["id"]) for e in unknown + valid]
    events = {e["id"]: e for e in stored(prefect_server.api_url, ids)}
    bounded = [events[prefect_event_id(e["id"])] for e in unknown]
    assert [e["payload"]["acs"]["type"] for e in bounded] == long_types
    event_names = [e["event"] for e in bounded]
    assert all(len(name) <= names.MAX_NAME_LENGTH for name in event_names)
    assert all(name.startswith("acs.sss") for name in event_names)
    assert event_names[0] != event_names[1]


def test_prefects_refusal_costs_only_the_push_it_refuses(strict_prefect) -> None:
    server = _relay(strict_prefect.api_url, prefect_api_auth_string=STRICT_AUTH)
    try:
        refused = _event(type="ecs:Custom:" + "x" * (STRICT_NAME_LENGTH + 20))
        valid = [_event() for _ in range(VALID_PUSHES)]
        answers = push_at_once(f"{server.url}/eventbridge", valid, json.dumps(refused).encode())
        bad = answers.pop(VALID_PUSHES // 2)
        assert bad.status_code == 400, bad.text
        error = bad.json()["error"]
        assert "Prefect refused the events (422)" in error
        assert f"at most {STRICT_NAME_LENGTH} characters" in error
        assert STRICT_AUTH not in error and TOKEN not in error
        assert "x" * 50 not in error, "Prefect echoes the input: the reason must not"
        assert [a.status_code for a in answers] == [200] * VALID_PUSHES, [a.text for a in answers]
        ids = [prefect_event_id(event["id"]) for event in valid]
        assert len(stored(strict_prefect.api_url, ids, STRICT_AUTH)) == VALID_PUSHES
        health = httpx.get(f"{server.url}/healthz").json()
        assert health["pushes"]["accepted"] == VALID_PUSHES
        assert health["pushes"]["rejected"] == 1 and health["pushes"]["unavailable"] == 0
        assert f"at most {STRICT_NAME_LENGTH} characters" in health["last_rejection"]["reason"]
        assert health["prefect"] is True
    finally:
        server.stop()


def test_one_write_is_split_until_the_refused_push_is_found(strict_prefect) -> None:
    """Pushes stored together go out in one write; the refusal splits it, no more than needed."""

    async def scenario() -> tuple[list[Any], PrefectSink]:
        settings = RelaySettings(
            token=TOKEN,
            prefect_api_url=strict_prefect.api_url,
            prefect_api_auth_string=STRICT_AUTH,
        )
        sink = PrefectSink(settings)
        events = [
            [{**e, "occurred": "2026-01-01T00:00:00+00:00"}]
            for e in (_prefect_event(i) for i in range(16))
        ]
        events[5][0]["event"] = "x" * (STRICT_NAME_LENGTH + 1)
        try:
            return await asyncio.gather(
                *(sink.store(push) for push in events), return_exceptions=True
            ), sink
        finally:
            await sink.close()

    outcomes, sink = asyncio.run(scenario())
    assert [type(o).__name__ for o in outcomes] == ["NoneType"] * 5 + ["PrefectRefused"] + [
        "NoneType"
    ] * 10
    assert "event 0 event: Value error, Event name must be at most" in str(outcomes[5])
    assert "x" * 50 not in str(outcomes[5])
    # 16 pushes, one refused: the whole write, then one split per halving down to it.
    assert sink.splits == 4
    assert sink.writes == 4


def _prefect_event(index: int) -> dict[str, Any]:
    raw = _event()
    return {
        "id": prefect_event_id(raw["id"]),
        "event": "acs.ecs.CloudAssistant.TaskCompleted",
        "resource": {"prefect.resource.id": f"acs.ecs.instance.i-{index}"},
        "payload": {},
    }


def test_a_prefect_that_refuses_the_relays_credentials_means_503_not_400(
    strict_prefect,
) -> None:
    """401 from Prefect is the relay's configuration, not the event: EventBridge must retry."""
    server = _relay(strict_prefect.api_url, prefect_api_auth_string="relay:wrong")
    try:
        response = httpx.post(
            f"{server.url}/eventbridge",
            json=_event(),
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert response.status_code == 503, response.text
        assert "401" in response.json()["error"]
        assert "wrong" not in response.json()["error"]
        health = httpx.get(f"{server.url}/healthz").json()
        assert health["pushes"]["unavailable"] == 1 and health["last_rejection"] is None
    finally:
        server.stop()


def test_an_event_the_relay_cannot_encode_is_refused_alone() -> None:
    async def scenario() -> None:
        sink = PrefectSink(RelaySettings(token=TOKEN))
        try:
            with pytest.raises(PrefectRefused, match="cannot be encoded"):
                await sink.store([{"payload": {"x": math.nan}}])
            with pytest.raises(PrefectRefused, match="cannot be encoded"):
                await sink.store([{"payload": {"x": "\ud800"}}])
        finally:
            await sink.close()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"a": NaN}', "$.a is NaN"),
        (b'{"a": [1, -Infinity]}', "$.a[1] is -Infinity"),
        (b'{"a": {"b": 1e400}}', "$.a.b is 1e400"),
        (b'{"a": "\\ud800"}', "string at $.a"),
        (b'{"\\udbff": 1}', "a key at $.\\udbff"),
        (b'{"a": "\xed\xa0\x80"}', "string at $.a"),
        (b'{"a":' + b"[" * 40 + b"]" * 40 + b"}", "nested deeper than 32"),
        (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
    ],
)
def test_strict_json_says_what_and_where(body: bytes, reason: str) -> None:
    with pytest.raises(StrictJSONError) as caught:
        loads(body, 32)
    assert reason in str(caught.value)
    str(caught.value).encode("utf-8")


def test_strict_json_keeps_what_is_valid() -> None:
    assert loads(b'{"a": [1.5, -0.0, 1e308, "\\ud83d\\ude00"]}', 32) == {
        "a": [1.5, -0.0, 1e308, "\U0001f600"]
    }


def test_bounded_names_stay_distinct_and_readable() -> None:
    short = "acs.ecs.Custom.Thing"
    assert names.bounded(short, 200) == short
    first, second = (names.bounded("acs.ecs." + c * 5000, 200) for c in "ab")
    assert len(first) == len(second) == 200 and first != second
    assert first.startswith("acs.ecs.aaaa")
    assert names.bounded("acs.ecs." + "a" * 5000 + "b", 200) != first


def _deliveries(sim, **query: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{sim.url}/_alisim/deliveries", params={"limit": "10000", **query})
    response.raise_for_status()
    return response.json()["deliveries"]


def test_alisim_dead_letters_a_poison_event_at_once_and_delivers_its_neighbours(
    sim, access_key, relay, prefect_server
) -> None:
    """alisim's EventBridge → the relay → Prefect: the poison push gets 400 and is
    dead-lettered after one attempt; the events published with it are stored, first time."""
    from alicloud_runbooks.clients import Endpoint, eventbridge_client
    from alicloud_runbooks.subscribe import subscribe

    bridge = eventbridge_client(
        access_key_id=access_key[0],
        access_key_secret=access_key[1],
        region="cn-hangzhou",
        endpoint=Endpoint(openapi=sim.endpoint, protocol="http"),
    )
    subscribe(bridge, target_url=f"{relay.url}/eventbridge", token=TOKEN, dead_letter_arn="dlq")

    def task_completed(index: int, **extra: Any) -> dict[str, Any]:
        data = {"instanceId": f"i-poison{index:04d}", "invokeId": "t-poison", **extra}
        return {
            "id": str(uuid.uuid4()),
            "type": names.TASK_COMPLETED_TYPE,
            "source": "acs.ecs",
            "data": {**data, "invocationStatus": "Success", "exitCode": "0"},
        }

    valid = [task_completed(i) for i in range(VALID_PUSHES)]
    # alisim publishes only strict JSON: the poison here is an event the relay cannot map.
    poison = task_completed(VALID_PUSHES)
    del poison["data"]["instanceId"]
    published = httpx.post(
        f"{sim.url}/_alisim/events",
        content=json.dumps([*valid[:20], poison, *valid[20:]]),
        headers={"Content-Type": "application/json"},
    )
    assert published.status_code == 201, published.text

    dead = wait_until(lambda: _deliveries(sim, event_id=poison["id"], outcome="dead-lettered"))
    attempts = _deliveries(sim, event_id=poison["id"])
    assert [(a["attempt"], a["outcome"], a["status_code"]) for a in attempts] == [
        (1, "failed", 400),
        (1, "dead-lettered", 400),
    ]
    assert "instanceId" in dead[0]["error"]
    letters = httpx.get(f"{sim.url}/_alisim/dead-letters").json()["dead_letters"]
    assert [letter["event_id"] for letter in letters] == [poison["id"]]

    ids = [prefect_event_id(event["id"]) for event in valid]
    assert len(stored(prefect_server.api_url, ids)) == VALID_PUSHES
    pushes = _deliveries(sim, rule="default/runbooks-cloud-assistant")
    firsts = [(d["attempt"], d["outcome"]) for d in pushes if d["event_id"] != poison["id"]]
    assert firsts == [(1, "delivered")] * VALID_PUSHES, "a valid push was refused or retried"
