"""Run a Cloud Assistant command on existing instances chosen by ids or tags, and collect
the results and full outputs: the waits are events, never a polling loop."""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import flow
from prefect.exceptions import Pause

from alicloud_runbooks.blocks import AlibabaCloudCredentials, resolve_credentials
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


@flow(name="run-command")
async def run_command(
    script: str,
    instance_ids: list[str] | None = None,
    tags: dict[str, str] | None = None,
    command_type: str = "RunShellScript",
    parameters: dict[str, str] | None = None,
    timeout: int = 60,
    output_bucket: str | None = None,
    output_prefix: str = "runbooks",
    on_failure: FailurePolicy = "fail",
    result_grace: float = 30,
    start_timeout: float = 300,
    delivery_timeout: float = 60,
    suspend_after: float | None = 300,
    name: str = "run-command",
    credentials: AlibabaCloudCredentials | None = None,
    credentials_block: str | None = None,
) -> RunReport:
    """`instance_ids`, or every running instance carrying all of `tags`. Deadlines as in
    `provision-and-run`. Credentials: `credentials`, else the saved block named
    `credentials_block`, else the environment.

    Example: `asyncio.run(run_command("uptime", tags={"env": "staging"}))`"""
    credentials = await resolve_credentials(credentials, credentials_block)
    owner = Owner(account_id=credentials.resolve_account_id(), region=credentials.region_id)
    report = RunReport(flow="run-command", started_at=datetime.now(UTC))
    async with reporting(report, "run-command"):
        chosen = select_instances(credentials, instance_ids, tags)
        rows = {i: InstanceReport(instance_id=i) for i in chosen}
        report.instances = list(rows.values())
        if chosen:
            command = CommandSpec(
                script=script,
                name=name,
                command_type=command_type,
                parameters=parameters,
                timeout=timeout,
                output_bucket=output_bucket,
                output_prefix=output_prefix,
                result_grace=result_grace,
                start_timeout=start_timeout,
                delivery_timeout=delivery_timeout,
                suspend_after=suspend_after,
            )
            try:
                await run_and_collect(credentials, report, rows, chosen, command, owner)
            except Pause:
                raise  # a durable wait suspended the run
            except BaseException as exc:
                stop_unfinished_commands(
                    credentials, report, f"the run is ending ({type(exc).__name__})"
                )
                raise
    return finish(report, "run-command", on_failure)
