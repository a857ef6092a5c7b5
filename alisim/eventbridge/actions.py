"""EventBridge OpenAPI (2020-04-01) actions, as `alibabacloud-eventbridge20200401` calls them.

Answers are `{"Code": "Success", "Message", "Success": true, "Data"}` (dispatch adds
`RequestId`). Error codes and their HTTP 409 follow the service's open-sourced lineage
(apache/rocketmq-eventbridge), with the hosted service's `EventRuleNotExisted` that the SDK
samples show; malformed parameters are `InvalidArgument` (400).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import ValidationError

from alisim.errors import ApiError, missing_parameter
from alisim.eventbridge.models import EventBus, Rule, Target
from alisim.eventbridge.patterns import EventPattern, PatternError
from alisim.eventbridge.service import DEFAULT_BUS, EventBridgeService
from alisim.openapi.params import Params
from alisim.openapi.registry import EVENTBRIDGE, ActionTable, Region

if TYPE_CHECKING:
    from alisim.cloud import Cloud

T = TypeVar("T")

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,126}$")
STATUSES = ("ENABLE", "DISABLE")
MAX_PATTERN_CHARS = 16 * 1024
_NO_DATA = object()


def _ok(data: Any = _NO_DATA) -> dict[str, Any]:
    body: dict[str, Any] = {"Code": "Success", "Message": "success", "Success": True}
    if data is not _NO_DATA:
        body["Data"] = data
    return body


def invalid_argument(name: str, detail: str) -> ApiError:
    return ApiError("InvalidArgument", f"The parameter {name} is invalid: {detail}", 400)


def _service(cloud: Cloud) -> EventBridgeService:
    return cloud.eventbridge


def _bus_name(params: Params) -> str:
    name = params.require("EventBusName")
    if not NAME.match(name):
        raise ApiError("EventBusNameInvalid", f"The event bus name [{name}] is invalid!", 409)
    return name


def _rule_name(params: Params) -> str:
    name = params.require("RuleName")
    if not NAME.match(name):
        raise ApiError("EventRuleNameInvalid", f"The event rule name [{name}] is invalid!", 409)
    return name


def _status(params: Params, default: str | None) -> str | None:
    status = params.get("Status", default)
    if status is not None and status not in STATUSES:
        raise invalid_argument("Status", f"{status!r} is not ENABLE or DISABLE.")
    return status


def _pattern(params: Params) -> tuple[EventPattern, str]:
    text = params.get("FilterPattern")
    if text is None:
        raise ApiError("EventRuleFilterPatternEmpty", "The filter pattern is empty!", 409)
    if len(text) > MAX_PATTERN_CHARS:
        raise ApiError(
            "EventRuleFilterPatternExceedLimit",
            f"The filter pattern exceeds the limit [{MAX_PATTERN_CHARS}] characters.",
            409,
        )
    try:
        return EventPattern(text), text
    except PatternError as exc:
        raise ApiError(
            "EventRuleFilterPatternSchemaError",
            f"The filter pattern [{text}] is invalid! {exc}",
            409,
        ) from None


def _json_list(params: Params, name: str) -> list[Any]:
    raw = params.get(name)
    if raw is None:
        return []
    try:
        parsed = json.loads(raw)
    except ValueError:
        raise invalid_argument(name, "it is not valid JSON.") from None
    if not isinstance(parsed, list):
        raise invalid_argument(name, "it must be a JSON array.")
    return parsed


def _target(raw: Any) -> Target:
    """A checked target, or `ValueError` saying what is wrong with it."""
    if not isinstance(raw, dict):
        raise ValueError("a target must be a JSON object")
    try:
        target = Target.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ValueError(f"target {raw.get('Id', '?')}: {problems}") from None
    target.check()
    return target


def _page(items: Sequence[T], params: Params) -> tuple[Sequence[T], str, int]:
    limit = params.int("Limit", 10, minimum=1, maximum=100) or 10
    token = params.get("NextToken")
    start = 0
    if token is not None:
        if not token.isdigit():
            raise ApiError("NextTokenInvalid", f"The next token [{token}] is invalid.", 409)
        start = int(token)
    page = items[start : start + limit]
    end = start + len(page)
    return page, str(end) if end < len(items) else "", len(items)


def _target_view(target: Target) -> dict[str, Any]:
    view = target.wire()
    view["PushRetryStrategy"] = target.retry_strategy
    view.setdefault("DetailMap", {})
    return view


def _rule_view(cloud: Cloud, rule: Rule) -> dict[str, Any]:
    return {
        "RuleName": rule.name,
        "RuleARN": rule.arn(cloud.settings.region, cloud.settings.account_id),
        "EventBusName": rule.bus,
        "Description": rule.description,
        "FilterPattern": rule.pattern_text,
        "Status": rule.status,
        "CreatedTimestamp": rule.created_ms,
        "DetailMap": {},
        "Targets": [_target_view(t) for t in rule.targets.values()],
    }


# ---------------------------------------------------------------- event buses
def _bus_view(cloud: Cloud, name: str) -> dict[str, Any]:
    bus = _service(cloud).bus(name)
    return {
        "EventBusName": bus.name,
        "EventBusARN": bus.arn(cloud.settings.region, cloud.settings.account_id),
        "Description": bus.description,
        "CreateTimestamp": bus.created_ms,
    }


async def create_event_bus(cloud: Cloud, params: Params) -> dict[str, Any]:
    name = _bus_name(params)
    service = _service(cloud)
    if name in service.buses:
        raise ApiError("EventBusAlreadyExist", f"The event bus [{name}] already existed!", 409)
    service.buses[name] = EventBus(name, params.get("Description", "") or "")
    return _ok({"EventBusARN": _bus_view(cloud, name)["EventBusARN"]})


async def get_event_bus(cloud: Cloud, params: Params) -> dict[str, Any]:
    return _ok(_bus_view(cloud, params.require("EventBusName")))


async def update_event_bus(cloud: Cloud, params: Params) -> dict[str, Any]:
    bus = _service(cloud).bus(params.require("EventBusName"))
    bus.description = params.get("Description", "") or ""
    return _ok(True)


async def list_event_buses(cloud: Cloud, params: Params) -> dict[str, Any]:
    prefix = params.get("NamePrefix", "") or ""
    service = _service(cloud)
    names = [n for n in service.buses if n.startswith(prefix)]
    names.sort(key=lambda n: (n != DEFAULT_BUS, service.buses[n].created_ms, n))
    page, next_token, total = _page(names, params)
    return _ok(
        {
            "EventBuses": [_bus_view(cloud, n) for n in page],
            "NextToken": next_token,
            "Total": total,
        }
    )


async def delete_event_bus(cloud: Cloud, params: Params) -> dict[str, Any]:
    name = params.require("EventBusName")
    service = _service(cloud)
    if name == DEFAULT_BUS:
        raise invalid_argument("EventBusName", "the default event bus cannot be deleted.")
    if name not in service.buses:
        return _ok(False)
    if service.rules_of(name):
        raise ApiError(
            "EventBusRuleNotEmptyForDelete",
            f"The rules of eventbus [{name}] exist, please delete them before delete event bus.",
            409,
        )
    del service.buses[name]
    return _ok(True)


# ---------------------------------------------------------------- rules
async def create_rule(cloud: Cloud, params: Params) -> dict[str, Any]:
    service = _service(cloud)
    bus = _bus_name(params)
    name = _rule_name(params)
    service.bus(bus)
    if (bus, name) in service.rules:
        raise ApiError(
            "EventRuleAlreadyExist",
            f"The event rule [{name}] of event bus [{bus}] already existed!",
            409,
        )
    pattern, text = _pattern(params)
    status = _status(params, "ENABLE") or "ENABLE"
    targets: dict[str, Target] = {}
    for raw in _json_list(params, "EventTargets"):
        try:
            target = _target(raw)
        except ValueError as exc:
            raise invalid_argument("EventTargets", str(exc)) from None
        targets[target.id] = target
    rule = Rule(
        bus=bus,
        name=name,
        pattern=pattern,
        pattern_text=text,
        status=status,
        description=params.get("Description", "") or "",
        targets=targets,
    )
    service.rules[(bus, name)] = rule
    return _ok({"RuleARN": rule.arn(cloud.settings.region, cloud.settings.account_id)})


async def update_rule(cloud: Cloud, params: Params) -> dict[str, Any]:
    rule = _service(cloud).rule(params.require("EventBusName"), params.require("RuleName"))
    if params.get("FilterPattern") is not None:
        rule.pattern, rule.pattern_text = _pattern(params)
    status = _status(params, None)
    if status is not None:
        rule.status = status
    if "Description" in params.values:
        rule.description = params.values["Description"]
    return _ok(True)


async def get_rule(cloud: Cloud, params: Params) -> dict[str, Any]:
    rule = _service(cloud).rule(params.require("EventBusName"), params.require("RuleName"))
    return _ok(_rule_view(cloud, rule))


async def list_rules(cloud: Cloud, params: Params) -> dict[str, Any]:
    service = _service(cloud)
    bus = params.require("EventBusName")
    service.bus(bus)
    prefix = params.get("RuleNamePrefix", "") or ""
    rules = [r for r in service.rules_of(bus) if r.name.startswith(prefix)]
    page, next_token, total = _page(rules, params)
    return _ok(
        {
            "Rules": [_rule_view(cloud, r) for r in page],
            "NextToken": next_token,
            "Total": total,
        }
    )


async def delete_rule(cloud: Cloud, params: Params) -> dict[str, Any]:
    service = _service(cloud)
    rule = service.rule(params.require("EventBusName"), params.require("RuleName"))
    del service.rules[(rule.bus, rule.name)]
    return _ok()


async def _set_status(cloud: Cloud, params: Params, status: str) -> dict[str, Any]:
    rule = _service(cloud).rule(params.require("EventBusName"), params.require("RuleName"))
    rule.status = status
    return _ok()


async def enable_rule(cloud: Cloud, params: Params) -> dict[str, Any]:
    return await _set_status(cloud, params, "ENABLE")


async def disable_rule(cloud: Cloud, params: Params) -> dict[str, Any]:
    return await _set_status(cloud, params, "DISABLE")


# ---------------------------------------------------------------- targets
def _error_entries(entries: list[dict[str, str]]) -> dict[str, Any]:
    return {"ErrorEntries": entries, "ErrorEntriesCount": len(entries)}


async def put_targets(cloud: Cloud, params: Params) -> dict[str, Any]:
    rule = _service(cloud).rule(params.require("EventBusName"), params.require("RuleName"))
    raws = _json_list(params, "Targets")
    if not raws:
        raise missing_parameter("Targets")
    errors: list[dict[str, str]] = []
    for index, raw in enumerate(raws):
        try:
            target = _target(raw)
        except ValueError as exc:
            entry_id = raw.get("Id") if isinstance(raw, dict) else None
            errors.append(
                {
                    "EntryId": str(entry_id or index),
                    "ErrorCode": "InvalidArgument",
                    "ErrorMessage": str(exc),
                }
            )
            continue
        rule.targets[target.id] = target
    return _ok(_error_entries(errors))


async def delete_targets(cloud: Cloud, params: Params) -> dict[str, Any]:
    rule = _service(cloud).rule(params.require("EventBusName"), params.require("RuleName"))
    ids = params.id_list("TargetIds")
    if not ids:
        raise missing_parameter("TargetIds")
    errors = []
    for target_id in ids:
        if rule.targets.pop(target_id, None) is None:
            errors.append(
                {
                    "EntryId": target_id,
                    "ErrorCode": "EventTargetNotExist",
                    "ErrorMessage": f"The event target [{target_id}] of event rule "
                    f"[{rule.name}] on eventbus [{rule.bus}] is not existed!",
                }
            )
    return _ok(_error_entries(errors))


def _rule_of_list_request(cloud: Cloud, params: Params) -> Rule:
    arn = params.get("Arn")
    if arn is not None and params.get("RuleName") is None:
        m = re.match(r"^acs:eventbridge:[^:]*:[^:]*:eventbus/([^/]+)/rule/([^/]+)$", arn)
        if m is None:
            raise invalid_argument("Arn", f"{arn!r} is not an event rule ARN.")
        return _service(cloud).rule(m.group(1), m.group(2))
    bus = params.get("EventBusName")
    if bus is None:
        raise missing_parameter("EventBusName")
    return _service(cloud).rule(bus, params.require("RuleName"))


async def list_targets(cloud: Cloud, params: Params) -> dict[str, Any]:
    rule = _rule_of_list_request(cloud, params)
    page, next_token, total = _page(list(rule.targets.values()), params)
    targets = [{**_target_view(t), "EventBusName": rule.bus, "RuleName": rule.name} for t in page]
    return _ok({"Targets": targets, "NextToken": next_token, "Total": total})


ACTIONS = ActionTable(
    EVENTBRIDGE,
    {
        "CreateEventBus": create_event_bus,
        "GetEventBus": get_event_bus,
        "UpdateEventBus": update_event_bus,
        "ListEventBuses": list_event_buses,
        "DeleteEventBus": delete_event_bus,
        "CreateRule": create_rule,
        "UpdateRule": update_rule,
        "GetRule": get_rule,
        "ListRules": list_rules,
        "DeleteRule": delete_rule,
        "EnableRule": enable_rule,
        "DisableRule": disable_rule,
        "PutTargets": put_targets,
        "DeleteTargets": delete_targets,
        "ListTargets": list_targets,
    },
    region=Region.NONE,
)
