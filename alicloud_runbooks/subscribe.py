"""`runbooks subscribe`: the EventBridge rules that push runbook events to the relay, as code.

Idempotent: a re-run updates the rules and replaces the relay target in place. It uses only
the official EventBridge SDK, so the same command works against alisim and the real cloud.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from alibabacloud_eventbridge20200401 import models as eb
from alibabacloud_eventbridge20200401.client import Client as EventBridgeClient
from alibabacloud_tea_openapi.exceptions import ClientException

from alicloud_runbooks.events import names
from alicloud_runbooks.instance_states import FORWARDED_INSTANCE_STATES

TARGET_ID = "runbooks-relay"
INSTANCE_STATE_RULE = "runbooks-ecs-instance-state"


@dataclass(frozen=True)
class RulePlan:
    name: str
    description: str
    pattern: dict[str, Any]


def rule_plans(
    output_delivered_type: str = names.OUTPUT_DELIVERED_TYPE,
    instance_states: Sequence[str] | None = FORWARDED_INSTANCE_STATES,
) -> list[RulePlan]:
    """The rules; `instance_states` None forwards every instance state."""
    state_pattern: dict[str, Any] = {
        "source": ["acs.ecs"],
        "type": [names.INSTANCE_STATE_CHANGE_TYPE],
    }
    if instance_states is not None:
        state_pattern["data"] = {"state": list(instance_states)}
    return [
        RulePlan(
            "runbooks-cloud-assistant",
            "Cloud Assistant heartbeats, task completions and output deliveries to the relay",
            {
                "source": ["acs.ecs"],
                "type": [
                    names.FIRST_HEARTBEAT_TYPE,
                    names.TASK_COMPLETED_TYPE,
                    output_delivered_type,
                ],
            },
        ),
        RulePlan(
            INSTANCE_STATE_RULE,
            "ECS instance state changes to the relay"
            + (f" ({', '.join(instance_states)})" if instance_states is not None else ""),
            state_pattern,
        ),
        RulePlan(
            "runbooks-ros-stack-status",
            "ROS stack status changes to the relay",
            {"source": ["acs.ros"], "type": [names.STACK_STATUS_CHANGE_TYPE]},
        ),
    ]


def as_planned(plan: RulePlan, pattern: Any) -> bool:
    """Whether a rule's pattern is the plan's, or (the instance-state rule) forwards at least
    the states the runbooks act on, as `--instance-states` may have asked."""
    if pattern == plan.pattern:
        return True
    if plan.name != INSTANCE_STATE_RULE or not isinstance(pattern, dict):
        return False
    every = {k: v for k, v in plan.pattern.items() if k != "data"}
    if pattern == every:
        return True
    states = pattern.get("data", {}).get("state") if isinstance(pattern.get("data"), dict) else None
    return (
        isinstance(states, list)
        and set(FORWARDED_INSTANCE_STATES) <= set(states)
        and pattern == {**every, "data": {"state": states}}
    )


def url_with_token(target_url: str, token: str) -> str:
    parts = urlsplit(target_url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "token"] + [("token", token)]
    return urlunsplit(parts._replace(query=urlencode(query)))


def masked(url: str) -> str:
    parts = urlsplit(url)
    query = [(k, "****" if k == "token" else v) for k, v in parse_qsl(parts.query)]
    return urlunsplit(parts._replace(query=urlencode(query, safe="*")))


def relay_target_url(target_url: str) -> str:
    """The URL EventBridge should push to, trailing slashes removed; ValueError saying what is
    wrong otherwise. A relay is reached at a path ending in `/eventbridge` (a proxy may put a
    prefix before it); a Prefect Cloud webhook at `/hooks/<slug>`."""
    shown = masked(target_url) if "token=" in target_url else target_url
    example = "e.g. https://relay.example.com/eventbridge"
    if any(c.isspace() for c in target_url):
        raise ValueError(f"--target-url {shown!r} contains whitespace ({example})")
    parts = urlsplit(target_url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"--target-url must start with http:// or https://, not {shown!r}")
    try:
        parts.port  # noqa: B018 - it raises on a port that is not a number in range
    except ValueError:
        raise ValueError(f"--target-url {shown!r} has an invalid port") from None
    if not parts.hostname:
        raise ValueError(f"--target-url {shown!r} has no host ({example})")
    if parts.username or parts.password:
        raise ValueError(
            f"--target-url {shown!r} carries a user or password: leave them out, the relay "
            "authenticates EventBridge by --token"
        )
    if parts.fragment or target_url.endswith("#"):
        raise ValueError(f"--target-url {shown!r} has a #fragment, which is never sent")
    path = parts.path.rstrip("/")
    if path.endswith("/cloudmonitor"):
        raise ValueError(
            f"--target-url {shown!r}: EventBridge pushes CloudEvents, which the relay takes at "
            "…/eventbridge; /cloudmonitor is for CloudMonitor's own pushes"
        )
    is_webhook = bool(re.fullmatch(r"/hooks/[^/]+", path))
    if not path.endswith("/eventbridge") and not is_webhook:
        raise ValueError(
            f"--target-url {shown!r}: the path must end with /eventbridge (the relay's "
            f"endpoint, {example}) or be a Prefect Cloud webhook /hooks/<slug>"
        )
    return urlunsplit(parts._replace(path=path))


def target_spec(target_url: str, token: str, dead_letter_arn: str) -> dict[str, Any]:
    url = url_with_token(relay_target_url(target_url), token)
    return {
        "Id": TARGET_ID,
        "Type": urlsplit(url).scheme,
        "Endpoint": url,
        "PushRetryStrategy": "EXPONENTIAL_DECAY_RETRY",
        "ErrorsTolerance": "ALL",
        "DeadLetterQueue": {"Arn": dead_letter_arn},
        "ParamList": [
            {"ResourceKey": "url", "Form": "CONSTANT", "Value": url},
            {"ResourceKey": "Body", "Form": "ORIGINAL"},
            {"ResourceKey": "Network", "Form": "CONSTANT", "Value": "PublicNetwork"},
        ],
    }


def allow_list_line(account_id: str | None) -> str:
    """What to configure the relay with so that it accepts only this account's events."""
    if account_id:
        return f"configure the relay with: RUNBOOKS_RELAY_ALLOWED_ACCOUNT_IDS={account_id}"
    return (
        "set the relay's account allow-list: RUNBOOKS_RELAY_ALLOWED_ACCOUNT_IDS=<your account "
        "id> (`aliyun sts GetCallerIdentity` shows it; or pass --account-id)"
    )


