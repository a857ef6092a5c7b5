"""Event-triggered steps: wait for FirstHeartbeat, TaskCompleted and OutputDelivered for a
whole batch with one subscription each, reconciling only what the deadline leaves open."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from pydantic import BaseModel

from alicloud_runbooks import cloud_assistant as ca
from alicloud_runbooks.blocks import AlibabaCloudCredentials
from alicloud_runbooks.cloud_assistant import InvocationRecord
from alicloud_runbooks.events import names
from alicloud_runbooks.waiter import (
    EventStream,
    EventWait,
    Reconciler,
    WaitResult,
    wait_for_events,
)
from tasks.commands import Invocation

# Events are read back from the store this far before the action that caused them: instance
# and invocation ids are unique, and a retried flow run finds its first attempt's events.
STORE_LOOKBACK = timedelta(hours=1)
MAX_RELATED = 90  # Prefect allows 100 related resources per event; the run's own take a few


def _since(moment: datetime) -> datetime:
    return moment - STORE_LOOKBACK


async def _wait(
    spec: EventWait,
    reconcile: Reconciler,
    stream: EventStream | None,
    invoke_ids: Sequence[str] = (),
) -> WaitResult:
    """Run the waiter, announcing the wait and its outcome as the flow run's own events."""
    logger = get_run_logger()
    wait_id = uuid.uuid4()
    related = [
        {"prefect.resource.id": names.invocation_resource(i), "prefect.resource.role": "invocation"}
        for i in invoke_ids[:MAX_RELATED]
    ]
    resource = {
        "prefect.resource.id": f"runbooks.wait.{wait_id}",
        "prefect.resource.name": spec.name,
        "runbooks.wait.event": spec.event,
    }
    emit_event(
        event="runbooks.wait.started",
        resource=resource,
        related=related,
        payload={"keys": len(spec.keys), "timeout_seconds": spec.timeout},
    )
    logger.info(
        "Waiting for %s from %d instances (deadline %.0fs, one subscription)",
        spec.name,
        len(spec.keys),
        spec.timeout,
    )
    result = await wait_for_events(spec, reconcile, log=logger, stream=stream)
    by_event, by_reconciliation = result.by("event"), result.by("reconciliation")
    seconds = (result.finished_at - result.started_at).total_seconds()
    logger.info(
        "%s: %d by event, %d by reconciliation, %d unsettled, in %.2fs",
        spec.name,
        len(by_event),
        len(by_reconciliation),
        len(result.unsettled),
        seconds,
    )
    if by_reconciliation:
        logger.warning(
            "%s: no event came for %s; settled by reconciliation (is the relay up and subscribed?)",
            spec.name,
            ", ".join(by_reconciliation),
        )
    emit_event(
        event="runbooks.wait.finished",
        resource=resource,
        related=related,
        payload={
            "by_event": len(by_event),
            "by_reconciliation": len(by_reconciliation),
            "unsettled": result.unsettled,
            "seconds": seconds,
        },
    )
    return result


class Heartbeats(BaseModel):
    wait: WaitResult
    ready: list[str]
    seconds: dict[str, float]
    errors: dict[str, str]


@task(name="wait-for-heartbeats", cache_policy=NO_CACHE)
async def wait_for_heartbeats(
    credentials: AlibabaCloudCredentials,
    instance_ids: Sequence[str],
    launched_at: datetime,
    timeout: float = 300,
    stream: EventStream | None = None,
) -> Heartbeats:
    """Ready = a FirstHeartbeat event, or an agent that reconciliation finds online and new
    enough to have sent one. An agent too old for the event is an error naming the rule."""
    client = credentials.ecs_client()
    region = credentials.region_id

    async def reconcile(ids: list[str]) -> dict[str, dict[str, Any]]:
        return await ca.reconcile_agents(client, region, ids)

    spec = ca.heartbeat_wait(instance_ids, _since(launched_at), timeout)
    result = await _wait(spec, reconcile, stream)
    ready: list[str] = []
    seconds: dict[str, float] = {}
    errors: dict[str, str] = {}
    for instance_id in instance_ids:
        settled = result.settled.get(instance_id)
        if settled is None:
            errors[instance_id] = (
                f"no FirstHeartbeat within {timeout:.0f}s and DescribeCloudAssistantStatus "
                "does not know the instance"
            )
            continue
        if settled.by == "event":
            ready.append(instance_id)
            if settled.source_time is not None and settled.source_time >= launched_at:
                seconds[instance_id] = round((settled.source_time - launched_at).total_seconds(), 2)
            continue
        agent = ca.AgentStatus.model_validate(settled.data)
        rule = ca.first_heartbeat_rule(agent.os_type, agent.version)
        if rule:
            errors[instance_id] = f"no FirstHeartbeat within {timeout:.0f}s: {rule}"
        elif not agent.online:
            errors[instance_id] = (
                f"no FirstHeartbeat within {timeout:.0f}s and the Cloud Assistant agent "
                f"({agent.version}) is not online: check the instance boots and can reach "
                "Cloud Assistant"
            )
        else:
            ready.append(instance_id)
    logger = get_run_logger()
    for instance_id, error in errors.items():
        logger.error("%s: %s", instance_id, error)
    return Heartbeats(wait=result, ready=ready, seconds=seconds, errors=errors)


