"""Event-pattern matching, case by case, modelled on Alibaba's "Event patterns" documentation."""

from __future__ import annotations

from typing import Any

import pytest

from alisim.eventbridge.patterns import EventPattern, PatternError

# The OSS sample event of the documentation, with data fields for each operator.
EVENT: dict[str, Any] = {
    "id": "7adc8c1a-645d-4476-bdef-5d6fb57f****",
    "source": "acs.oss",
    "specversion": "1.0",
    "type": "oss:ObjectCreated:PostObject",
    "datacontenttype": "application/json",
    "dataschema": "http://example.com/test.json",
    "subject": "acs:oss:cn-hangzhou:1234567:xls-papk/game_apk/123.jpg",
    "time": "2020-08-17T16:04:46.149Asia/Shanghai",
    "aliyunregionid": "cn-hangzhou",
    "data": {
        "name": "test",
        "scope": 100,
        "ratio": 2.5,
        "state": "running",
        "c-count": 3,
        "source-ip": "10.0.0.123",
        "eventVersion": "",
        "responseElements": None,
        "enabled": True,
        "instance-list": ["i-1", "i-2"],
        "nested": {"level": "WARN"},
        "users": [{"name": "a", "role": "admin"}, {"name": "b", "role": "dev"}],
    },
}

MATCHING: list[tuple[str, dict[str, Any]]] = [
    ("empty pattern matches all", {}),
    ("exact value", {"source": ["acs.oss"]}),
    ("values are ORed", {"source": ["acs.ecs", "acs.oss"]}),
    ("extension attribute", {"aliyunregionid": ["cn-hangzhou"]}),
    ("prefix", {"source": [{"prefix": "acs."}]}),
    ("suffix", {"subject": [{"suffix": ".jpg"}]}),
    (
        "prefix and suffix in one condition (CreateRule sample)",
        {"subject": [{"prefix": "acs:oss:cn-hangzhou:1234567:xls-papk/", "suffix": ".jpg"}]},
    ),
    ("contains", {"type": [{"contains": "ObjectCreated"}]}),
    ("anything-but value", {"data": {"state": [{"anything-but": "initializing"}]}}),
    ("anything-but list", {"data": {"state": [{"anything-but": ["stopped", "overloaded"]}]}}),
    ("anything-but number", {"data": {"scope": [{"anything-but": 123}]}}),
    ("anything-but prefix", {"data": {"state": [{"anything-but": {"prefix": "init"}}]}}),
    ("anything-but suffix", {"data": {"state": [{"anything-but": {"suffix": "ed"}}]}}),
    ("numeric range", {"data": {"c-count": [{"numeric": [">", 0, "<=", 5]}]}}),
    ("numeric equal", {"data": {"c-count": [{"numeric": ["=", 3]}]}}),
    ("numeric float", {"data": {"ratio": [{"numeric": [">=", 2.5, "<", 3]}]}}),
    ("cidr block", {"data": {"source-ip": [{"cidr": "10.0.0.0/24"}]}}),
    ("cidr single address", {"data": {"source-ip": [{"cidr": "10.0.0.123"}]}}),
    ("exists true", {"data": {"state": [{"exists": True}]}}),
    ("exists true on a null value", {"data": {"responseElements": [{"exists": True}]}}),
    ("exists false", {"data": {"missing": [{"exists": False}]}}),
    ("null value", {"data": {"responseElements": [None]}}),
    ("empty string", {"data": {"eventVersion": [""]}}),
    ("number as written", {"data": {"scope": [100]}}),
    ("boolean", {"data": {"enabled": [True]}}),
    ("event array intersects", {"data": {"instance-list": ["i-2", "i-9"]}}),
    ("nested object", {"data": {"nested": {"level": ["WARN"]}}}),
    ("array of objects", {"data": {"users": {"role": ["admin"]}}}),
    ("keys are ANDed", {"source": ["acs.oss"], "data": {"name": ["test"]}}),
    ("condition or value", {"data": {"state": [{"prefix": "stop"}, "running"]}}),
    ("exists or value", {"data": {"missing": ["x", {"exists": False}]}}),
]

