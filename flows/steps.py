"""The part both runbooks share: run a command on ready instances, wait for its results and
output delivery, stop what never finished, read the outputs, and write it all into the run's
report, which is published whatever happens."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from datetime import UTC, datetime
from typing import Any, Literal

from prefect import get_run_logger
from prefect.context import FlowRunContext
from prefect.exceptions import Pause
from prefect.flow_runs import asuspend_flow_run
from pydantic import BaseModel, ConfigDict, Field

from alicloud_runbooks import durable
from alicloud_runbooks.blocks import AlibabaCloudCredentials
from alicloud_runbooks.cloud_assistant import (
    FINAL_INVOCATION_STATUSES,
    CommandClock,
    Invocation,
    InvocationRecord,
)
from alicloud_runbooks.events import names
from alicloud_runbooks.report import InstanceReport, RunReport, WaitSummary
from alicloud_runbooks.stream import EventStream
from alicloud_runbooks.times import parse_time
from alicloud_runbooks.waiter import Owner, WaitControl, WaitResult
from tasks import commands, waits
from tasks.reporting import FullOutputs, publish_outputs, publish_report

FailurePolicy = Literal["fail", "continue"]
NO_OUTPUT_STATUSES = frozenset({"Invalid", "Aborted", "Cancelled"})
LOGGED_FAILURES = 20  # one line each; the table artifact lists them all


class RunbookFailed(RuntimeError):
    """Some instances failed and the failure policy is `fail`."""


def _seconds(start: str | None, end: str | None) -> float | None:
    began, ended = parse_time(start), parse_time(end)
    if began is None or ended is None:
        return None
    return round((ended - began).total_seconds(), 3)


def _apply(row: InstanceReport, record: InvocationRecord) -> None:
    row.invoke_id = record.invoke_id
    row.status = record.status
    row.exit_code = record.exit_code if record.final else None
    row.duration_seconds = _seconds(record.start_time, record.finish_time)
    row.oss_uri = record.oss_uri if record.oss_status == "Finished" else None
    if record.status != "Success" and record.error_code and row.error is None:
        row.error = f"{record.error_code}: {record.error_info or ''}".strip(": ")


class CommandSpec(BaseModel):
    """The command the runbooks run, and how long each of its waits may take: one parameter,
    `command`, of provision-and-run, run-command and fleet-run (the UI's form shows its fields).

    Example:
        ```python
        from flows.steps import CommandSpec

        CommandSpec(script="uptime", timeout=120, output_bucket="ops-outputs")
        ```
    """

    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={
            "description": "What to run on each instance, and how long each wait may take."
        },
    )

    script: str = Field(description="What Cloud Assistant runs on each instance.")
    name: str | None = Field(
        default=None, description="The command's name in Cloud Assistant; default: the flow's."
    )
    command_type: str = Field(
        default="RunShellScript", description="RunShellScript, RunPowerShellScript or RunBatScript."
    )
    parameters: dict[str, str] | None = Field(
        default=None, description="Values of the script's {{name}} custom parameters."
    )
    timeout: int = Field(default=60, description="Seconds the command may run once started.")
    output_bucket: str | None = Field(
        default=None,
        description="OSS bucket for the full output (OSS output delivery); without one the "
        "inline output is read (its first 24 KB).",
    )
    output_prefix: str | None = Field(
        default="runbooks", description="Key prefix of the outputs in the bucket."
    )
    result_grace: float = Field(
        default=30, description="Seconds added to timeout before the result is reconciled."
    )
    start_timeout: float = Field(
        default=300,
        description="Seconds the command may wait to start (agent not up yet, instance busy).",
    )
    delivery_timeout: float = Field(
        default=60, description="Seconds to wait for the OSS output delivery event."
    )
    stop_timeout: float = Field(
        default=30, description="Seconds to wait for the final status after StopInvocation."
    )
    suspend_after: float | None = Field(
        default=300,
        description="A result wait still open after this many seconds suspends the run "
        "(deployed runs only): an hour-long command holds no process. None: always wait in "
        "process.",
    )

    def named(self, default: str) -> CommandSpec:
        """This command, named `default` unless it has a name."""
        return self if self.name else self.model_copy(update={"name": default})

    @property
    def clock(self) -> CommandClock:
        return CommandClock(
            timeout=self.timeout, grace=self.result_grace, start_timeout=self.start_timeout
        )


async def run_and_collect(
    credentials: AlibabaCloudCredentials,
    report: RunReport,
    rows: dict[str, InstanceReport],
    instance_ids: Sequence[str],
    spec: CommandSpec,
    owner: Owner,
    events: EventStream | None = None,
    on_result: Callable[[str, InvocationRecord], None] | None = None,
    while_running: AbstractAsyncContextManager[None] | None = None,
    report_progress: bool = True,
) -> None:
    """`events`: a stream already open on these instances (a fleet batch shares one across
    its groups). `on_result` hears of each final status as it settles. `while_running` is
    entered before RunCommand and left once every result is in, before the outputs are
    collected (a fleet run holds its global concurrency slots so). `report_progress=False`
    keeps the waits' progress lines and artifacts (not their stall warnings) for a caller
    that reports its own."""
    args = (credentials, report, rows, instance_ids, spec)
    if events is not None:
        await _run_and_wait(*args, events, owner, on_result, while_running, report_progress)
        return
    # Subscribed before RunCommand, so no result slips between the call and the wait; only
    # these instances' events, not every command's in the account.
    async with command_events(instance_ids) as events:
        await _run_and_wait(*args, events, owner, on_result, while_running, report_progress)


def command_events(instance_ids: Sequence[str]) -> EventStream:
    """The TaskCompleted and OutputDelivered events of these instances, to open before
    RunCommand."""
    return EventStream(
        [names.TASK_COMPLETED, names.OUTPUT_DELIVERED],
        get_run_logger(),
        resource_ids=[names.instance_resource(i) for i in instance_ids],
    )


async def _run_and_wait(
    credentials: AlibabaCloudCredentials,
    report: RunReport,
    rows: dict[str, InstanceReport],
    instance_ids: Sequence[str],
    spec: CommandSpec,
    events: EventStream,
    owner: Owner,
    on_result: Callable[[str, InvocationRecord], None] | None = None,
    while_running: AbstractAsyncContextManager[None] | None = None,
    report_progress: bool = True,
) -> None:
    """RunCommand, then the TaskCompleted and OutputDelivered waits together: the output
    wait is on before the first result, so a delivery that comes before the last result is
    taken as it arrives, and the outputs are read as soon as the last delivery is in."""
    control = WaitControl() if spec.output_bucket else None
    delivery: asyncio.Task[tuple[WaitResult, dict[str, InvocationRecord]]] | None = None

    def invoked(invocations: list[Invocation]) -> None:
        nonlocal delivery
        if control is None:
            return
        everyone = {
            i: InvocationRecord(instance_id=i, invoke_id=inv.invoke_id, status="Unknown")
            for inv in invocations
            for i in inv.instance_ids
        }
        delivery = asyncio.ensure_future(
            waits.wait_for_output_delivery(
                credentials,
                invocations,
                everyone,
                timeout=spec.delivery_timeout,
                stream=events,
                owner=owner,
                report_progress=report_progress,
                control=control,
                limit=spec.clock.limit + spec.stop_timeout + spec.delivery_timeout,
            )
        )

    def heard(instance_id: str, record: InvocationRecord) -> None:
        if control is not None and record.final:
            if record.status in NO_OUTPUT_STATUSES:
                control.withdraw([instance_id])
            else:
                control.arm([instance_id])
        if on_result is not None:
            on_result(instance_id, record)

    try:
        async with while_running or nullcontext():
            invocations, records = await _run_to_results(
                credentials,
                report,
                rows,
                instance_ids,
                spec,
                events,
                owner,
                heard if control is not None or on_result is not None else None,
                report_progress,
                invoked,
            )
        deliverable = {
            k: r for k, r in records.items() if r.final and r.status not in NO_OUTPUT_STATUSES
        }
        if control is not None and delivery is not None:
            everyone = [i for inv in invocations for i in inv.instance_ids]
            control.withdraw([i for i in everyone if i not in deliverable])
            control.arm(list(deliverable))
            result, _ = await delivery
            if deliverable:
                ours = {k: v for k, v in result.settled.items() if k in deliverable}
                result = result.model_copy(update={"settled": ours})
                report.waits.append(WaitSummary.of(result))
                records = {**records, **waits.apply_deliveries(result, deliverable)}
                for instance_id, settled in result.settled.items():
                    rows[instance_id].settled("output", settled)
    except BaseException:
        if control is not None and delivery is not None and not delivery.done():
            control.stop()  # suspending or failing: the output wait ends with the run
            with contextlib.suppress(BaseException):
                await delivery
        raise
    for instance_id, record in records.items():
        _apply(rows[instance_id], record)
    readable = {k: r for k, r in records.items() if r.final and r.status not in NO_OUTPUT_STATUSES}
    if readable:
        outputs = await commands.read_outputs(credentials, readable)
        for instance_id, output in outputs.items():
            row = rows[instance_id]
            row.output, row.output_source = output.text, output.source
            if output.error and row.error is None and row.status == "Success":
                get_run_logger().warning("%s: %s", instance_id, output.error)


async def _run_to_results(
    credentials: AlibabaCloudCredentials,
    report: RunReport,
    rows: dict[str, InstanceReport],
    instance_ids: Sequence[str],
    spec: CommandSpec,
    events: EventStream,
    owner: Owner,
    on_result: Callable[[str, InvocationRecord], None] | None,
    report_progress: bool = True,
    invoked: Callable[[list[Invocation]], None] | None = None,
) -> tuple[list[Invocation], dict[str, InvocationRecord]]:
    """RunCommand, the TaskCompleted wait, and StopInvocation for what never finished.
    `invoked` hears of the invocations right after RunCommand, before the wait starts."""
    # In a thread: called on the flow's loop, the sync task would stop the open event stream
    # from reading while it makes its RunCommand calls (seconds at 1,000 instances).
    invocations = await asyncio.to_thread(
        commands.run_command,
        credentials,
        instance_ids,
        spec.script,
        name=spec.name or "runbook",
        command_type=spec.command_type,
        parameters=spec.parameters,
        timeout=spec.timeout,
        output_bucket=spec.output_bucket,
        output_prefix=spec.output_prefix,
    )
    report.command = spec.name or "runbook"
    report.invocations = list(invocations)
    report.invoke_ids = [i.invoke_id for i in invocations]
    for invocation in invocations:
        for instance_id in invocation.instance_ids:
            rows[instance_id].invoke_id = invocation.invoke_id
            rows[instance_id].status = "Unknown"
    if invoked is not None:
        invoked(list(invocations))
    results = await _await_results(
        credentials, invocations, spec, events, owner, on_result, report_progress
    )
    report.waits.append(WaitSummary.of(results.wait))
    records = dict(results.records)
    for instance_id, settled in results.wait.settled.items():
        rows[instance_id].settled("result", settled)
    for instance_id, error in results.errors.items():
        rows[instance_id].error = error
    if results.unfinished:
        stopped = await _stop_and_settle(
            credentials,
            report,
            invocations,
            results.unfinished,
            spec,
            events,
            owner,
            report_progress,
        )
        records.update(stopped)
        for instance_id in report.stopped:
            rows[instance_id].error = f"stopped by the runbook: {rows[instance_id].error}"
    for instance_id, record in records.items():
        _apply(rows[instance_id], record)
    return list(invocations), records


async def _await_results(
    credentials: AlibabaCloudCredentials,
    invocations: Sequence[Invocation],
    spec: CommandSpec,
    events: EventStream,
    owner: Owner,
    on_result: Callable[[str, InvocationRecord], None] | None,
    report_progress: bool = True,
) -> waits.Results:
    """The TaskCompleted wait, durable when it can be (`alicloud_runbooks.durable`): still
    open after `spec.suspend_after` seconds, the run suspends and holds no process; Prefect
    resumes it on the events or at the deadline, re-runs the flow (RunCommand comes back
    cached) and this reads what arrived, round after round, as one wait would."""

    def wait(hold: float | None) -> Coroutine[Any, Any, waits.Results]:
        return waits.wait_for_results(
            credentials,
            invocations,
            spec.clock,
            events,
            owner,
            on_result=on_result,
            hold=hold,
            report_progress=report_progress,
        )

    why = durable.why_not_durable()
    if spec.suspend_after is None or why is not None:
        if spec.suspend_after is not None and spec.clock.limit > spec.suspend_after:
            get_run_logger().info("Waiting in process for the results: %s", why)
        return await wait(None)
    context = FlowRunContext.get()
    assert context is not None and context.flow_run is not None
    run_id = context.flow_run.id
    base = f"results-{invocations[0].invoke_id}"
    fired = await durable.fired_keys(run_id)
    resumed = any(key.startswith(base) for key in fired)
    step = 0
    while True:
        results = await wait(0 if resumed else spec.suspend_after)
        if resumed:
            await durable.disarm(run_id)
        if not results.pending:
            return results
        step += 1
        key = f"{base}-{step}"
        if key in fired:  # suspended here before and resumed since
            resumed = True
            continue
        deadline = results.wait.next_deadline or datetime.now(UTC)
        await durable.arm(run_id, key, names.TASK_COMPLETED, len(results.pending), deadline)
        await durable.announce(run_id, key, len(results.pending), deadline)
        # What came while the automations were being armed may not be counted by them.
        latest = await wait(0)
        if not latest.pending:
            await durable.disarm(run_id)
            return latest
        get_run_logger().info(
            "%d of %d results still awaited after %.0fs: suspending the run (no process held) "
            "until they come or the deadline at %s",
            len(results.pending),
            sum(len(inv.instance_ids) for inv in invocations),
            spec.suspend_after if not resumed else 0,
            deadline.isoformat(timespec="seconds"),
        )
        seconds = (deadline - datetime.now(UTC) + durable.RESUME_MARGIN).total_seconds()
        await asuspend_flow_run(key=key, timeout=int(seconds))
        resumed = True  # reached only when Prefect answered that this key had fired


async def _stop_and_settle(
    credentials: AlibabaCloudCredentials,
    report: RunReport,
    invocations: Sequence[Invocation],
    unfinished: Sequence[str],
    spec: CommandSpec,
    events: EventStream,
    owner: Owner,
    report_progress: bool = True,
) -> dict[str, InvocationRecord]:
    """A command with no final status by the end of its wait is stopped, never left running
    unseen; the final status that follows (Terminated, Cancelled) is what the report shows."""
    reason = f"no final status within {spec.clock.limit:.0f}s of RunCommand"
    failed = commands.stop_commands(credentials, invocations, unfinished, reason)
    report.stopped = [i for i in unfinished if i not in failed]
    if not report.stopped:
        return {}
    chosen = set(report.stopped)
    stopping = [
        inv.model_copy(update={"instance_ids": [i for i in inv.instance_ids if i in chosen]})
        for inv in invocations
        if chosen & set(inv.instance_ids)
    ]
    after = await waits.wait_for_results(
        credentials,
        stopping,
        CommandClock(timeout=0, grace=spec.stop_timeout, start_timeout=0),
        stream=events,
        owner=owner,
        name="TaskCompleted after StopInvocation",
        report_progress=report_progress,
    )
    report.waits.append(WaitSummary.of(after.wait))
    return after.records


def will_retry() -> bool:
    """Whether Prefect will retry this flow run if it fails now: then its instances are kept,
    and the retry finds them again through RunInstances' ClientToken."""
    context = FlowRunContext.get()
    if context is None or context.flow_run is None or context.flow is None:
        return False
    return context.flow_run.run_count <= (context.flow.retries or 0)


def stop_unfinished_commands(
    credentials: AlibabaCloudCredentials, report: RunReport, why: str
) -> None:
    """Before instances are deleted on a failure or a cancellation: stop the commands that
    have not finished on them (best effort; the report says what was stopped)."""
    unfinished = [
        i
        for inv in report.invocations
        for i in inv.instance_ids
        if report.row(i) is not None and report.row(i).status not in FINAL_INVOCATION_STATUSES  # type: ignore[union-attr]
    ]
    if not unfinished:
        return
    try:
        failed = commands.stop_commands(credentials, report.invocations, unfinished, why)
    except BaseException as exc:
        get_run_logger().error("Could not stop the commands still running: %s", exc)
        return
    report.stopped = [i for i in unfinished if i not in failed]


def publish(
    report: RunReport,
    key: str,
    credentials: AlibabaCloudCredentials | None = None,
    full_outputs: FullOutputs = None,
) -> None:
    """The run's artifacts: its table and summary, then the outputs of the failed instances
    and of those in `full_outputs`."""
    publish_report(report, key)
    publish_outputs(credentials, report, full_outputs)


@asynccontextmanager
async def reporting(
    report: RunReport,
    key: str,
    credentials: AlibabaCloudCredentials | None = None,
    full_outputs: FullOutputs = None,
) -> AsyncIterator[None]:
    """Publish the report even when the run fails halfway, so what is known is not lost."""
    try:
        yield
    except Pause:
        raise  # suspended by a durable wait: the run goes on when it is resumed
    except BaseException as exc:
        report.finished_at = datetime.now(report.started_at.tzinfo)
        report.error = str(exc) or type(exc).__name__
        try:
            publish(report, key, credentials, full_outputs)
        except BaseException as publish_error:
            get_run_logger().error("Could not publish the run's report: %s", publish_error)
        raise


def finish(
    report: RunReport,
    key: str,
    on_failure: FailurePolicy,
    credentials: AlibabaCloudCredentials | None = None,
    full_outputs: FullOutputs = None,
) -> RunReport:
    """Publish the artifacts, log the outcome and apply the failure policy."""
    logger = get_run_logger()
    report.finished_at = datetime.now(report.started_at.tzinfo)
    publish(report, key, credentials, full_outputs)
    failed = report.failed
    total = len(report.instances)
    logger.info(
        "%d of %d instance%s succeeded", total - len(failed), total, "" if total == 1 else "s"
    )
    for row in failed[:LOGGED_FAILURES]:
        logger.error(
            "%s: %s%s%s",
            row.instance_id,
            row.status,
            f", exit code {row.exit_code}" if row.exit_code is not None else "",
            f": {row.error}" if row.error else "",
        )
    if len(failed) > LOGGED_FAILURES:
        logger.error(
            "… and %d more failed instances: see the run's table artifact",
            len(failed) - LOGGED_FAILURES,
        )
    if failed and on_failure == "fail":
        listed = ", ".join(f"{r.instance_id} ({r.status})" for r in failed[:10])
        more = f" and {len(failed) - 10} more" if len(failed) > 10 else ""
        raise RunbookFailed(
            f"{len(failed)} of {total} instance{'' if total == 1 else 's'} failed: "
            f"{listed}{more}. See the run's artifacts; pass on_failure='continue' to report "
            "and carry on."
        )
    return report
