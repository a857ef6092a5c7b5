"""What the runbook tests share: a local stack on the session's Prefect server, an empty
cloud per test, fault plans, and the flows run in this process against it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from alibabacloud_ecs20140526 import models as ecs

from alicloud_runbooks.report import RunReport
from alisim.config import zero_delay_settings
from local_stack.stack import LocalStack

BUCKET = "runbook-outputs"
REGION = "cn-hangzhou"


@pytest.fixture(scope="module")
def stack(prefect_server) -> Iterator[LocalStack]:
    """A stack that shares the session's Prefect server, with its own alisim and relay."""
    local = LocalStack(sim_settings=zero_delay_settings())
    local.start(prefect=prefect_server)
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture
def cloud(stack: LocalStack) -> Iterator[LocalStack]:
    """The stack with an empty cloud, fresh rules, an output bucket and flows pointed at it."""
    httpx.post(f"{stack.sim_url}/_alisim/reset").raise_for_status()
    settings(stack, **zero_delay_settings().model_dump())
    stack.subscribe()
    stack.credentials().oss_bucket(BUCKET).create_bucket()
    with stack.prefect_client_settings():
        yield stack


def settings(stack: LocalStack, **changes: Any) -> None:
    httpx.patch(f"{stack.sim_url}/_alisim/settings", json=changes).raise_for_status()


def faults(stack: LocalStack, **plan: Any) -> None:
    httpx.post(f"{stack.sim_url}/_alisim/faults", json=plan).raise_for_status()


def describe_calls(stack: LocalStack) -> dict[str, int]:
    return {k: v for k, v in stack.api_calls().get("Ecs", {}).items() if k.startswith("Describe")}


def api_calls(stack: LocalStack, action: str) -> int:
    return stack.api_calls().get("Ecs", {}).get(action, 0)


def with_command(flow: Any, params: dict[str, Any]) -> dict[str, Any]:
    """The flow's parameters, with the command's own (script, timeout, output_bucket …)
    gathered into its `command` parameter, so the tests can name them flat."""
    from flows.steps import CommandSpec

    own = set(flow.parameters.properties)
    fields = {
        k: params.pop(k) for k in list(params) if k in CommandSpec.model_fields and k not in own
    }
    if fields:
        params["command"] = CommandSpec(**fields)
    return params


def run(flow: Any, stack: LocalStack, **params: Any) -> RunReport:
    return asyncio.run(flow(credentials=stack.credentials(), **with_command(flow, params)))


def run_state(flow: Any, stack: LocalStack, **params: Any):  # type: ignore[no-untyped-def]
    params = with_command(flow, params)
    return asyncio.run(flow(credentials=stack.credentials(), return_state=True, **params))


def statuses(report: RunReport) -> list[tuple[str, int | None]]:
    return [(i.status, i.exit_code) for i in report.instances]


def launch(client: Any, count: int = 1, **request: Any) -> list[str]:
    """RunInstances through the official SDK, outside any runbook."""
    return client.run_instances(
        ecs.RunInstancesRequest(
            region_id=REGION,
            image_id="aliyun_3_x64",
            instance_type="ecs.g7.large",
            amount=count,
            **request,
        )
    ).body.instance_id_sets.instance_id_set


def launch_ready(stack: LocalStack, count: int, **request: Any) -> list[str]:
    """Instances launched outside the runbook, with their agents online."""
    return stack.launch_ready(count, **request)
