"""A fleet run's batches, one after another: each batch's instances go through
`run_and_collect` in groups as wide as its window allows (and the global limit), with one
event subscription per batch. Each result is counted once, as it settles, against the error
budget; the run starts nothing new once the budget is exceeded, the canary has failed or an
operator says stop, and what it never started is reported as `NotStarted`."""

from __future__ import annotations

import asyncio
import math
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from prefect import apause_flow_run, get_run_logger
from prefect.events import emit_event
from prefect.exceptions import FlowPauseTimeout
from prefect.input import RunInput
from prefect.runtime import flow_run
from pydantic import Field

from alicloud_runbooks import limits
from alicloud_runbooks.blocks import AlibabaCloudCredentials
from alicloud_runbooks.cloud_assistant import RUN_COMMAND_MAX_INSTANCES, InvocationRecord
from alicloud_runbooks.events import names
from alicloud_runbooks.progress import Progress
from alicloud_runbooks.rate_control import Batch, Ledger, Plan, RateControl
from alicloud_runbooks.report import (
    START_FAILED,
    BatchReport,
    FleetReport,
    InstanceReport,
    RunReport,
)
from alicloud_runbooks.stream import EventStream
from alicloud_runbooks.text import noun, plural
from alicloud_runbooks.waiter import Owner
from flows.steps import CommandSpec, command_events, run_and_collect

MAX_RELATED = 90  # Prefect allows 100 related resources per event; the run's own take a few
LISTED_IDS = 100  # instance ids carried in a batch event's payload at most
PROGRESS_KEY = "fleet-run-progress"


class Approval(RunInput):
    """What the operator answers when a fleet run pauses between batches (the UI's form)."""

    proceed: bool = Field(
        default=True, description="Start the next batch; untick to stop the run here"
    )
    note: str = Field(default="", description="Why (kept in the run's report)")


def _succeeded(record: InvocationRecord) -> bool:
    return record.status == "Success" and record.exit_code in (0, None)


