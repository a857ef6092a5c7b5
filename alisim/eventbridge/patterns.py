"""EventBridge event patterns: validation and matching, as Alibaba documents them.

A pattern is a JSON object shaped like the events it matches. A key whose value is an object
descends into the event (`"data": {...}`); a key whose value is an array lists alternatives
(ORed), each an exact value (string, number, boolean, null, "") or a condition object:
`prefix`, `suffix`, `contains`, `anything-but` (a value, a list, or `{"prefix"|"suffix": …}`),
`numeric` (`[">", 0, "<=", 5]`), `cidr`, `exists`. Keys are ANDed; matching is case-sensitive.
An event field holding an array matches when any element does. Numbers match exactly as
written (`300` is not `300.0`, as the docs say numbers compare as strings). A condition object
with several operators (`{"prefix": "acs:oss:", "suffix": ".txt"}`, as in the CreateRule
sample) needs all of them.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

NUMERIC_LIMIT = 1.0e9
NUMERIC_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
}

Check = Callable[[Any], bool]


class PatternError(ValueError):
    """The pattern is not valid; the message says why, in the service's wording."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"Event pattern is not valid, reason: {reason}")
        self.reason = reason


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | bool) or _is_number(value)


def same_value(expected: Any, actual: Any) -> bool:
    """JSON equality without Python's `True == 1` and `300 == 300.0`."""
    if expected is None or isinstance(expected, bool):
        return actual is expected
    if isinstance(expected, str):
        return isinstance(actual, str) and actual == expected
    if _is_number(expected):
        return _is_number(actual) and json.dumps(actual) == json.dumps(expected)
    return False


def _string(operator: str, value: Any) -> str:
    if not isinstance(value, str):
        raise PatternError(f"the {operator} condition only supports a string value")
    if value == "":
        raise PatternError(f"the {operator} condition doesn't support an empty string value")
    return value


def _prefix(value: Any) -> Check:
    text = _string("prefix", value)
    return lambda actual: isinstance(actual, str) and actual.startswith(text)


def _suffix(value: Any) -> Check:
    text = _string("suffix", value)
    return lambda actual: isinstance(actual, str) and actual.endswith(text)


def _contains(value: Any) -> Check:
    text = _string("contains", value)
    return lambda actual: isinstance(actual, str) and text in actual


def _anything_but(value: Any) -> Check:
    if isinstance(value, dict):
        if len(value) != 1 or next(iter(value)) not in ("prefix", "suffix"):
            raise PatternError("the anything-but condition only supports a prefix or suffix")
        inner = _prefix(value["prefix"]) if "prefix" in value else _suffix(value["suffix"])
        return lambda actual: isinstance(actual, str) and not inner(actual)
    values = value if isinstance(value, list) else [value]
    if not values or not all(_is_scalar(v) for v in values):
        raise PatternError("the anything-but condition only supports null or primitive values")
    return lambda actual: not any(same_value(v, actual) for v in values)


def _numeric(value: Any) -> Check:
    if not isinstance(value, list) or not value or len(value) % 2:
        raise PatternError("the numeric condition needs an array of operator, number pairs")
    bounds: list[tuple[Callable[[float, float], bool], float]] = []
    for operator, number in zip(value[::2], value[1::2], strict=True):
        if operator not in NUMERIC_OPERATORS:
            raise PatternError(
                f"the numeric operator {operator!r} is not one of {', '.join(NUMERIC_OPERATORS)}"
            )
        if not _is_number(number):
            raise PatternError("the numeric value should contain an operator and a number")
        if not -NUMERIC_LIMIT <= number <= NUMERIC_LIMIT:
            raise PatternError("the numeric value must be between -1.0E9 and 1.0E9 inclusive")
        bounds.append((NUMERIC_OPERATORS[operator], number))
    return lambda actual: _is_number(actual) and all(op(actual, n) for op, n in bounds)