NOT_MATCHING: list[tuple[str, dict[str, Any]]] = [
    ("other value", {"source": ["acs.ecs"]}),
    ("case-sensitive", {"source": ["ACS.OSS"]}),
    ("prefix", {"source": [{"prefix": "acs.e"}]}),
    ("suffix", {"subject": [{"suffix": ".png"}]}),
    (
        "prefix matches, suffix does not",
        {"subject": [{"prefix": "acs:oss:", "suffix": ".txt"}]},
    ),
    ("contains", {"type": [{"contains": "Deleted"}]}),
    ("anything-but value", {"data": {"state": [{"anything-but": "running"}]}}),
    ("anything-but list", {"data": {"state": [{"anything-but": ["running", "stopped"]}]}}),
    ("anything-but number", {"data": {"scope": [{"anything-but": [100, 200]}]}}),
    ("anything-but prefix", {"data": {"state": [{"anything-but": {"prefix": "run"}}]}}),
    ("anything-but on a missing field", {"data": {"missing": [{"anything-but": "x"}]}}),
    ("numeric range", {"data": {"c-count": [{"numeric": [">", 3]}]}}),
    ("numeric upper bound", {"data": {"c-count": [{"numeric": [">", 0, "<", 3]}]}}),
    ("numeric on a string", {"data": {"name": [{"numeric": [">", 0]}]}}),
    ("cidr block", {"data": {"source-ip": [{"cidr": "10.0.1.0/24"}]}}),
    ("cidr on a non-address", {"data": {"name": [{"cidr": "10.0.0.0/8"}]}}),
    ("exists true on a missing field", {"data": {"missing": [{"exists": True}]}}),
    ("exists false on a present field", {"data": {"state": [{"exists": False}]}}),
    ("null against a string", {"data": {"name": [None]}}),
    ("null against a missing field", {"data": {"missing": [None]}}),
    ("empty string against a value", {"data": {"name": [""]}}),
    ("number against its string", {"data": {"scope": ["100"]}}),
    ("numbers compare as written", {"data": {"scope": [100.0]}}),
    ("scientific notation is another number", {"data": {"scope": [1.0e2]}}),
    ("true is not 1", {"data": {"scope": [True]}}),
    ("boolean", {"data": {"enabled": [False]}}),
    ("event array misses", {"data": {"instance-list": ["i-9"]}}),
    ("nested object", {"data": {"nested": {"level": ["INFO"]}}}),
    ("different nesting", {"data": {"level": ["WARN"]}}),
    ("array of objects", {"data": {"users": {"role": ["ops"]}}}),
    ("one ANDed key fails", {"source": ["acs.oss"], "data": {"name": ["prod"]}}),
    ("object pattern on a scalar", {"source": {"inner": ["acs.oss"]}}),
    ("missing top-level key", {"region": ["cn-hangzhou"]}),
]


@pytest.mark.parametrize(("case", "pattern"), MATCHING, ids=[c for c, _ in MATCHING])
def test_matches(case: str, pattern: dict[str, Any]) -> None:
    assert EventPattern(pattern).matches(EVENT), case


@pytest.mark.parametrize(("case", "pattern"), NOT_MATCHING, ids=[c for c, _ in NOT_MATCHING])
def test_does_not_match(case: str, pattern: dict[str, Any]) -> None:
    assert not EventPattern(pattern).matches(EVENT), case


def test_alisim_instance_event() -> None:
    event = {
        "source": "acs.ecs",
        "type": "ecs:Instance:StateChange",
        "data": {"resourceId": "i-bp1", "state": "Running"},
    }
    pattern = EventPattern('{"source":["acs.ecs"],"type":[{"prefix":"ecs:"}]}')
    assert pattern.matches(event)
    assert not pattern.matches({**event, "source": "acs.ros"})
    assert EventPattern({"data": {"state": ["Running", "Stopped"]}}).matches(event)


INVALID: list[tuple[str, str]] = [
    ("empty text", ""),
    ("not JSON", "source=acs.ecs"),
    ("not an object", '["acs.ecs"]'),
    ("bare value", '{"source": "acs.oss"}'),
    ("empty alternatives", '{"source": []}'),
    ("nested array", '{"source": [["acs.oss"]]}'),
    ("empty object", '{"data": {}}'),
    ("empty condition", '{"source": [{}]}'),
    ("unknown operator", '{"source": [{"wildcard": "acs.*"}]}'),
    ("empty prefix", '{"source": [{"prefix": ""}]}'),
    ("prefix not a string", '{"source": [{"prefix": 1}]}'),
    ("suffix not a string", '{"source": [{"suffix": null}]}'),
    ("anything-but contains", '{"state": [{"anything-but": {"contains": "x"}}]}'),
    ("anything-but empty list", '{"state": [{"anything-but": []}]}'),
    ("anything-but object in list", '{"state": [{"anything-but": [{"a": 1}]}]}'),
    ("numeric not a list", '{"n": [{"numeric": 5}]}'),
    ("numeric odd list", '{"n": [{"numeric": [">"]}]}'),
    ("numeric bad operator", '{"n": [{"numeric": ["~", 1]}]}'),
    ("numeric string operand", '{"n": [{"numeric": [">", "1"]}]}'),
    ("numeric out of range", '{"n": [{"numeric": [">", 1.0e10]}]}'),
    ("cidr not an address", '{"ip": [{"cidr": "10.0.0.0/99"}]}'),
    ("cidr IPv6", '{"ip": [{"cidr": "2001:db8::/32"}]}'),
    ("exists not boolean", '{"state": [{"exists": "yes"}]}'),
    ("exists combined", '{"state": [{"exists": true, "prefix": "a"}]}'),
]


@pytest.mark.parametrize(("case", "text"), INVALID, ids=[c for c, _ in INVALID])
def test_invalid_patterns_are_rejected_with_a_reason(case: str, text: str) -> None:
    with pytest.raises(PatternError) as raised:
        EventPattern(text)
    assert str(raised.value).startswith("Event pattern is not valid, reason: ")
    assert raised.value.reason
