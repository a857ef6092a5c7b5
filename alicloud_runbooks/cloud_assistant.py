"""Cloud Assistant knowledge the runbooks need: API limits, final statuses, the agent version
rules for events, the three waits (FirstHeartbeat, TaskCompleted, OutputDelivered) and their
batched reconciliation calls (DescribeCloudAssistantStatus, DescribeInvocationResults)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable, Collection, Iterator, Sequence
from datetime import datetime
from typing import Any, TypeVar

from alibabacloud_ecs20140526 import models as ecs
from alibabacloud_ecs20140526.client import Client as EcsClient
from prefect.events.schemas.events import Event
from pydantic import BaseModel

from alicloud_runbooks.errors import call
from alicloud_runbooks.events import names
from alicloud_runbooks.waiter import EventWait

RUN_COMMAND_MAX_INSTANCES = 100
STATUS_MAX_INSTANCES = 50
RESULTS_PAGE_SIZE = 50
INLINE_OUTPUT_LIMIT = 24 * 1024

FINAL_INVOCATION_STATUSES = frozenset(
    {"Success", "Failed", "Error", "Timeout", "Cancelled", "Terminated", "Aborted", "Invalid"}
)
FINAL_DELIVERY_STATUSES = frozenset({"Finished", "Failed"})

# "The Cloud Assistant Agent version must be later than …" (reference/cloud-assistant-events.txt)
FIRST_HEARTBEAT_MIN = {"Linux": "1.0.2.569", "Windows": "1.0.0.149"}
OUTPUT_DELIVERY_MIN = {"Linux": "2.2.4.1007", "Windows": "2.1.4.1007"}

T = TypeVar("T")


def chunks(items: Sequence[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".") if p.isdigit())


def first_heartbeat_rule(os_type: str, version: str | None) -> str | None:
    """Why this agent never sends FirstHeartbeat, or None if it does."""
    floor = FIRST_HEARTBEAT_MIN.get(os_type.capitalize(), FIRST_HEARTBEAT_MIN["Linux"])
    if version and _version(version) > _version(floor):
        return None
    return (
        f"Cloud Assistant agent {version or 'unknown'} never sends FirstHeartbeat: "
        f"{os_type.capitalize()} agents must be later than {floor}. Update the agent "
        "(or use a newer image) so runbooks can react to it"
    )


class InvocationRecord(BaseModel):
    """What one instance did in one invocation, from its events or DescribeInvocationResults."""

    instance_id: str
    invoke_id: str
    status: str
    exit_code: int | None = None
    start_time: str | None = None
    finish_time: str | None = None
    error_code: str | None = None
    error_info: str | None = None
    output: str | None = None
    dropped: int = 0
    oss_status: str | None = None
    oss_uri: str | None = None
    oss_error: str | None = None

    @property
    def final(self) -> bool:
        return self.status in FINAL_INVOCATION_STATUSES

    @classmethod
    def from_result(
        cls, r: ecs.DescribeInvocationResultsResponseBodyInvocationInvocationResultsInvocationResult
    ) -> InvocationRecord:
        output = base64.b64decode(r.output).decode("utf-8", "replace") if r.output else None
        oss_error = (
            f"{r.oss_output_error_code}: {r.oss_output_error_info}"
            if r.oss_output_error_code
            else None
        )
        return cls(
            instance_id=r.instance_id,
            invoke_id=r.invoke_id,
            status=r.invocation_status,
            exit_code=r.exit_code,
            start_time=r.start_time,
            finish_time=r.finished_time,
            error_code=r.error_code or None,
            error_info=r.error_info or None,
            output=output,
            dropped=r.dropped or 0,
            oss_status=r.oss_output_status or None,
            oss_uri=r.oss_output_uri or None,
            oss_error=oss_error,
        )


def _label(event: Event, name: str) -> str | None:
    return event.resource.get(name)


def heartbeat_wait(instance_ids: Collection[str], since: datetime, timeout: float) -> EventWait:
    return EventWait(
        name="FirstHeartbeat",
        event=names.FIRST_HEARTBEAT,
        keys=instance_ids,
        resource_of=names.instance_resource,
        since=since,
        timeout=timeout,
    )


def _invocation_wait(
    name: str,
    event: str,
    instance_ids: Collection[str],
    invoke_ids: Collection[str],
    since: datetime,
    timeout: float,
    accept: Callable[[Event], bool] = lambda e: True,
) -> EventWait:
    """One event per instance, tied to one of the invocations through its related resources."""
    return EventWait(
        name=name,
        event=event,
        keys=instance_ids,
        resource_of=names.instance_resource,
        related=[names.invocation_resource(i) for i in invoke_ids],
        accept=accept,
        since=since,
        timeout=timeout,
    )


def task_completed_wait(
    instance_ids: Collection[str], invoke_ids: Collection[str], since: datetime, timeout: float
) -> EventWait:
    return _invocation_wait(
        "TaskCompleted", names.TASK_COMPLETED, instance_ids, invoke_ids, since, timeout
    )


def output_delivered_wait(
    instance_ids: Collection[str], invoke_ids: Collection[str], since: datetime, timeout: float
) -> EventWait:
    return _invocation_wait(
        "OutputDelivered",
        names.OUTPUT_DELIVERED,
        instance_ids,
        invoke_ids,
        since,
        timeout,
        accept=lambda e: _label(e, names.DELIVERY_STATUS_LABEL) in FINAL_DELIVERY_STATUSES,
    )


class AgentStatus(BaseModel):
    instance_id: str
    online: bool
    version: str | None = None
    os_type: str = "Linux"


def describe_agents(client: EcsClient, region: str, ids: Sequence[str]) -> dict[str, AgentStatus]:
    """DescribeCloudAssistantStatus, 50 instances per call (the API's limit)."""
    found: dict[str, AgentStatus] = {}
    for batch in chunks(ids, STATUS_MAX_INSTANCES):
        body = call(
            "DescribeCloudAssistantStatus",
            lambda b=batch: (
                client.describe_cloud_assistant_status(
                    ecs.DescribeCloudAssistantStatusRequest(
                        region_id=region, instance_id=b, max_results=STATUS_MAX_INSTANCES
                    )
                ).body
            ),
        )
        statuses = body.instance_cloud_assistant_status_set.instance_cloud_assistant_status
        for s in statuses or []:
            found[s.instance_id] = AgentStatus(
                instance_id=s.instance_id,
                online=s.cloud_assistant_status == "true",
                version=s.cloud_assistant_version,
                os_type=s.ostype or "Linux",
            )
    return found


def describe_results(
    client: EcsClient, region: str, invoke_ids: Collection[str], instance_ids: Collection[str]
) -> dict[str, InvocationRecord]:
    """DescribeInvocationResults: one paged call per invocation, kept to `instance_ids`."""
    wanted = set(instance_ids)
    found: dict[str, InvocationRecord] = {}
    for invoke_id in invoke_ids:
        token: str | None = None
        while True:
            body = call(
                "DescribeInvocationResults",
                lambda i=invoke_id, t=token: (
                    client.describe_invocation_results(
                        ecs.DescribeInvocationResultsRequest(
                            region_id=region,
                            invoke_id=i,
                            max_results=RESULTS_PAGE_SIZE,
                            next_token=t,
                        )
                    ).body
                ),
            )
            results = body.invocation.invocation_results.invocation_result or []
            for r in results:
                if r.instance_id in wanted:
                    found[r.instance_id] = InvocationRecord.from_result(r)
            token = body.invocation.next_token
            if not token or not results:
                break
    return found


async def reconcile_agents(
    client: EcsClient, region: str, ids: list[str]
) -> dict[str, dict[str, Any]]:
    found = await asyncio.to_thread(describe_agents, client, region, ids)
    return {k: v.model_dump() for k, v in found.items()}


async def reconcile_results(
    client: EcsClient, region: str, invoke_ids: Collection[str], ids: list[str]
) -> dict[str, dict[str, Any]]:
    found = await asyncio.to_thread(describe_results, client, region, invoke_ids, ids)
    return {k: v.model_dump() for k, v in found.items()}
