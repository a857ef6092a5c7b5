"""The RAM policies of docs/ram/ are valid policy documents, and they grant what the code
calls: a runbook or `subscribe` that starts calling a new action fails here until the policy
(and `runbooks doctor`) know it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from local_stack.doctor import PERMISSIONS

ROOT = Path(__file__).resolve().parents[1]
POLICIES = sorted((ROOT / "docs" / "ram").glob("*.json"))
ACTION = re.compile(r"^[a-z]+:([A-Z][A-Za-z]+|\*)$")


def _actions(path: Path) -> set[str]:
    found: set[str] = set()
    for statement in json.loads(path.read_text())["Statement"]:
        actions = statement["Action"]
        found.update([actions] if isinstance(actions, str) else actions)
    return found


def _called(pattern: str, *folders: str) -> set[str]:
    names: set[str] = set()
    for folder in folders:
        for path in (ROOT / folder).rglob("*.py"):
            names.update(re.findall(pattern, path.read_text()))
    return names


@pytest.mark.parametrize("path", POLICIES, ids=[p.name for p in POLICIES])
def test_each_file_is_a_ram_policy_document(path: Path) -> None:
    document = json.loads(path.read_text())
    assert document["Version"] == "1"
    assert document["Statement"], "at least one statement"
    for statement in document["Statement"]:
        assert statement["Effect"] in ("Allow", "Deny")
        actions = statement["Action"]
        for action in [actions] if isinstance(actions, str) else actions:
            assert ACTION.match(action), f"{path.name}: {action!r} is not service:Action"
        if "Principal" not in statement:  # a trust policy names a principal instead
            resources = statement["Resource"]
            for resource in [resources] if isinstance(resources, str) else resources:
                assert resource == "*" or resource.startswith("acs:"), resource


def test_the_runbooks_policy_grants_every_ecs_action_the_code_calls() -> None:
    called = _called(r"\becs\.(\w+)Request\(", "tasks", "flows", "alicloud_runbooks")
    assert called, "the scan found the runbooks' ECS calls"
    granted = _actions(ROOT / "docs" / "ram" / "runbooks.json")
    # Starting and stopping instances is granted apart, to restart-stopped's credentials only.
    restarts = _actions(ROOT / "docs" / "ram" / "restart-stopped.json")
    assert restarts == {"ecs:StartInstances", "ecs:StopInstances"}
    assert {f"ecs:{name}" for name in called} <= granted | restarts
    assert "oss:GetObject" in granted
    assert granted == set(PERMISSIONS), "runbooks doctor checks exactly what the policy grants"


def test_the_subscribe_policy_grants_every_eventbridge_action_subscribe_calls() -> None:
    called = set(
        re.findall(r"\beb\.(\w+)Request\(", (ROOT / "alicloud_runbooks/subscribe.py").read_text())
    )
    assert called >= {"GetRule", "CreateRule", "UpdateRule", "EnableRule", "PutTargets"}
    assert {f"eventbridge:{name}" for name in called} <= _actions(ROOT / "docs/ram/subscribe.json")


def test_the_instance_role_may_write_outputs() -> None:
    assert _actions(ROOT / "docs" / "ram" / "instance-oss-output.json") == {"oss:PutObject"}


def test_the_stacks_policy_grants_every_ros_action_the_code_calls() -> None:
    called = _called(r"\bros\.(\w+)Request\(", "tasks", "flows", "alicloud_runbooks")
    assert called, "the scan found the stack runbooks' ROS calls"
    assert {f"ros:{name}" for name in called} <= _actions(ROOT / "docs" / "ram" / "stacks.json")
