"""Run a Cloud Assistant command on existing instances chosen by ids or tags, and collect
the results and full outputs: the waits are events, never a polling loop."""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import flow, get_run_logger
from prefect.exceptions import Pause

from alicloud_runbooks import windows
from alicloud_runbooks.blocks import AlibabaCloudCredentials, resolve_credentials
from alicloud_runbooks.events import names
from alicloud_runbooks.report import InstanceReport, RunReport
from alicloud_runbooks.waiter import Owner
from flows.steps import (
    CommandSpec,
    FailurePolicy,
    finish,
    reporting,
    run_and_collect,
    stop_unfinished_commands,
)
from tasks.instances import select_instances
from tasks.reporting import FullOutputs


@flow(name="run-command")
async def run_command(
    command: CommandSpec,
    instance_ids: list[str] | None = None,
    tags: dict[str, str] | None = None,
    on_failure: FailurePolicy = "fail",
    full_outputs: FullOutputs = None,
    credentials: AlibabaCloudCredentials | None = None,
    credentials_block: str | None = None,
    window: windows.EventWindow | None = None,
) -> RunReport:
    """Run `command` on `instance_ids`, or on every running instance carrying all of `tags`,
    and collect the results and outputs. `on_failure` and `full_outputs` as in
    `provision-and-run`. Credentials: `credentials`, else the saved block named
    `credentials_block`, else the environment. `window` (given by an event trigger, e.g. the
    FirstHeartbeat bootstrap): the instances of the window's events, all in one batch.

    Example:
        ```python
        import asyncio
        from flows.run_command import run_command
        from flows.steps import CommandSpec

        report = asyncio.run(run_command(CommandSpec(script="uptime"), tags={"env": "staging"}))
        ```
    """
    credentials = await resolve_credentials(credentials, credentials_block)
    owner = Owner(account_id=credentials.resolve_account_id(), region=credentials.region_id)
    report = RunReport(flow="run-command", started_at=datetime.now(UTC))
    command = command.named("run-command")
    if window is not None and not instance_ids and not tags:
        events = await windows.collect(window)
        instance_ids = windows.resource_ids(events, names.instance_resource(""))
        get_run_logger().info(
            "%d events in the window from %s (%gs): %d instances",
            len(events),
            window.start.isoformat(),
            window.seconds,
            len(instance_ids),
        )
        if not instance_ids:
            raise ValueError("the window has no events: nothing to run on")
    async with reporting(report, "run-command", credentials, full_outputs):
        chosen = select_instances(credentials, instance_ids, tags)
        rows = {i: InstanceReport(instance_id=i) for i in chosen}
        report.instances = list(rows.values())
        if chosen:
            try:
                await run_and_collect(credentials, report, rows, chosen, command, owner)
            except Pause:
                raise  # a durable wait suspended the run
            except BaseException as exc:
                stop_unfinished_commands(
                    credentials, report, f"the run is ending ({type(exc).__name__})"
                )
                raise
    return finish(report, "run-command", on_failure, credentials, full_outputs)
