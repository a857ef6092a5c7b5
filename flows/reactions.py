"""Runbooks that start themselves: each is a deployment with an event trigger (prefect.yaml)
that starts one run per window of events (alicloud_runbooks/windows.py), and the run acts on
the whole window at once."""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.events import emit_event

from alicloud_runbooks import windows
from alicloud_runbooks.blocks import AlibabaCloudCredentials, resolve_credentials
from alicloud_runbooks.events import names
from alicloud_runbooks.report import InstanceReport, RunReport
from alicloud_runbooks.restarts import STOPPED_UNASKED, Action, Decision
from alicloud_runbooks.waiter import Owner
from flows.steps import CommandSpec, finish, reporting, run_and_collect
from tasks.reactions import (
    DIAGNOSTICS_COMMAND,
    DIAGNOSTICS_SCRIPT,
    decide_restarts,
    runbook_failures,
    start_instances,
)

DIAGNOSED = "runbooks.diagnostics.collected"


@flow(name="collect-diagnostics")
async def collect_diagnostics(
    window: windows.EventWindow,
    timeout: int = 60,
    credentials: AlibabaCloudCredentials | None = None,
    credentials_block: str | None = None,
) -> RunReport | None:
    """For the window's failed or timed-out runbook commands, run a read-only diagnostic
    script (uptime, disks, memory, top processes, journal and agent log tails) on those
    instances in one RunCommand per 100, and link each result to the failed invocation: a
    table artifact and a `runbooks.diagnostics.collected` event per instance related to it.

    Example:
        ```python
        import asyncio
        from datetime import UTC, datetime
        from alicloud_runbooks.windows import EventWindow
        from flows.reactions import collect_diagnostics

        window = EventWindow(event="acs.ecs.CloudAssistant.TaskCompleted",
                             start=datetime.now(UTC), seconds=5,
                             match={"acs.ecs.invocation-status": ["Failed", "Timeout"]})
        asyncio.run(collect_diagnostics(window))
        ```
    """
    logger = get_run_logger()
    credentials = await resolve_credentials(credentials, credentials_block)
    events = await windows.collect(window)
    failures = runbook_failures(credentials, events)
    if not failures:
        logger.info("No runbook command failed in the window (%d events): done", len(events))
        return None
    owner = Owner(account_id=credentials.resolve_account_id(), region=credentials.region_id)
    report = RunReport(flow="collect-diagnostics", started_at=datetime.now(UTC))
    command = CommandSpec(
        script=DIAGNOSTICS_SCRIPT, name=DIAGNOSTICS_COMMAND, timeout=timeout, suspend_after=None
    )
    chosen = [f.instance_id for f in failures]
    rows = {i: InstanceReport(instance_id=i) for i in chosen}
    report.instances = list(rows.values())
    async with reporting(report, "collect-diagnostics", credentials):
        await run_and_collect(credentials, report, rows, chosen, command, owner)
    table = []
    for failure in failures:
        row = rows[failure.instance_id]
        table.append(
            {
                "instance": failure.instance_id,
                "failed_invocation": failure.invoke_id,
                "failed_command": failure.command_name,
                "failed_status": failure.status,
                "diagnostics_invocation": row.invoke_id,
                "diagnostics_status": row.status,
                "output_preview": row.tail(),
            }
        )
        emit_event(
            event=DIAGNOSED,
            resource={
                "prefect.resource.id": names.instance_resource(failure.instance_id),
                "prefect.resource.name": failure.instance_id,
            },
            related=[
                {
                    "prefect.resource.id": names.invocation_resource(failure.invoke_id),
                    "prefect.resource.role": "failed-invocation",
                },
                {
                    "prefect.resource.id": f"prefect.event.{failure.event_id}",
                    "prefect.resource.role": "failed-event",
                },
                {
                    "prefect.resource.id": names.invocation_resource(row.invoke_id or ""),
                    "prefect.resource.role": "diagnostics",
                },
            ],
            payload={"status": row.status, "output_tail": (row.output or "")[-4000:]},
        )
    await create_table_artifact(
        key="diagnostics-of-failed-invocations",
        table=table,
        description="Diagnostics per instance, next to the runbook invocation that failed on it.",
    )
    return finish(report, "collect-diagnostics", "continue", credentials, "all")


@flow(name="restart-stopped")
async def restart_stopped(
    window: windows.EventWindow,
    action: Action = "report",
    max_restarts_per_hour: int = 3,
    credentials: AlibabaCloudCredentials | None = None,
    credentials_block: str | None = None,
) -> list[Decision]:
    """The window's instances that stopped: those tagged `runbooks:managed=true` that stopped
    without a runbook asking are started again (`action="start"`, one StartInstances per 100)
    or reported (`"report"`), at most `max_restarts_per_hour` times per instance (the loop
    guard, counted in the event store); past it they are reported.

    Example:
        ```python
        import asyncio
        from datetime import UTC, datetime
        from alicloud_runbooks.windows import EventWindow
        from flows.reactions import restart_stopped

        window = EventWindow(event="acs.ecs.Instance.StateChange", start=datetime.now(UTC),
                             seconds=5, match={"acs.ecs.instance-state": "Stopped"})
        asyncio.run(restart_stopped(window, action="start"))
        ```
    """
    logger = get_run_logger()
    credentials = await resolve_credentials(credentials, credentials_block)
    events = await windows.collect(window)
    decisions = await decide_restarts(credentials, events, action, max_restarts_per_hour)
    to_start = [d.instance_id for d in decisions if d.action == "start"]
    if to_start:
        start_instances(credentials, to_start, "stopped without a runbook asking")
    for decision in decisions:
        if decision.action == "report":
            emit_event(
                event=STOPPED_UNASKED,
                resource={
                    "prefect.resource.id": names.instance_resource(decision.instance_id),
                    "prefect.resource.name": decision.instance_id,
                },
                payload={"reason": decision.reason},
            )
        log = logger.warning if decision.action == "report" else logger.info
        log("%s: %s (%s)", decision.instance_id, decision.action, decision.reason)
    await create_table_artifact(
        key="restart-stopped",
        table=[d.model_dump() for d in decisions],
        description="Each instance the window saw stop, and what was done.",
    )
    return decisions