class Rollout:
    """Runs a plan; everything it learns goes into `report` and `rows`."""

    def __init__(
        self,
        credentials: AlibabaCloudCredentials,
        spec: CommandSpec,
        control: RateControl,
        owner: Owner,
        report: FleetReport,
        rows: dict[str, InstanceReport],
    ) -> None:
        self.credentials = credentials
        self.spec = spec
        self.control = control
        self.owner = owner
        self.report = report
        self.rows = rows
        self.log = get_run_logger()
        self.run_id = flow_run.get_id() or uuid.uuid4().hex
        self.groups: list[RunReport] = []
        self.ledger = Ledger(total=len(rows), budget=0)
        self.limit_name: str | None = None
        self.limit_slots: int | None = None
        self.progress: Progress | None = None
        self.stopped: str | None = None
        self.holding = 0
        """Instances of this run's groups that hold (or are acquiring) global slots."""

    # ----- the whole run
    async def run(self, plan: Plan) -> None:
        self.ledger = Ledger(total=plan.total, budget=plan.budget)
        self.report.error_budget = plan.budget
        self.limit_slots = await limits.prepare_limit(
            self.control.concurrency_limit, self.control.max_concurrency, self.log
        )
        if self.limit_slots is not None:
            self.limit_name = self.control.concurrency_limit
            self.report.concurrency_limit = self.limit_name
            self.report.concurrency_limit_slots = self.limit_slots
        self.log.info(
            "%s in %s (%s mode); error budget %d (max_errors %s)%s",
            plural(plan.total, "instance"),
            plural(len(plan.batches), "batch", "batches"),
            self.control.mode,
            plan.budget,
            self.control.max_errors,
            f"; at most {self.limit_slots} at once across runs (limit {self.limit_name!r})"
            if self.limit_name
            else "",
        )
        self.progress = Progress(plan.total, PROGRESS_KEY, self.log)
        await self.progress.start(self._note("starting"))
        ended_early: BaseException | None = None
        try:
            for batch in plan.batches:
                if batch.number > 1:
                    self.stopped = await self._between(plan.batches[batch.number - 2], batch)
                    if self.stopped:
                        break
                await self._batch(batch, len(plan.batches))
                self.stopped = self._verdict(batch)
                if self.stopped:
                    break
        except BaseException as exc:
            ended_early = exc
            raise
        finally:
            self.sync()
            if ended_early is not None:
                self.progress.abandon(self._note(f"ended early: {type(ended_early).__name__}"))
            elif self.stopped:
                self.report.stopped_reason = self.stopped
                self.log.error(
                    "Stopped: %s. %s not started: %s",
                    self.stopped,
                    plural(len(self.report.not_started), "instance"),
                    ", ".join(self.report.not_started[:20])
                    + (" …" if len(self.report.not_started) > 20 else ""),
                )
            if ended_early is None:
                self.progress.mark(plan.total)
                await self.progress.close(self._final_note())
            self.report.progress_writes = self.progress.writes

    def sync(self) -> None:
        """The fleet report's invocations and waits from every group so far (also on a
        failure, so unfinished commands can be stopped)."""
        self.report.invocations = [inv for g in self.groups for inv in g.invocations]
        self.report.invoke_ids = [inv.invoke_id for inv in self.report.invocations]
        self.report.waits = [w for g in self.groups for w in g.waits]
        self.report.stopped = [i for g in self.groups for i in g.stopped]
        self.report.command = self.spec.name

    # ----- one batch
    async def _batch(self, batch: Batch, batches: int) -> None:
        width = batch.width
        if self.limit_slots is not None:
            width = min(width, self.limit_slots)
        record = BatchReport(
            number=batch.number,
            instances=batch.size,
            width=width,
            canary=batch.canary,
            started_at=datetime.now(UTC),
        )
        self.report.batches.append(record)
        resource = self._batch_resource(batch, batches)
        emit_event(
            event="runbooks.batch.started",
            resource=resource,
            payload={
                "number": batch.number,
                "of": batches,
                "instances": batch.size,
                "instance_ids": batch.instance_ids[:LISTED_IDS],
                "at_once": width,
                "canary": batch.canary,
            },
        )
        self.log.info(
            "Batch %d of %d%s: %s, %d at once",
            batch.number,
            batches,
            " (canary)" if batch.canary else "",
            plural(batch.size, "instance"),
            width,
        )
        if self.progress:
            self.progress.mark(
                self.ledger.done, self._note(f"batch {batch.number} of {batches} running")
            )
            await self.progress.flush(force=True)
        before = self.ledger.done
        failed_before = len(self.ledger.failed)
        async with command_events(batch.instance_ids) as events:
            await self._window(batch, record, width, events)
        record.finished_at = datetime.now(UTC)
        record.failed = len(self.ledger.failed) - failed_before
        record.succeeded = self.ledger.done - before - record.failed
        remaining = self.ledger.total - self.ledger.done
        budget = self.ledger.budget_left
        self.log.info(
            "Batch %d of %d done in %.1fs: %d succeeded, %d failed. Fleet: %d of %d done, %d "
            "failed, %d remaining; error budget %s",
            batch.number,
            batches,
            record.seconds or 0.0,
            record.succeeded,
            record.failed,
            self.ledger.done,
            self.ledger.total,
            len(self.ledger.failed),
            remaining,
            f"{budget} left of {self.ledger.budget}"
            if budget >= 0
            else f"exceeded ({len(self.ledger.failed)} failed, {self.ledger.budget} allowed)",
        )
        emit_event(
            event="runbooks.batch.finished",
            resource=resource,
            related=[
                {
                    "prefect.resource.id": names.invocation_resource(i),
                    "prefect.resource.role": "invocation",
                }
                for i in record.invoke_ids[:MAX_RELATED]
            ],
            payload={
                "number": batch.number,
                "of": batches,
                "succeeded": record.succeeded,
                "failed": record.failed,
                "fleet_done": self.ledger.done,
                "fleet_failed": len(self.ledger.failed),
                "remaining": remaining,
                "error_budget_left": budget,
                "invoke_ids": record.invoke_ids[:LISTED_IDS],
                "seconds": record.seconds,
            },
        )
        if self.progress:
            self.progress.mark(
                self.ledger.done, self._note(f"batch {batch.number} of {batches} done")
            )
            await self.progress.flush(force=True)

    def _halt(self, batch: Batch) -> bool:
        if self.ledger.exceeded:
            return True
        return batch.canary and any(i in self.ledger.failed for i in batch.instance_ids)

    async def _window(
        self, batch: Batch, record: BatchReport, width: int, events: EventStream
    ) -> None:
        """Start groups while the window has room; as each result settles the room grows."""
        pending = deque(batch.instance_ids)
        running: set[str] = set()
        tasks: set[asyncio.Task[None]] = set()
        wake = asyncio.Event()

        def settled(instance_id: str, result: InvocationRecord) -> None:
            record.last_result_at = datetime.now(UTC)
            running.discard(instance_id)
            self._count(instance_id, _succeeded(result))
            wake.set()

        try:
            while True:
                room = width - len(running)
                if self.limit_slots is not None:
                    # Never ask the limit for slots this run holds itself: that would only
                    # wait out Prefect's Retry-After.
                    room = min(room, self.limit_slots - self.holding)
                if pending and room > 0 and not self._halt(batch):
                    # One RunCommand call per group: if it fails, none of the group started.
                    size = min(room, len(pending), RUN_COMMAND_MAX_INSTANCES)
                    group = [pending.popleft() for _ in range(size)]
                    running.update(group)
                    tasks.add(
                        asyncio.create_task(
                            self._group(group, record, events, settled, running, wake)
                        )
                    )
                    continue
                if not tasks:
                    break
                wake.clear()
                woken = asyncio.create_task(wake.wait())
                done, _ = await asyncio.wait({*tasks, woken}, return_when=asyncio.FIRST_COMPLETED)
                woken.cancel()
                for task in done - {woken}:
                    tasks.discard(task)
                    task.result()
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def _group(
        self,
        group: list[str],
        record: BatchReport,
        events: EventStream,
        settled: Callable[[str, InvocationRecord], None],
        running: set[str],
        wake: asyncio.Event,
    ) -> None:
        report = RunReport(flow=self.report.flow, started_at=datetime.now(UTC))
        self.groups.append(report)
        held = _Held()
        self.holding += len(group)
        try:
            await run_and_collect(
                self.credentials,
                report,
                self.rows,
                group,
                self.spec,
                self.owner,
                events=events,
                on_result=settled,
                while_running=self._slots(group, record, held),
                report_progress=False,  # the fleet's own progress artifact and batch lines
            )
        except Exception as exc:
            if report.invocations or not held.acquired:
                raise
            for instance_id in group:
                row = self.rows[instance_id]
                row.status, row.error = START_FAILED, f"RunCommand failed: {exc}"
            self.log.error(
                "RunCommand failed for %s (%s): %s",
                plural(len(group), "instance"),
                ", ".join(group[:10]) + (" …" if len(group) > 10 else ""),
                exc,
            )
        finally:
            if not held.released:
                self.holding -= len(group)
                held.released = True
            running.difference_update(group)
            wake.set()
        record.invoke_ids += report.invoke_ids
        for wait in report.waits:
            if wait.name.startswith("TaskCompleted"):
                record.by_event += wait.by_event
                record.by_reconciliation += wait.by_reconciliation
            record.reconciliation_rounds += wait.straggler_rounds + wait.deadline_rounds
        now = datetime.now(UTC)
        for instance_id in group:
            if self._count(instance_id, self.rows[instance_id].succeeded):
                record.last_result_at = now

    @asynccontextmanager
    async def _slots(
        self, group: list[str], record: BatchReport, held: _Held
    ) -> AsyncIterator[None]:
        """The group's global slots, from before RunCommand until its last result."""
        try:
            async with limits.slots(self.limit_name, len(group), _uuid(self.run_id), self.log):
                held.acquired = True
                if record.first_command_at is None:
                    record.first_command_at = datetime.now(UTC)
                yield
        finally:
            if not held.released:
                self.holding -= len(group)
                held.released = True

    def _count(self, instance_id: str, ok: bool) -> bool:
        counted = self.ledger.count(instance_id, ok)
        if counted and self.progress is not None:
            self.progress.mark(self.ledger.done)
        return counted

    # ----- between batches
    def _verdict(self, batch: Batch) -> str | None:
        if self.ledger.exceeded:
            return (
                f"the error budget is exceeded after batch {batch.number}: "
                f"{plural(len(self.ledger.failed), 'instance')} failed, "
                f"{self.ledger.budget} allowed "
                f"(max_errors {self.control.max_errors} of {self.ledger.total})"
            )
        failed = [i for i in batch.instance_ids if i in self.ledger.failed]
        if batch.canary and failed:
            return (
                f"the canary batch failed on {len(failed)} of {plural(batch.size, 'instance')} "
                f"({', '.join(failed[:10])})"
            )
        return None

    async def _between(self, done: Batch, upcoming: Batch) -> str | None:
        if self.control.pause_seconds > 0:
            self.log.info(
                "Pausing %.0fs before batch %d", self.control.pause_seconds, upcoming.number
            )
            await asyncio.sleep(self.control.pause_seconds)
        if not self.control.pauses_for_approval_after(done):
            return None
        timeout = self.control.approval_timeout
        self.log.warning(
            "Batch %d done (%d of %d %s, %d failed): waiting up to %.0fs for approval to "
            "start batch %d. Resume the run in the UI (or POST /api/flow_runs/<id>/resume with "
            "run_input) with proceed=true to go on, false to stop",
            done.number,
            self.ledger.done,
            self.ledger.total,
            noun(self.ledger.total, "instance"),
            len(self.ledger.failed),
            timeout,
            upcoming.number,
        )
        try:
            answer = await apause_flow_run(
                wait_for_input=Approval,
                timeout=math.ceil(timeout),
                poll_interval=2,
                key=f"fleet-batch-{upcoming.number}",
            )
        except FlowPauseTimeout:
            return f"no approval within {timeout:.0f}s to start batch {upcoming.number}"
        if answer is None or not answer.proceed:
            note = f" ({answer.note})" if answer is not None and answer.note else ""
            return f"the operator stopped the run before batch {upcoming.number}{note}"
        self.log.info(
            "Approved: starting batch %d%s",
            upcoming.number,
            f" ({answer.note})" if answer.note else "",
        )
        return None

    # ----- what the UI shows
    def _batch_resource(self, batch: Batch, batches: int) -> dict[str, str]:
        return {
            "prefect.resource.id": f"runbooks.batch.{self.run_id}.{batch.number}",
            "prefect.resource.name": f"batch {batch.number} of {batches}",
            "runbooks.batch.number": str(batch.number),
            "runbooks.batch.canary": str(batch.canary).lower(),
        }

    def _note(self, where: str = "") -> str:
        return (
            f"fleet-run: {self.ledger.done} of {self.ledger.total} instances done, "
            f"{len(self.ledger.failed)} failed" + (f" ({where})" if where else "")
        )

    def _final_note(self) -> str:
        ended = f"stopped: {self.stopped}" if self.stopped else "finished"
        return (
            f"fleet-run {ended}: {len(self.ledger.succeeded)} succeeded, "
            f"{len(self.ledger.failed)} failed, {len(self.report.not_started)} not started, "
            f"of {self.ledger.total}"
        )


@dataclass
class _Held:
    acquired: bool = False
    released: bool = False


def _uuid(run_id: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(run_id))
    except ValueError:
        return None