def _is_missing_rule(exc: ClientException) -> bool:
    return "NotExist" in (exc.code or "") or exc.status_code == 404


def subscribe(
    client: EventBridgeClient | None,
    *,
    target_url: str,
    token: str,
    dead_letter_arn: str,
    bus: str = "default",
    dry_run: bool = False,
    output_delivered_type: str = names.OUTPUT_DELIVERED_TYPE,
    instance_states: Sequence[str] | None = FORWARDED_INSTANCE_STATES,
) -> list[str]:
    """Create or update each rule with the relay as its target; returns what was done."""
    target = target_spec(target_url, token, dead_letter_arn)
    done: list[str] = []
    for plan in rule_plans(output_delivered_type, instance_states):
        pattern = json.dumps(plan.pattern, separators=(",", ":"))
        if dry_run or client is None:
            done.append(
                f"would create or update rule {plan.name} on bus {bus}: {pattern} -> "
                f"{masked(target['Endpoint'])} (EXPONENTIAL_DECAY_RETRY, dead letters to "
                f"{dead_letter_arn})"
            )
            continue
        try:
            client.get_rule(eb.GetRuleRequest(event_bus_name=bus, rule_name=plan.name))
        except ClientException as exc:
            if not _is_missing_rule(exc):
                raise
            client.create_rule(
                eb.CreateRuleRequest(
                    event_bus_name=bus,
                    rule_name=plan.name,
                    description=plan.description,
                    filter_pattern=pattern,
                    status="ENABLE",
                    event_targets=[eb.CreateRuleRequestEventTargets().from_map(target)],
                )
            )
            done.append(f"created rule {plan.name} -> {masked(target['Endpoint'])}")
            continue
        client.update_rule(
            eb.UpdateRuleRequest(
                event_bus_name=bus,
                rule_name=plan.name,
                description=plan.description,
                filter_pattern=pattern,
            )
        )
        client.enable_rule(eb.EnableRuleRequest(event_bus_name=bus, rule_name=plan.name))
        client.put_targets(
            eb.PutTargetsRequest(
                event_bus_name=bus,
                rule_name=plan.name,
                targets=[eb.PutTargetsRequestTargets().from_map(target)],
            )
        )
        done.append(f"updated rule {plan.name} -> {masked(target['Endpoint'])}")
    return done