def _cidr(value: Any) -> Check:
    if not isinstance(value, str):
        raise PatternError("the cidr condition only supports a string value")
    try:
        network = ipaddress.IPv4Network(value, strict=False)
    except ValueError:
        raise PatternError(f"the cidr condition {value!r} is not an IPv4 CIDR block") from None

    def check(actual: Any) -> bool:
        if not isinstance(actual, str):
            return False
        try:
            return ipaddress.IPv4Address(actual) in network
        except ValueError:
            return False

    return check


_OPERATORS: dict[str, Callable[[Any], Check]] = {
    "prefix": _prefix,
    "suffix": _suffix,
    "contains": _contains,
    "anything-but": _anything_but,
    "numeric": _numeric,
    "cidr": _cidr,
}


@dataclass(frozen=True)
class _Field:
    """The alternatives for one leaf key: value checks, plus `exists` tests."""

    checks: tuple[Check, ...]
    exists: tuple[bool, ...]

    def matches(self, present: bool, value: Any) -> bool:
        if any(wanted == present for wanted in self.exists):
            return True
        if not present:
            return False
        candidates = value if isinstance(value, list) else [value]
        return any(check(v) for check in self.checks for v in candidates)


def _exact(expected: Any) -> Check:
    return lambda actual: same_value(expected, actual)


def _condition(key: str, item: dict[str, Any]) -> Check | bool:
    if not item:
        raise PatternError(f"the pattern condition of {key!r} is empty")
    if "exists" in item:
        if len(item) != 1:
            raise PatternError("the exists condition cannot be combined with other operators")
        if not isinstance(item["exists"], bool):
            raise PatternError("the exists condition only supports a boolean value")
        return item["exists"]
    checks: list[Check] = []
    for operator, value in item.items():
        build = _OPERATORS.get(operator)
        if build is None:
            raise PatternError(f"the pattern condition is unrecognized: {operator}")
        checks.append(build(value))
    if len(checks) == 1:
        return checks[0]
    return lambda actual: all(check(actual) for check in checks)


def _field(key: str, alternatives: list[Any]) -> _Field:
    if not alternatives:
        raise PatternError(f"the pattern has an empty array for key: {key}")
    checks: list[Check] = []
    exists: list[bool] = []
    for item in alternatives:
        if isinstance(item, dict):
            built = _condition(key, item)
            if isinstance(built, bool):
                exists.append(built)
            else:
                checks.append(built)
        elif _is_scalar(item):
            checks.append(_exact(item))
        else:
            raise PatternError(f"nested arrays are not supported, pattern key: {key}")
    return _Field(tuple(checks), tuple(exists))


Node = dict[str, "Node | _Field"]


def _compile(pattern: dict[str, Any], path: str) -> Node:
    node: Node = {}
    for key, value in pattern.items():
        where = f"{path}.{key}" if path else key
        if isinstance(value, dict):
            if not value:
                raise PatternError(f"the pattern object of key {where} has no pattern key")
            node[key] = _compile(value, where)
        elif isinstance(value, list):
            node[key] = _field(where, value)
        else:
            raise PatternError(f"the value of key {where} must be an array or an object")
    return node


def _matches(node: Node, event: Any) -> bool:
    if isinstance(event, list):
        return any(_matches(node, element) for element in event)
    if not isinstance(event, dict):
        return False
    for key, sub in node.items():
        present = key in event
        if isinstance(sub, _Field):
            if not sub.matches(present, event.get(key)):
                return False
        elif not present or not _matches(sub, event[key]):
            return False
    return True


class EventPattern:
    """A validated pattern; `matches(event)` tests a CloudEvent (or any JSON object)."""

    def __init__(self, source: str | dict[str, Any]) -> None:
        if isinstance(source, str):
            if not source.strip():
                raise PatternError("the pattern is empty")
            try:
                parsed = json.loads(source)
            except ValueError:
                raise PatternError("the pattern isn't a valid JSON string") from None
        else:
            parsed = source
        if not isinstance(parsed, dict):
            raise PatternError("the pattern should be a JSON object")
        self.document: dict[str, Any] = parsed
        self._root = _compile(parsed, "")

    def matches(self, event: dict[str, Any]) -> bool:
        return _matches(self._root, event)
