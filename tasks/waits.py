"""Event-triggered steps: wait for FirstHeartbeat, TaskCompleted and OutputDelivered for a
whole batch with one subscription each, reconciling only what the events leave open (the
rules: `alicloud_runbooks.reconciliation`)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from pydantic import BaseModel

from alicloud_runbooks import cloud_assistant as ca
from alicloud_runbooks.blocks import AlibabaCloudCredentials
from alicloud_runbooks.cloud_assistant import CommandClock, Invocation, InvocationRecord
from alicloud_runbooks.events import names
from alicloud_runbooks.reconciliation import Answer
from alicloud_runbooks.stream import EventStream
from alicloud_runbooks.waiter import (
    EventWait,
    Owner,
    Settlement,
    WaitControl,
    WaitResult,
    wait_for_events,
)
from alicloud_runbooks.watch import WHAT_TO_CHECK, WatchPolicy
from tasks.settled_events import SettledEvents

# Events are read back from the store this far before the action that caused them: instance
# and invocation ids are unique, and a retried flow run finds its first attempt's events.
STORE_LOOKBACK = timedelta(hours=1)
MAX_RELATED = 90  # Prefect allows 100 related resources per event; the run's own take a few


def _since(moment: datetime) -> datetime:
    return moment - STORE_LOOKBACK


def watch_policy(report_progress: bool = True) -> WatchPolicy:
    """From the environment (`alicloud_runbooks.watch`). Without `report_progress` only the
    stall warnings remain: a fleet run reports its own progress for all its waits."""
    if report_progress:
        return WatchPolicy.from_environment()
    return WatchPolicy.from_environment(lines=False, artifact=False)


async def _wait(
    spec: EventWait,
    reconcile: Any,
    stream: EventStream | None,
    invoke_ids: Sequence[str] = (),
    report_progress: bool = True,
) -> WaitResult:
    """Run the waiter, announcing the wait, what settled it and its outcome as the flow run's
    own events (`tasks.settled_events`)."""
    logger = get_run_logger()
    spec.watch = watch_policy(report_progress)
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
    settled_events = SettledEvents(spec, resource)
    told = spec.on_settle

    def on_settle(settlement: Settlement) -> None:
        try:
            if told is not None:
                told(settlement)
        finally:
            settled_events.add(settlement)

    spec.on_settle = on_settle
    logger.info(
        "Waiting for %s from %d instance%s (deadline %.0fs, one subscription)",
        spec.name,
        len(spec.keys),
        "" if len(spec.keys) == 1 else "s",
        spec.timeout,
    )
    try:
        result = await wait_for_events(spec, reconcile, log=logger, stream=stream)
    finally:
        spec.on_settle = told
        settled_events.flush()
    by_event, by_reconciliation = result.by("event"), result.by("reconciliation")
    seconds = (result.finished_at - result.started_at).total_seconds()
    logger.info(
        "%s: %d by event (%d live, %d from the store), %d by reconciliation, %d unsettled, "
        "in %.2fs",
        spec.name,
        len(by_event),
        result.live_events,
        result.stored_events,
        len(by_reconciliation),
        len(result.unsettled),
        seconds,
    )
    if by_reconciliation:
        shown = ", ".join(sorted(by_reconciliation)[:10])
        more = len(by_reconciliation) - 10
        logger.warning(
            "%s: no event came for %s%s; settled by reconciliation: %s",
            spec.name,
            shown,
            f" and {more} more" if more > 0 else "",
            WHAT_TO_CHECK,
        )
    if result.foreign:
        logger.warning(
            "%s: ignored %d events that do not belong to this run (%s)",
            spec.name,
            sum(result.foreign.values()),
            "; ".join(f"{n} x {reason}" for reason, n in result.foreign.items()),
        )
    emit_event(
        event="runbooks.wait.finished",
        resource=resource,
        related=related,
        payload={
            "by_event": len(by_event),
            "by_reconciliation": len(by_reconciliation),
            "unsettled": result.unsettled,
            "straggler_rounds": result.straggler_rounds,
            "foreign_events": sum(result.foreign.values()),
            "reconcile_error": result.reconcile_error,
            "seconds": seconds,
            "settled_events": settled_events.emitted,
        },
    )
    return result


def _no_answer(what: str, api: str, result: WaitResult) -> str:
    if result.reconcile_error:
        return f"no {what}, and {api} failed: {result.reconcile_error}"
    return f"no {what}, and {api} does not know the instance"


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
    owner: Owner | None = None,
) -> Heartbeats:
    """Ready = a FirstHeartbeat event, or an agent that reconciliation finds online and new
    enough to have sent one. An agent too old for the event is an error naming the rule.

    Example (inside a flow; the stream opened before `launch_instances`):
        ```python
        async with EventStream([names.FIRST_HEARTBEAT]) as stream:
            launched = launch_instances(credentials, 2, image_id, "ecs.g7.large")
            beats = await wait_for_heartbeats(
                credentials, launched.instance_ids, launched.launched_at, stream=stream
            )
        print(beats.ready, beats.errors)
        ```
    """
    client = credentials.ecs_client()
    region = credentials.region_id

    async def reconcile(ids: list[str]) -> dict[str, Answer]:
        return await ca.reconcile_agents(client, region, ids)

    spec = ca.heartbeat_wait(instance_ids, _since(launched_at), timeout, owner)
    result = await _wait(spec, reconcile, stream)
    ready: list[str] = []
    seconds: dict[str, float] = {}
    errors: dict[str, str] = {}
    late = f"no FirstHeartbeat within {timeout:.0f}s"
    for instance_id in instance_ids:
        settled = result.settled.get(instance_id)
        if settled is not None and settled.by == "event":
            ready.append(instance_id)
            # From the relay's receipt: Alibaba's event times are whole seconds.
            if settled.relayed_at is not None and settled.relayed_at >= launched_at:
                seconds[instance_id] = round((settled.relayed_at - launched_at).total_seconds(), 2)
            continue
        known = settled.data if settled is not None else result.last_known.get(instance_id)
        if known is None:
            errors[instance_id] = _no_answer(late, "DescribeCloudAssistantStatus", result)
            continue
        agent = ca.AgentStatus.model_validate(known)
        if rule := ca.first_heartbeat_rule(agent.os_type, agent.version):
            errors[instance_id] = f"{late}: {rule}"
        elif not agent.online:
            errors[instance_id] = (
                f"{late} and the Cloud Assistant agent ({agent.version}) is not online: "
                "check the instance boots and can reach Cloud Assistant"
            )
        else:
            ready.append(instance_id)
    logger = get_run_logger()
    for instance_id, error in errors.items():
        logger.error("%s: %s", instance_id, error)
    return Heartbeats(wait=result, ready=ready, seconds=seconds, errors=errors)


class Results(BaseModel):
    wait: WaitResult
    records: dict[str, InvocationRecord]
    unfinished: list[str]
    """Instances with no final status at the end of the wait (still running, or unknown)."""
    errors: dict[str, str]
    pending: list[str] = []
    """Instances still awaited when a holding wait returned early (a durable wait)."""


def _record(settled: Settlement) -> InvocationRecord:
    if settled.by == "event":
        return InvocationRecord.from_event(settled.data)
    return InvocationRecord.model_validate(settled.data)


def _by_invocation(invocations: Sequence[Invocation]) -> tuple[list[str], list[str], datetime]:
    instance_ids = [i for inv in invocations for i in inv.instance_ids]
    invoke_ids = [inv.invoke_id for inv in invocations]
    started = min(inv.started_at for inv in invocations)
    return instance_ids, invoke_ids, started


@task(name="wait-for-results", cache_policy=NO_CACHE)
async def wait_for_results(
    credentials: AlibabaCloudCredentials,
    invocations: Sequence[Invocation],
    clock: CommandClock,
    stream: EventStream | None = None,
    owner: Owner | None = None,
    name: str = "TaskCompleted",
    on_result: Callable[[str, InvocationRecord], None] | None = None,
    hold: float | None = None,
    report_progress: bool = True,
) -> Results:
    """TaskCompleted per instance; DescribeInvocations for the stragglers and what the deadline
    leaves. Only final statuses count: a command still running keeps its key open until it
    can no longer be (`clock.limit`), and is then listed in `unfinished`. `on_result` hears
    of each final status as it settles, before the wait ends. With `hold`, the wait returns
    after that many seconds with the keys still awaited in `pending` (a durable wait);
    deadlines always run from RunCommand.

    Example (inside a flow):
        ```python
        invocations = run_command(credentials, ids, "uptime")
        clock = CommandClock(timeout=60, grace=30, start_timeout=300)
        results = await wait_for_results(credentials, invocations, clock)
        print({i: r.status for i, r in results.records.items()})
        ```
    """
    client = credentials.ecs_client()
    instance_ids, invoke_ids, started = _by_invocation(invocations)

    async def reconcile(ids: list[str]) -> dict[str, Answer]:
        return await ca.reconcile_results(client, credentials.region_id, invocations, clock, ids)

    def settled_now(settlement: Settlement) -> None:
        if on_result is not None:
            on_result(settlement.key, _record(settlement))

    spec = ca.task_completed_wait(
        invocations, _since(started), clock, owner, on_settle=settled_now if on_result else None
    )
    spec.name = name
    spec.origin = started
    spec.hold = hold
    result = await _wait(spec, reconcile, stream, invoke_ids, report_progress)
    records: dict[str, InvocationRecord] = {}
    errors: dict[str, str] = {}
    unfinished: list[str] = []
    pending = set(result.pending)
    for instance_id in instance_ids:
        settled = result.settled.get(instance_id)
        if settled is not None:
            records[instance_id] = _record(settled)
            continue
        if instance_id in pending:
            continue
        unfinished.append(instance_id)
        known = result.last_known.get(instance_id)
        if known is None:
            errors[instance_id] = _no_answer("result", "DescribeInvocations", result)
            continue
        record = InvocationRecord.model_validate(known)
        since = f" since {record.start_time}" if record.start_time else ""
        errors[instance_id] = (
            f"no final status within {clock.limit:.0f}s of RunCommand: last seen "
            f"{record.status}{since}"
        )
    return Results(
        wait=result,
        records=records,
        unfinished=unfinished,
        errors=errors,
        pending=sorted(pending),
    )


@task(name="wait-for-output-delivery", cache_policy=NO_CACHE)
async def wait_for_output_delivery(
    credentials: AlibabaCloudCredentials,
    invocations: Sequence[Invocation],
    records: dict[str, InvocationRecord],
    timeout: float = 60,
    stream: EventStream | None = None,
    owner: Owner | None = None,
    report_progress: bool = True,
    control: WaitControl | None = None,
    limit: float | None = None,
) -> tuple[WaitResult, dict[str, InvocationRecord]]:
    """OutputDelivered (Finished or Failed) per instance; records updated with the OSS URI.

    With `control` the wait starts with RunCommand, before the results (`records` then
    holds every instance, and comes back as it is: merge with `apply_deliveries`): each
    key's `timeout` runs from `control.arm`, which the caller calls as its result comes, so
    a delivery event that arrives before the last TaskCompleted settles its key at once.
    `limit` bounds how far reconciliation may move a deadline (from the wait's start).

    Example (inside a flow, after `wait_for_results`):
        ```python
        wait, records = await wait_for_output_delivery(credentials, invocations, results.records)
        print({i: r.oss_uri for i, r in records.items()})
        ```
    """
    client = credentials.ecs_client()
    _, invoke_ids, started = _by_invocation(invocations)

    async def reconcile(ids: list[str]) -> dict[str, Answer]:
        return await ca.reconcile_deliveries(client, credentials.region_id, invocations, ids)

    spec = ca.output_delivered_wait(invocations, list(records), _since(started), timeout, owner)
    spec.control = control
    spec.limit = limit
    result = await _wait(spec, reconcile, stream, invoke_ids, report_progress)
    if control is not None:
        return result, records
    return result, apply_deliveries(result, records)


def apply_deliveries(
    result: WaitResult, records: dict[str, InvocationRecord]
) -> dict[str, InvocationRecord]:
    """The records with what the OutputDelivered wait learnt (InProgress where it learnt
    nothing)."""
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
    return updated
