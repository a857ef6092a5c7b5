"""EventBridge and CloudMonitor pushes, end to end: official SDK → alisim → HTTP → a receiver.

The receiver is a real HTTP server on 127.0.0.1; tests wait on its condition variable for the
requests they expect, and poll alisim's delivery log only for things no request signals
(failed attempts, dead letters, drops).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from alibabacloud_ecs20140526 import models as ecs_models
from alibabacloud_ecs20140526.client import Client as EcsClient
from alibabacloud_eventbridge20200401 import models as eb
from alibabacloud_eventbridge20200401.client import Client as EventBridgeClient
from alibabacloud_tea_openapi import exceptions as sdk_errors
from alibabacloud_tea_openapi.utils_models import Config

from alisim.config import DEFAULT_ACCOUNT_ID
from alisim.eventbridge.delivery import mask_url
from alisim.eventbridge.models import retry_delays
from alisim.eventbridge.transform import BodyTransform, TransformError
from alisim.events.documents import cloudmonitor_time as event_time
from alisim.server import AlisimServer, free_port
from tests.helpers import call_action

REGION = "cn-hangzhou"
LINUX_IMAGE = "aliyun_3_x64_20G_alibase_20240819.vhd"
ECS_EVENTS = '{"source":["acs.ecs"],"type":[{"prefix":"ecs:"}]}'
RUNNING = json.dumps(
    {"source": ["acs.ecs"], "type": ["ecs:Instance:StateChange"], "data": {"state": ["Running"]}}
)


# ---------------------------------------------------------------- the receiver
@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """An HTTP endpoint that fails its first `fail_first` requests (or all), then answers 200.

    `hang_first` requests get no answer until `release()`; the sender must time out.
    `delay` holds every answer that many seconds; `peak` is the most requests seen at once.
    """

    def __init__(
        self,
        port: int = 0,
        *,
        fail_first: int = 0,
        always_fail: bool = False,
        hang_first: int = 0,
        fail_status: int = 500,
        delay: float = 0.0,
    ) -> None:
        self.requests: list[Received] = []
        self.delay = delay
        self.in_flight = 0
        self.peak = 0
        self.fail_first = fail_first
        self.always_fail = always_fail
        self.fail_status = fail_status
        self.hang_first = hang_first
        self._released = threading.Event()
        self._changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if receiver.delay:
                    with receiver._changed:
                        receiver.in_flight += 1
                        receiver.peak = max(receiver.peak, receiver.in_flight)
                    time.sleep(receiver.delay)
                    with receiver._changed:
                        receiver.in_flight -= 1
                if receiver._take_hang():
                    receiver._released.wait(10)
                    return
                status = receiver._status()
                answer = b"" if status == 200 else b'{"error":"refused by the test receiver"}'
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
                receiver._record(Received(self.path, dict(self.headers), body, status))

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 1024  # a burst of pushes must not wait to be accepted

        self.server = Server(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def _take_hang(self) -> bool:
        with self._changed:
            if self.hang_first > 0:
                self.hang_first -= 1
                return True
            return False

    def _status(self) -> int:
        with self._changed:
            if self.always_fail:
                return self.fail_status
            if self.fail_first > 0:
                self.fail_first -= 1
                return self.fail_status
            return 200

    def _record(self, received: Received) -> None:
        with self._changed:
            self.requests.append(received)
            self._changed.notify_all()

    def delivered(self, path: str | None = None) -> list[Received]:
        with self._changed:
            return [
                r for r in self.requests if r.status == 200 and (path is None or r.path == path)
            ]

    def wait_for(
        self, predicate: Callable[[list[Received]], bool], timeout: float = 10.0
    ) -> list[Received]:
        """Block until `predicate(all requests so far)` holds; fail at the deadline."""
        with self._changed:
            if not self._changed.wait_for(lambda: predicate(list(self.requests)), timeout):
                raise AssertionError(f"receiver got {len(self.requests)} requests, not enough")
            return list(self.requests)

    def release(self) -> None:
        self._released.set()

    def close(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    started: list[Receiver] = []

    def start(port: int = 0, **behaviour: Any) -> Receiver:
        receiver = Receiver(port, **behaviour)
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        receiver.close()


def delivered_json(requests: list[Received], path: str | None = None) -> list[Any]:
    return [r.json() for r in requests if r.status == 200 and (path is None or r.path == path)]


def has_types(*types: str, path: str | None = None) -> Callable[[list[Received]], bool]:
    def check(requests: list[Received]) -> bool:
        seen = {e.get("type") for e in delivered_json(requests, path)}
        return all(t in seen for t in types)

    return check


# ---------------------------------------------------------------- clients and helpers
def config(sim: AlisimServer, access_key: tuple[str, str]) -> Config:
    return Config(
        access_key_id=access_key[0],
        access_key_secret=access_key[1],
        endpoint=sim.endpoint,
        protocol="http",
        region_id=REGION,
    )


@pytest.fixture
def bridge(sim: AlisimServer, access_key: tuple[str, str]) -> EventBridgeClient:
    return EventBridgeClient(config(sim, access_key))


@pytest.fixture
def ecs(sim: AlisimServer, access_key: tuple[str, str]) -> EcsClient:
    return EcsClient(config(sim, access_key))


def launch(ecs: EcsClient) -> str:
    request = ecs_models.RunInstancesRequest(
        region_id=REGION, image_id=LINUX_IMAGE, instance_type="ecs.g7.large", amount=1
    )
    return ecs.run_instances(request).body.instance_id_sets.instance_id_set[0]


def http_target(
    target_id: str,
    url: str,
    *,
    body: tuple[str, str | None, str | None] | None = None,
    retry: str = "BACKOFF_RETRY",
    dead_letter_arn: str | None = None,
) -> eb.CreateRuleRequestEventTargets:
    params = [
        eb.CreateRuleRequestEventTargetsParamList(resource_key="url", form="CONSTANT", value=url)
    ]
    if body is not None:
        form, value, template = body
        params.append(
            eb.CreateRuleRequestEventTargetsParamList(
                resource_key="Body", form=form, value=value, template=template
            )
        )
    return eb.CreateRuleRequestEventTargets(
        id=target_id,
        type="http",
        endpoint=url,
        push_retry_strategy=retry,
        errors_tolerance="ALL",
        param_list=params,
        dead_letter_queue=eb.CreateRuleRequestEventTargetsDeadLetterQueue(arn=dead_letter_arn)
        if dead_letter_arn
        else None,
    )


def create_rule(
    bridge: EventBridgeClient,
    name: str,
    pattern: str,
    targets: list[eb.CreateRuleRequestEventTargets],
    bus: str = "default",
) -> str:
    request = eb.CreateRuleRequest(
        event_bus_name=bus, rule_name=name, filter_pattern=pattern, event_targets=targets
    )
    return bridge.create_rule(request).body.data.rule_arn


def patch_settings(sim: AlisimServer, **changes: Any) -> None:
    httpx.patch(f"{sim.url}/_alisim/settings", json=changes).raise_for_status()


def set_faults(sim: AlisimServer, plan: dict[str, Any]) -> None:
    httpx.put(f"{sim.url}/_alisim/faults", json=plan).raise_for_status()


def deliveries(sim: AlisimServer, **query: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{sim.url}/_alisim/deliveries", params=query)
    response.raise_for_status()
    return response.json()["deliveries"]


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll alisim's state (which signals nothing) until `predicate` returns something truthy."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.02)
    return value


def raw_call(bridge: EventBridgeClient, action: str, query: dict[str, str]) -> dict[str, Any]:
    return call_action(bridge, action, "2020-04-01", query)


# ---------------------------------------------------------------- the OpenAPI
def test_rule_crud_through_the_sdk(bridge: EventBridgeClient, sim: AlisimServer) -> None:
    bus = bridge.create_event_bus(eb.CreateEventBusRequest(event_bus_name="ops", description="x"))
    assert bus.body.code == "Success" and bus.body.success is True
    assert (
        bus.body.data.event_bus_arn == f"acs:eventbridge:{REGION}:{DEFAULT_ACCOUNT_ID}:eventbus/ops"
    )
    buses = bridge.list_event_buses(eb.ListEventBusesRequest()).body.data
    assert [b.event_bus_name for b in buses.event_buses] == ["default", "ops"]
    assert (
        bridge.get_event_bus(eb.GetEventBusRequest(event_bus_name="ops")).body.data.description
        == "x"
    )

    url = "http://127.0.0.1:9/hook"
    arn = create_rule(bridge, "on-ecs", ECS_EVENTS, [http_target("t1", url)], bus="ops")
    assert arn.endswith(":eventbus/ops/rule/on-ecs")
    create_rule(bridge, "on-ros", '{"source":["acs.ros"]}', [], bus="ops")

    rule = bridge.get_rule(eb.GetRuleRequest(event_bus_name="ops", rule_name="on-ecs")).body.data
    assert (rule.rule_name, rule.status, rule.filter_pattern) == ("on-ecs", "ENABLE", ECS_EVENTS)
    assert [(t.id, t.type, t.push_retry_strategy) for t in rule.targets] == [
        ("t1", "http", "BACKOFF_RETRY")
    ]
    assert {p.resource_key: p.value for p in rule.targets[0].param_list} == {"url": url}

    listed = bridge.list_rules(eb.ListRulesRequest(event_bus_name="ops", limit=1)).body.data
    assert (listed.total, len(listed.rules), listed.next_token) == (2, 1, "1")
    rest = bridge.list_rules(
        eb.ListRulesRequest(event_bus_name="ops", limit=1, next_token=listed.next_token)
    ).body.data
    assert [r.rule_name for r in rest.rules] == ["on-ros"] and rest.next_token == ""
    prefixed = bridge.list_rules(eb.ListRulesRequest(event_bus_name="ops", rule_name_prefix="on-r"))
    assert [r.rule_name for r in prefixed.body.data.rules] == ["on-ros"]

    bridge.update_rule(
        eb.UpdateRuleRequest(
            event_bus_name="ops",
            rule_name="on-ros",
            filter_pattern='{"source":["acs.ros","acs.ecs"]}',
        )
    )
    bridge.disable_rule(eb.DisableRuleRequest(event_bus_name="ops", rule_name="on-ros"))
    rule = bridge.get_rule(eb.GetRuleRequest(event_bus_name="ops", rule_name="on-ros")).body.data
    assert rule.status == "DISABLE" and "acs.ecs" in rule.filter_pattern
    bridge.enable_rule(eb.EnableRuleRequest(event_bus_name="ops", rule_name="on-ros"))

    put = bridge.put_targets(
        eb.PutTargetsRequest(
            event_bus_name="ops",
            rule_name="on-ros",
            targets=[
                eb.PutTargetsRequestTargets(
                    id="good",
                    type="http",
                    endpoint=url,
                    param_list=[
                        eb.PutTargetsRequestTargetsParamList(
                            resource_key="url", form="CONSTANT", value=url
                        )
                    ],
                ),
                eb.PutTargetsRequestTargets(id="no-url", type="http"),
                eb.PutTargetsRequestTargets(
                    id="bad-form",
                    type="http",
                    param_list=[
                        eb.PutTargetsRequestTargetsParamList(
                            resource_key="url", form="CONSTANT", value=url
                        ),
                        eb.PutTargetsRequestTargetsParamList(resource_key="Body", form="XML"),
                    ],
                ),
            ],
        )
    ).body.data
    assert put.error_entries_count == 2
    assert {e.entry_id for e in put.error_entries} == {"no-url", "bad-form"}
    targets = bridge.list_targets(
        eb.ListTargetsRequest(event_bus_name="ops", rule_name="on-ros")
    ).body.data
    assert [(t.id, t.rule_name, t.event_bus_name) for t in targets.targets] == [
        ("good", "on-ros", "ops")
    ]
    by_arn = bridge.list_targets(eb.ListTargetsRequest(arn=arn)).body.data
    assert [t.id for t in by_arn.targets] == ["t1"]

    removed = bridge.delete_targets(
        eb.DeleteTargetsRequest(event_bus_name="ops", rule_name="on-ros", target_ids=["good", "x"])
    ).body.data
    assert [(e.entry_id, e.error_code) for e in removed.error_entries] == [
        ("x", "EventTargetNotExist")
    ]

    with pytest.raises(sdk_errors.ClientException) as raised:
        bridge.delete_event_bus(eb.DeleteEventBusRequest(event_bus_name="ops"))
    assert raised.value.code == "EventBusRuleNotEmptyForDelete"
    for name in ("on-ecs", "on-ros"):
        bridge.delete_rule(eb.DeleteRuleRequest(event_bus_name="ops", rule_name=name))
    with pytest.raises(sdk_errors.ClientException) as raised:
        bridge.get_rule(eb.GetRuleRequest(event_bus_name="ops", rule_name="on-ecs"))
    assert (raised.value.code, raised.value.status_code) == ("EventRuleNotExisted", 409)
    deleted = bridge.delete_event_bus(eb.DeleteEventBusRequest(event_bus_name="ops")).body
    assert deleted.success is True and deleted.data is True


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (
            eb.CreateRuleRequest(event_bus_name="nope", rule_name="r", filter_pattern="{}"),
            "EventBusNotExist",
        ),
        (
            eb.CreateRuleRequest(
                event_bus_name="default", rule_name="r", filter_pattern='{"source":"acs.ecs"}'
            ),
            "EventRuleFilterPatternSchemaError",
        ),
        (
            eb.CreateRuleRequest(event_bus_name="default", rule_name="r", filter_pattern="{oops"),
            "EventRuleFilterPatternSchemaError",
        ),
        (
            eb.CreateRuleRequest(event_bus_name="default", rule_name="r"),
            "EventRuleFilterPatternEmpty",
        ),
        (
            eb.CreateRuleRequest(
                event_bus_name="default", rule_name="bad name!", filter_pattern="{}"
            ),
            "EventRuleNameInvalid",
        ),
        (
            eb.CreateRuleRequest(
                event_bus_name="default",
                rule_name="r",
                filter_pattern="{}",
                event_targets=[eb.CreateRuleRequestEventTargets(id="t", type="http")],
            ),
            "InvalidArgument",
        ),
    ],
)
def test_rule_errors_name_the_problem(
    bridge: EventBridgeClient, request_: eb.CreateRuleRequest, code: str
) -> None:
    with pytest.raises(sdk_errors.ClientException) as raised:
        bridge.create_rule(request_)
    assert raised.value.code == code
    assert raised.value.message


def test_duplicate_rule_and_bad_input_never_crash(bridge: EventBridgeClient) -> None:
    create_rule(bridge, "r", "{}", [])
    with pytest.raises(sdk_errors.ClientException) as raised:
        create_rule(bridge, "r", "{}", [])
    assert (raised.value.code, raised.value.status_code) == ("EventRuleAlreadyExist", 409)
    with pytest.raises(sdk_errors.ClientException) as raised:
        bridge.create_event_bus(eb.CreateEventBusRequest(event_bus_name="default"))
    assert raised.value.code == "EventBusAlreadyExist"

    base = {"EventBusName": "default", "RuleName": "r2", "FilterPattern": "{}"}
    malformed = [
        ("CreateRule", {**base, "EventTargets": "not json"}),
        ("CreateRule", {**base, "EventTargets": '{"Id": "t"}'}),
        ("CreateRule", {**base, "EventTargets": '[{"Id": "t", "Type": "http", "ParamList": 5}]'}),
        ("CreateRule", {**base, "EventTargets": '[["nested"]]'}),
        ("CreateRule", {**base, "Status": "MAYBE"}),
        ("PutTargets", {"EventBusName": "default", "RuleName": "r", "Targets": "[{"}),
        ("ListRules", {"EventBusName": "default", "NextToken": "abc"}),
        ("ListRules", {"EventBusName": "default", "Limit": "many"}),
        ("ListTargets", {"Arn": "acs:nothing"}),
    ]
    for action, query in malformed:
        with pytest.raises(sdk_errors.ClientException) as raised:
            raw_call(bridge, action, query)
        assert 400 <= raised.value.status_code < 500, (action, query)
    entries = raw_call(
        bridge,
        "PutTargets",
        {"EventBusName": "default", "RuleName": "r", "Targets": '[5, {"Id": "x"}]'},
    )["body"]["Data"]
    assert entries["ErrorEntriesCount"] == 2


# ---------------------------------------------------------------- HTTP targets
def test_instance_events_reach_an_http_target(
    sim: AlisimServer,
    bridge: EventBridgeClient,
    ecs: EcsClient,
    receivers: Callable[..., Receiver],
) -> None:
    receiver = receivers()
    create_rule(
        bridge, "ecs-events", ECS_EVENTS, [http_target("hook", f"{receiver.url}/eb?token=s3cret")]
    )
    create_rule(
        bridge, "ros-events", '{"source":["acs.ros"]}', [http_target("ros", f"{receiver.url}/ros")]
    )
    instance_id = launch(ecs)

    def boot_seen(requests: list[Received]) -> bool:
        events = delivered_json(requests)
        states = {e["data"].get("state") for e in events}
        return has_heartbeat(requests) and {"Pending", "Starting", "Running"} <= states

    has_heartbeat = has_types("ecs:Instance:StateChange", "ecs:CloudAssistant:FirstHeartbeat")
    requests = receiver.wait_for(boot_seen)
    events = delivered_json(requests)
    heartbeat = next(e for e in events if e["type"] == "ecs:CloudAssistant:FirstHeartbeat")
    assert heartbeat["data"]["vmName"] == instance_id
    for event in events:
        assert event["specversion"] == "1.0" and event["source"] == "acs.ecs"
        assert event["subject"] == f"acs:ecs:{REGION}:{DEFAULT_ACCOUNT_ID}:instance/{instance_id}"
        assert event["aliyuneventbusname"] == "default" and event["id"]
    assert all(r.path == "/eb?token=s3cret" for r in requests)
    assert requests[0].headers["Content-Type"] == "application/json"

    log = wait_until(lambda: deliveries(sim, rule="default/ecs-events", outcome="delivered"))
    assert log[0]["target"] == "hook" and log[0]["status_code"] == 200
    assert log[0]["url"].endswith("/eb?token=***") and "s3cret" not in json.dumps(log)
    assert {r["event_id"] for r in log} >= {e["id"] for e in events}
    assert deliveries(sim, rule="default/ros-events") == []


def test_jsonpath_template_and_constant_bodies(
    bridge: EventBridgeClient, ecs: EcsClient, receivers: Callable[..., Receiver]
) -> None:
    receiver = receivers()
    variables = json.dumps({"id": "$.id", "state": "$.data.state", "data": "$.data", "team": "ops"})
    template = '{"eventId": "${id}", "text": "now ${state}", "data": ${data}, "team": "${team}"}'
    create_rule(
        bridge,
        "transforms",
        RUNNING,
        [
            http_target("path", f"{receiver.url}/jsonpath", body=("JSONPATH", "$.data", None)),
            http_target("state", f"{receiver.url}/string", body=("JSONPATH", "$.data.state", None)),
            http_target("tpl", f"{receiver.url}/template", body=("TEMPLATE", variables, template)),
            http_target(
                "const", f"{receiver.url}/constant", body=("CONSTANT", '{"ping": 1}', None)
            ),
        ],
    )
    instance_id = launch(ecs)
    requests = receiver.wait_for(lambda rs: len(rs) >= 4)
    by_path = {r.path: r.body.decode() for r in requests}
    data = {"resourceId": instance_id, "resourceType": "ALIYUN::ECS::Instance", "state": "Running"}
    assert json.loads(by_path["/jsonpath"]) == data
    assert by_path["/string"] == "Running"
    rendered = json.loads(by_path["/template"])
    assert rendered["text"] == "now Running" and rendered["data"] == data
    assert rendered["team"] == "ops" and len(rendered["eventId"]) == 36
    assert json.loads(by_path["/constant"]) == {"ping": 1}


def test_a_burst_is_pushed_to_a_slow_target_at_once_not_through_a_narrow_window(
    sim: AlisimServer,
    bridge: EventBridgeClient,
    ecs: EcsClient,
    receivers: Callable[..., Receiver],
) -> None:
    """Like the real service, whose HTTP pushes have no documented cap: alisim's old limit of
    32 pushes in flight made a 1,000-instance launch measure alisim, not the event path."""
    receiver = receivers(delay=1.0)
    create_rule(bridge, "burst", '{"source":["acs.ecs"]}', [http_target("slow", receiver.url)])
    launched = ecs.run_instances(
        ecs_models.RunInstancesRequest(
            region_id=REGION, image_id=LINUX_IMAGE, instance_type="ecs.g7.large", amount=50
        )
    )
    assert len(launched.body.instance_id_sets.instance_id_set) == 50
    receiver.wait_for(lambda requests: len(requests) >= 200, timeout=30)
    assert receiver.peak >= 100, f"at most {receiver.peak} pushes were in flight at once"


def test_retries_until_the_receiver_recovers(
    sim: AlisimServer,
    bridge: EventBridgeClient,
    ecs: EcsClient,
    receivers: Callable[..., Receiver],
) -> None:
    patch_settings(sim, time_scale=0.01)
    receiver = receivers(fail_first=2)
    create_rule(bridge, "flaky", RUNNING, [http_target("t", f"{receiver.url}/hook")])
    launch(ecs)
    requests = receiver.wait_for(lambda rs: any(r.status == 200 for r in rs))
    assert [r.status for r in requests] == [500, 500, 200]
    assert len({r.json()["id"] for r in requests}) == 1
    log = wait_until(lambda: deliveries(sim, rule="default/flaky", outcome="delivered"))
    attempts = deliveries(sim, event_id=log[0]["event_id"])
    assert [(a["attempt"], a["outcome"], a["status_code"]) for a in attempts] == [
        (1, "failed", 500),
        (2, "failed", 500),
        (3, "delivered", 200),
    ]


def test_dead_letter_after_the_last_retry(
    sim: AlisimServer,
    bridge: EventBridgeClient,
    ecs: EcsClient,
    receivers: Callable[..., Receiver],
) -> None:
    patch_settings(sim, time_scale=0.01)
    receiver = receivers(always_fail=True)
    arn = "acs:mns:cn-hangzhou:123:queues/dlq"
    create_rule(
        bridge, "doomed", RUNNING, [http_target("t", f"{receiver.url}/x", dead_letter_arn=arn)]
    )
    launch(ecs)
    requests = receiver.wait_for(lambda rs: len(rs) >= 4)
    event_id = requests[0].json()["id"]

    def dead_letters() -> dict[str, Any]:
        return httpx.get(f"{sim.url}/_alisim/dead-letters").json()

    found = wait_until(lambda: dead_letters()["count"] and dead_letters())
    letter = found["dead_letters"][0]
    assert letter["event_id"] == event_id and letter["event"]["id"] == event_id
    assert (letter["attempts"], letter["last_status_code"]) == (4, 500)
    assert letter["dead_letter_arn"] == arn and letter["rule"] == "default/doomed"
    with open(found["path"], encoding="utf-8") as sink:
        lines = [json.loads(line) for line in sink]
    assert [line["event"]["id"] for line in lines] == [event_id]
    assert len(receiver.requests) == 4
    outcomes = [d["outcome"] for d in deliveries(sim, event_id=event_id)]
    assert outcomes == ["failed"] * 4 + ["dead-lettered"]


@pytest.mark.parametrize("status", [400, 401, 413, 422])
def test_a_client_error_is_dead_lettered_after_one_attempt(
    sim: AlisimServer,
    bridge: EventBridgeClient,
    ecs: EcsClient,
    receivers: Callable[..., Receiver],
    status: int,
) -> None:
    patch_settings(sim, time_scale=0.01)
    receiver = receivers(always_fail=True, fail_status=status)
    create_rule(
        bridge,
        "refused",
        RUNNING,
        [http_target("t", f"{receiver.url}/x", retry="EXPONENTIAL_DECAY_RETRY")],
    )
    launch(ecs)
    event_id = receiver.wait_for(lambda rs: len(rs) >= 1)[0].json()["id"]
    wait_until(lambda: deliveries(sim, event_id=event_id, outcome="dead-lettered"))
    log = deliveries(sim, event_id=event_id)
    reason = f"HTTP {status}: refused by the test receiver"
    assert [(d["attempt"], d["outcome"], d["status_code"], d["error"]) for d in log] == [
        (1, "failed", status, reason),
        (1, "dead-lettered", status, reason),
    ]
    [letter] = httpx.get(f"{sim.url}/_alisim/dead-letters").json()["dead_letters"]
    assert (letter["attempts"], letter["last_status_code"], letter["last_error"]) == (
        1,
        status,
        reason,
    )
    assert len(receiver.requests) == 1


@pytest.mark.parametrize("status", [503, 500, 408, 429])
def test_server_errors_and_not_now_answers_are_retried(
    sim: AlisimServer,
    bridge: EventBridgeClient,
    ecs: EcsClient,
    receivers: Callable[..., Receiver],
    status: int,
) -> None:
    patch_settings(sim, time_scale=0.01)
    receiver = receivers(fail_first=2, fail_status=status)
    create_rule(bridge, "busy", RUNNING, [http_target("t", f"{receiver.url}/hook")])
    launch(ecs)
    requests = receiver.wait_for(lambda rs: any(r.status == 200 for r in rs))
    assert [r.status for r in requests] == [status, status, 200]
    log = wait_until(lambda: deliveries(sim, rule="default/busy", outcome="delivered"))
    attempts = deliveries(sim, event_id=log[0]["event_id"])
    assert [(a["outcome"], a["status_code"]) for a in attempts] == [
        ("failed", status),
        ("failed", status),
        ("delivered", 200),
    ]
    assert attempts[0]["error"] == f"HTTP {status}: refused by the test receiver"


def test_delivered_once_the_receiver_comes_up(
    sim: AlisimServer,
    bridge: EventBridgeClient,
    ecs: EcsClient,
    receivers: Callable[..., Receiver],
) -> None:
    patch_settings(sim, time_scale=0.01)
    port = free_port()
    create_rule(
        bridge,
        "late",
        RUNNING,
        [http_target("t", f"http://127.0.0.1:{port}/hook", retry="EXPONENTIAL_DECAY_RETRY")],
    )
    launch(ecs)
    failed = wait_until(lambda: deliveries(sim, rule="default/late", outcome="failed"))
    assert "Connect" in failed[0]["error"]
    receiver = receivers(port)
    requests = receiver.wait_for(lambda rs: len(rs) >= 1)
    assert requests[0].json()["id"] == failed[0]["event_id"]
    done = wait_until(lambda: deliveries(sim, rule="default/late", outcome="delivered"))
    assert done[0]["attempt"] > 1


def test_hanging_target_times_out_and_is_retried(
    sim: AlisimServer,
    bridge: EventBridgeClient,
    ecs: EcsClient,
    receivers: Callable[..., Receiver],
) -> None:
    patch_settings(sim, time_scale=0.01, delivery_timeout_seconds=0.3)
    receiver = receivers(hang_first=1)
    create_rule(bridge, "slow", RUNNING, [http_target("t", f"{receiver.url}/hook")])
    launch(ecs)
    receiver.wait_for(lambda rs: len(rs) >= 1)
    attempts = wait_until(lambda: deliveries(sim, rule="default/slow", outcome="delivered"))
    log = deliveries(sim, event_id=attempts[0]["event_id"])
    assert log[0]["outcome"] == "failed" and "no answer within 0.3 s" in log[0]["error"]
    assert log[-1]["attempt"] == 2


def test_non_http_targets_are_logged_as_skipped(
    sim: AlisimServer, bridge: EventBridgeClient, ecs: EcsClient
) -> None:
    target = eb.CreateRuleRequestEventTargets(
        id="mns", type="acs.mns.queue", endpoint="acs:mns:cn-hangzhou:123:queues/q"
    )
    create_rule(bridge, "to-mns", RUNNING, [target])
    launch(ecs)
    skipped = wait_until(lambda: deliveries(sim, rule="default/to-mns"))
    assert skipped[0]["outcome"] == "skipped" and "not simulated" in skipped[0]["error"]


# ---------------------------------------------------------------- delivery faults
def test_duplicate_fault_delivers_twice(
    sim: AlisimServer,
    bridge: EventBridgeClient,
    ecs: EcsClient,
    receivers: Callable[..., Receiver],
) -> None:
    set_faults(sim, {"delivery": {"duplicate_rate": 1.0}})
    receiver = receivers()
    create_rule(bridge, "twice", RUNNING, [http_target("t", f"{receiver.url}/hook")])
    launch(ecs)
    requests = receiver.wait_for(lambda rs: len(rs) >= 2)
    assert requests[0].json()["id"] == requests[1].json()["id"]
    assert requests[0].body == requests[1].body
    log = wait_until(lambda: len(found := deliveries(sim, outcome="delivered")) == 2 and found)
    assert sorted(d["duplicate"] for d in log) == [False, True]
    faults = httpx.get(f"{sim.url}/_alisim/faults").json()
    assert faults["injected"] >= 1 and faults["plan"]["api"] == []


def test_drop_fault_loses_the_push_visibly(
    sim: AlisimServer,
    bridge: EventBridgeClient,
    ecs: EcsClient,
    receivers: Callable[..., Receiver],
) -> None:
    set_faults(sim, {"delivery": {"drop_rate": 1.0}})
    receiver = receivers()
    create_rule(bridge, "lossy", RUNNING, [http_target("t", f"{receiver.url}/hook")])
    launch(ecs)
    dropped = wait_until(lambda: deliveries(sim, rule="default/lossy"))
    assert [(d["outcome"], d["attempt"]) for d in dropped] == [("dropped", 0)]
    assert httpx.get(f"{sim.url}/_alisim/deliveries").json()["pending"] == 0
    assert receiver.requests == []


def test_reorder_fault_swaps_neighbours(
    sim: AlisimServer,
    bridge: EventBridgeClient,
    ecs: EcsClient,
    receivers: Callable[..., Receiver],
) -> None:
    set_faults(sim, {"delivery": {"reorder_rate": 1.0, "reorder_hold_ms": 2000}})
    receiver = receivers()
    create_rule(bridge, "shuffled", ECS_EVENTS, [http_target("t", f"{receiver.url}/hook")])
    launch(ecs)
    requests = receiver.wait_for(lambda rs: len(rs) >= 4)
    labels = [e["data"].get("state", "Heartbeat") for e in delivered_json(requests)]
    assert sorted(labels) == ["Heartbeat", "Pending", "Running", "Starting"]
    assert labels.index("Starting") < labels.index("Pending")
    assert labels.index("Heartbeat") < labels.index("Running")


def test_delay_fault_holds_pushes(
    sim: AlisimServer,
    bridge: EventBridgeClient,
    ecs: EcsClient,
    receivers: Callable[..., Receiver],
) -> None:
    set_faults(sim, {"delivery": {"delay_ms": 300}})
    receiver = receivers()
    create_rule(bridge, "slowed", RUNNING, [http_target("t", f"{receiver.url}/hook")])
    started = time.monotonic()
    launch(ecs)
    receiver.wait_for(lambda rs: len(rs) >= 1)
    assert time.monotonic() - started >= 0.3


def test_bad_fault_plans_are_rejected(sim: AlisimServer) -> None:
    response = httpx.put(f"{sim.url}/_alisim/faults", json={"delivery": {"drop_rate": 2}})
    assert response.status_code == 400
    assert httpx.put(f"{sim.url}/_alisim/faults", json={"api": [{"action": "X"}]}).is_success


# ---------------------------------------------------------------- CloudMonitor
def test_cloudmonitor_subscription_receives_instance_state_change(
    sim: AlisimServer, ecs: EcsClient, receivers: Callable[..., Receiver]
) -> None:
    receiver = receivers()
    subscriptions = f"{sim.url}/_alisim/cloudmonitor/subscriptions"
    created = httpx.post(
        subscriptions,
        json={"url": f"{receiver.url}/cm", "names": ["Instance:StateChange"], "products": ["ECS"]},
    )
    assert created.status_code == 201
    other = httpx.post(subscriptions, json={"url": f"{receiver.url}/disk", "names": ["Disk:X"]})
    assert [s["id"] for s in httpx.get(subscriptions).json()["subscriptions"]] == [
        created.json()["id"],
        other.json()["id"],
    ]
    instance_id = launch(ecs)

    def running(requests: list[Received]) -> bool:
        return any(n["content"]["state"] == "Running" for n in delivered_json(requests, "/cm"))

    notices = delivered_json(receiver.wait_for(running), "/cm")
    notice = next(n for n in notices if n["content"]["state"] == "Running")
    assert set(notice) == {
        "id",
        "eventTime",
        "level",
        "name",
        "product",
        "regionId",
        "resourceId",
        "userId",
        "ver",
        "content",
    }
    assert (notice["name"], notice["product"], notice["level"], notice["ver"]) == (
        "Instance:StateChange",
        "ECS",
        "INFO",
        "1.0",
    )
    assert re.fullmatch(r"\d{8}T\d{6}\.\d{3}\+0800", notice["eventTime"])
    assert notice["resourceId"] == f"acs:ecs:{REGION}:{DEFAULT_ACCOUNT_ID}:instance/{instance_id}"
    assert (notice["regionId"], notice["userId"]) == (REGION, DEFAULT_ACCOUNT_ID)
    assert notice["content"] == {
        "resourceId": instance_id,
        "resourceType": "ALIYUN::ECS::Instance",
        "state": "Running",
    }
    assert all(r.path == "/cm" for r in receiver.requests)
    assert deliveries(sim, rule=other.json()["id"]) == []
    assert {d["channel"] for d in deliveries(sim)} == {"cloudmonitor"}

    removed = httpx.delete(subscriptions, params={"id": created.json()["id"]})
    assert removed.json() == {"removed": 1}
    assert httpx.delete(subscriptions, params={"id": "sub-missing"}).status_code == 404
    assert len(httpx.get(subscriptions).json()["subscriptions"]) == 1


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"url": "ftp://x"}',
        b'{"names": ["x"]}',
        b'{"url": "http://x", "names": 3}',
    ],
)
def test_bad_subscriptions_are_rejected(sim: AlisimServer, body: bytes) -> None:
    response = httpx.post(f"{sim.url}/_alisim/cloudmonitor/subscriptions", content=body)
    assert response.status_code == 400 and "error" in response.json()


# ---------------------------------------------------------------- pure parts
def test_body_transforms() -> None:
    event = {"id": "e1", "data": {"state": "Running", "n": 3, "none": None, "list": [1, 2]}}
    assert BodyTransform.build("JSONPATH", "$.data.n", None).render(event) == "3"
    assert BodyTransform.build("JSONPATH", "$.data.list[1]", None).render(event) == "2"
    assert BodyTransform.build("JSONPATH", "$['data']['state']", None).render(event) == "Running"
    assert BodyTransform.build("JSONPATH", "$.data.missing", None).render(event) == "null"
    template = BodyTransform.build(
        "TEMPLATE",
        '{"s": "$.data.state", "none": "$.data.none", "gone": "$.data.gone", "k": 7}',
        "${s}/${none}/${gone}/${k}/${unknown}",
    )
    assert template.render(event) == "Running/null/${gone}/7/${unknown}"
    assert json.loads(BodyTransform.build("ORIGINAL", None, None).render(event)) == event
    for form, value, tpl in [
        ("XML", None, None),
        ("JSONPATH", "data.state", None),
        ("JSONPATH", "$.data[", None),
        ("TEMPLATE", "not json", "x"),
        ("TEMPLATE", '{"a": "$.a"}', None),
        ("CONSTANT", None, None),
    ]:
        with pytest.raises(TransformError):
            BodyTransform.build(form, value, tpl)


def test_retry_schedules_match_the_documentation() -> None:
    backoff = retry_delays("BACKOFF_RETRY")
    assert len(backoff) == 3 and all(10 <= d <= 20 for d in backoff)
    decay = retry_delays("EXPONENTIAL_DECAY_RETRY")
    assert len(decay) == 176
    assert decay[:10] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512] and set(decay[9:]) == {512}
    assert 23 * 3600 < sum(decay) < 25 * 3600


def test_urls_are_masked_in_logs() -> None:
    assert mask_url("http://h:1/p?token=abc&x=1") == "http://h:1/p?token=***&x=1"
    assert mask_url("https://u:pw@h/p?access_token=z") == "https://u:***@h/p?access_token=***"
    assert mask_url("http://h/p") == "http://h/p"


def test_cloudmonitor_event_time_is_utc_plus_8() -> None:
    assert event_time({"time": "2018-12-26T14:01:14.058Z"}) == "20181226T220114.058+0800"
