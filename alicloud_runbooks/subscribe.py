"""`runbooks subscribe`: the EventBridge rules that push runbook events to the relay, as code.

Idempotent: a re-run updates the rules and replaces the relay target in place. It uses only
the official EventBridge SDK, so the same command works against alisim and the real cloud.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from alibabacloud_eventbridge20200401 import models as eb
from alibabacloud_eventbridge20200401.client import Client as EventBridgeClient
from alibabacloud_tea_openapi.exceptions import ClientException

from alicloud_runbooks.events import names

TARGET_ID = "runbooks-relay"


@dataclass(frozen=True)
class RulePlan:
    name: str
    description: str
    pattern: dict[str, Any]


def rule_plans(output_delivered_type: str = names.OUTPUT_DELIVERED_TYPE) -> list[RulePlan]:
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
            "runbooks-ecs-instance-state",
            "ECS instance state changes to the relay",
            {"source": ["acs.ecs"], "type": [names.INSTANCE_STATE_CHANGE_TYPE]},
        ),
        RulePlan(
            "runbooks-ros-stack-status",
            "ROS stack status changes to the relay",
            {"source": ["acs.ros"], "type": [names.STACK_STATUS_CHANGE_TYPE]},
        ),
    ]


def url_with_token(target_url: str, token: str) -> str:
    parts = urlsplit(target_url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "token"] + [("token", token)]
    return urlunsplit(parts._replace(query=urlencode(query)))


def masked(url: str) -> str:
    parts = urlsplit(url)
    query = [(k, "****" if k == "token" else v) for k, v in parse_qsl(parts.query)]
    return urlunsplit(parts._replace(query=urlencode(query, safe="*")))


def target_spec(target_url: str, token: str, dead_letter_arn: str) -> dict[str, Any]:
    scheme = urlsplit(target_url).scheme
    if scheme not in ("http", "https"):
        raise ValueError(f"--target-url must be http(s)://…, not {target_url!r}")
    return {
        "Id": TARGET_ID,
        "Type": scheme,
        "Endpoint": url_with_token(target_url, token),
        "PushRetryStrategy": "EXPONENTIAL_DECAY_RETRY",
        "ErrorsTolerance": "ALL",
        "DeadLetterQueue": {"Arn": dead_letter_arn},
        "ParamList": [
            {"ResourceKey": "url", "Form": "CONSTANT", "Value": url_with_token(target_url, token)},
            {"ResourceKey": "Body", "Form": "ORIGINAL"},
            {"ResourceKey": "Network", "Form": "CONSTANT", "Value": "PublicNetwork"},
        ],
    }


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
) -> list[str]:
    """Create or update each rule with the relay as its target; returns what was done."""
    target = target_spec(target_url, token, dead_letter_arn)
    done: list[str] = []
    for plan in rule_plans(output_delivered_type):
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