def _record_from_event(data: dict[str, Any]) -> InvocationRecord:
    exit_code = data.get("exitCode")
    error_code = data.get("errorCode")
    return InvocationRecord(
        instance_id=data["instanceId"],
        invoke_id=data["invokeId"],
        status=data["invocationStatus"],
        exit_code=int(exit_code) if str(exit_code or "").lstrip("-").isdigit() else None,
        start_time=data.get("startTime"),
        finish_time=data.get("finishTime"),
        error_code=None if error_code in (None, "", "0") else error_code,
        error_info=data.get("errorDesc") or None,
    )


class Results(BaseModel):
    wait: WaitResult
    records: dict[str, InvocationRecord]
    errors: dict[str, str]


def _by_invocation(invocations: Sequence[Invocation]) -> tuple[list[str], list[str], datetime]:
    instance_ids = [i for inv in invocations for i in inv.instance_ids]
    invoke_ids = [inv.invoke_id for inv in invocations]
    started = min(inv.started_at for inv in invocations)
    return instance_ids, invoke_ids, started


@task(name="wait-for-results", cache_policy=NO_CACHE)
async def wait_for_results(
    credentials: AlibabaCloudCredentials,
    invocations: Sequence[Invocation],
    timeout: float,
    stream: EventStream | None = None,
) -> Results:
    """TaskCompleted per instance; DescribeInvocationResults for what the deadline leaves."""
    client = credentials.ecs_client()
    instance_ids, invoke_ids, started = _by_invocation(invocations)

    async def reconcile(ids: list[str]) -> dict[str, dict[str, Any]]:
        return await ca.reconcile_results(client, credentials.region_id, invoke_ids, ids)

    spec = ca.task_completed_wait(instance_ids, invoke_ids, _since(started), timeout)
    result = await _wait(spec, reconcile, stream, invoke_ids)
    records: dict[str, InvocationRecord] = {}
    errors: dict[str, str] = {}
    for instance_id in instance_ids:
        settled = result.settled.get(instance_id)
        if settled is None:
            errors[instance_id] = f"no result within {timeout:.0f}s and none from the API"
            continue
        record = (
            _record_from_event(settled.data)
            if settled.by == "event"
            else InvocationRecord.model_validate(settled.data)
        )
        records[instance_id] = record
        if not record.final:
            errors[instance_id] = (
                f"still {record.status} after {timeout:.0f}s (the command's own timeout should "
                "have ended it: is the agent stuck?)"
            )
    return Results(wait=result, records=records, errors=errors)


@task(name="wait-for-output-delivery", cache_policy=NO_CACHE)
async def wait_for_output_delivery(
    credentials: AlibabaCloudCredentials,
    invocations: Sequence[Invocation],
    records: dict[str, InvocationRecord],
    timeout: float = 60,
    stream: EventStream | None = None,
) -> tuple[WaitResult, dict[str, InvocationRecord]]:
    """OutputDelivered (Finished or Failed) per instance; records updated with the OSS URI."""
    client = credentials.ecs_client()
    _, invoke_ids, started = _by_invocation(invocations)
    instance_ids = list(records)

    async def reconcile(ids: list[str]) -> dict[str, dict[str, Any]]:
        found = await ca.reconcile_results(client, credentials.region_id, invoke_ids, ids)
        return {k: v for k, v in found.items() if v.get("oss_status") in ca.FINAL_DELIVERY_STATUSES}

    spec = ca.output_delivered_wait(instance_ids, invoke_ids, _since(started), timeout)
    result = await _wait(spec, reconcile, stream, invoke_ids)
    updated: dict[str, InvocationRecord] = {}
    for instance_id, record in records.items():
        settled = result.settled.get(instance_id)
        if settled is None:
            updated[instance_id] = record.model_copy(update={"oss_status": "InProgress"})
            continue
        data = settled.data
        if settled.by == "event":
            error = (
                f"{data.get('errorCode')}: {data.get('errorInfo')}"
                if data.get("status") == "Failed"
                else None
            )
            change = {
                "oss_status": data.get("status"),
                "oss_uri": data.get("ossOutputUri") or None,
                "oss_error": error,
            }
        else:
            change = {k: data.get(k) for k in ("oss_status", "oss_uri", "oss_error")}
        updated[instance_id] = record.model_copy(update=change)
    return result, updated
