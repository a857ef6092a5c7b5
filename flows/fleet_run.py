"""Run a Cloud Assistant command across a fleet (by ids, tags or a ROS stack) with rate
control: batches or a sliding window, an error budget, a canary, pauses or approvals between
batches, and a limit shared across runs. Each batch's wait is an event wait."""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import flow, get_run_logger

from alicloud_runbooks.blocks import AlibabaCloudCredentials, resolve_credentials
from alicloud_runbooks.rate_control import RateControl
from alicloud_runbooks.report import NOT_STARTED, FleetReport, InstanceReport
from alicloud_runbooks.text import plural
from alicloud_runbooks.waiter import Owner
from flows.rollout import Rollout
from flows.steps import (
    CommandSpec,
    RunbookFailed,
    publish,
    reporting,
    stop_unfinished_commands,
)
from tasks.instances import select_instances, stack_instances
from tasks.reporting import FullOutputs

DEFAULT_RATE_CONTROL = RateControl()
"""Batches of 10%, whole batches at once, the first failure stops the run (OOS's MaxErrors 0)."""


class RolloutStopped(RunbookFailed):
    """The run stopped before every instance was started (error budget, canary, operator)."""


def _describe_targets(
    instance_ids: list[str] | None, tags: dict[str, str] | None, stack_id: str | None
) -> str:
    chosen = [
        n for n, v in (("instance_ids", instance_ids), ("tags", tags), ("stack_id", stack_id)) if v
    ]
    if len(chosen) != 1:
        raise ValueError(
            "choose the fleet by exactly one of instance_ids, tags or stack_id "
            f"(got {', '.join(chosen) or 'none'})"
        )
    if instance_ids:
        return f"{len(instance_ids)} instance ids"
    if tags:
        return "running instances tagged " + ", ".join(f"{k}={v}" for k, v in tags.items())
    return f"the ECS instances of ROS stack {stack_id}"


@flow(name="fleet-run")
async def fleet_run(
    command: CommandSpec,
    instance_ids: list[str] | None = None,
    tags: dict[str, str] | None = None,
    stack_id: str | None = None,
    rate_control: RateControl = DEFAULT_RATE_CONTROL,
    full_outputs: FullOutputs = None,
    credentials: AlibabaCloudCredentials | None = None,
    credentials_block: str | None = None,
) -> FleetReport:
    """Run `command` across the fleet: `instance_ids`, the running instances carrying all of
    `tags`, or the ECS instances of ROS stack `stack_id`. `rate_control`: mode (batch /
    concurrency), batch size, concurrency, max_errors (counts or percentages), canary, pauses,
    approvals, and `max_concurrency` across runs. The run fails if it stopped early (the
    report says why and which instances were never started); failures within the budget are
    reported and logged. `full_outputs` as in `provision-and-run`.

    Example:
        ```python
        import asyncio
        from alicloud_runbooks.rate_control import RateControl
        from flows.fleet_run import fleet_run
        from flows.steps import CommandSpec

        report = asyncio.run(fleet_run(
            CommandSpec(script="yum -y update"), tags={"env": "staging"},
            rate_control=RateControl(batch_size="20%", max_errors="5%", canary=2),
        ))
        ```
    """
    credentials = await resolve_credentials(credentials, credentials_block)
    owner = Owner(account_id=credentials.resolve_account_id(), region=credentials.region_id)
    report = FleetReport(
        flow="fleet-run",
        started_at=datetime.now(UTC),
        targets=_describe_targets(instance_ids, tags, stack_id),
        rate_control=rate_control.model_dump(mode="json"),
    )
    # Its groups wait side by side: suspending the run from one would cut the others short,
    # so a fleet run waits in process (its batches keep each wait short).
    spec = command.named("fleet-run").model_copy(update={"suspend_after": None})
    async with reporting(report, "fleet-run", credentials, full_outputs):
        if stack_id:
            chosen = stack_instances(credentials, stack_id)
        else:
            chosen = select_instances(credentials, instance_ids, tags)
        if not chosen:
            get_run_logger().warning("No instance to run on: %s is empty", report.targets)
        rows = {i: InstanceReport(instance_id=i, status=NOT_STARTED) for i in chosen}
        report.instances = list(rows.values())
        rollout = Rollout(credentials, spec, rate_control, owner, report, rows)
        try:
            await rollout.run(rate_control.plan(chosen))
        except BaseException as exc:
            # The rollout has put every invocation so far into the report.
            stop_unfinished_commands(
                credentials, report, f"the run is ending ({type(exc).__name__})"
            )
            raise
    return _finish(report, credentials, full_outputs)


def _finish(
    report: FleetReport, credentials: AlibabaCloudCredentials, full_outputs: FullOutputs
) -> FleetReport:
    logger = get_run_logger()
    report.finished_at = datetime.now(UTC)
    publish(report, "fleet-run", credentials, full_outputs)
    total = len(report.instances)
    logger.info(
        "%d of %s succeeded, %d failed, %d not started",
        total - len(report.failed),
        plural(total, "instance"),
        len(report.errors),
        len(report.not_started),
    )
    for row in report.errors[:50]:
        logger.error(
            "%s: %s%s%s",
            row.instance_id,
            row.status,
            f", exit code {row.exit_code}" if row.exit_code is not None else "",
            f": {row.error}" if row.error else "",
        )
    if report.stopped_reason:
        raise RolloutStopped(
            f"Stopped: {report.stopped_reason}. {len(report.errors)} of {total} instances "
            f"failed and {len(report.not_started)} were not started; see the run's artifacts."
        )
    return report
