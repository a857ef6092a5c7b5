"""Deploy a ROS stack, run a command on its instances (the run-and-collect path: events,
outputs in OSS), then keep or delete the stack."""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import flow, get_run_logger
from pydantic import BaseModel

from alicloud_runbooks.blocks import AlibabaCloudCredentials, resolve_credentials
from alicloud_runbooks.report import InstanceReport, RunReport
from alicloud_runbooks.ros_stacks import StackOutcome
from flows.stack_steps import StackReport, conclude, deploy, owner_of, remove
from flows.steps import CommandSpec, FailurePolicy, finish, reporting, run_and_collect
from tasks.reporting import FullOutputs
from tasks.stacks import StackSpec, StackTemplate, instances_of_stack


class StackRunReport(BaseModel):
    stack: StackReport
    run: RunReport
    deleted: StackOutcome | None = None


@flow(name="stack-and-run")
async def stack_and_run(
    command: CommandSpec,
    name: str,
    template: str | None = "templates/fleet.yaml",
    template_body: str | None = None,
    template_url: str | None = None,
    parameters: dict[str, str] | None = None,
    tags: dict[str, str] | None = None,
    timeout_minutes: int = 60,
    instances_output: str | None = "InstanceIds",
    keep_stack: bool = False,
    on_failure: FailurePolicy = "fail",
    full_outputs: FullOutputs = None,
    first_check: float = 300.0,
    credentials: AlibabaCloudCredentials | None = None,
    credentials_block: str | None = None,
) -> StackRunReport:
    """Deploy stack `name` (as `deploy-stack`), take its instances from output
    `instances_output` (None: its ECS Instance/InstanceGroup resources), run `command` on
    them and collect results and outputs, then delete the stack unless `keep_stack`. A stack
    that fails to deploy is deleted too unless `keep_stack`. `on_failure` applies to the
    command's instances, as in `run-command`.

    Example:
        ```python
        import asyncio
        from flows.stack_and_run import stack_and_run
        from flows.steps import CommandSpec

        asyncio.run(stack_and_run(CommandSpec(script="uptime"), name="smoke"))
        ```
    """
    credentials = await resolve_credentials(credentials, credentials_block)
    owner = owner_of(credentials)
    spec = StackSpec(
        name=name,
        template=StackTemplate(path=template, body=template_body, url=template_url),
        parameters=parameters or {},
        tags=tags or {},
        timeout_minutes=timeout_minutes,
    )
    deployed = await deploy(credentials, spec, owner, first_check)
    stack_policy = "fail" if keep_stack else "delete"
    deployed = await conclude(credentials, deployed, stack_policy, owner, first_check, "stack")
    report = RunReport(flow="stack-and-run", started_at=datetime.now(UTC))
    command = command.named("stack-and-run")
    result = StackRunReport(stack=deployed, run=report)
    try:
        async with reporting(report, "stack-and-run", credentials, full_outputs):
            chosen = instances_of_stack(
                credentials, deployed.stack_id, deployed.details, instances_output
            )
            rows = {i: InstanceReport(instance_id=i) for i in chosen}
            report.instances = list(rows.values())
            if chosen:
                await run_and_collect(credentials, report, rows, chosen, command, owner)
        result.run = finish(report, "stack-and-run", on_failure, credentials, full_outputs)
    finally:
        if not keep_stack:
            result.deleted = await remove(credentials, deployed.stack_id, owner, first_check)
            get_run_logger().info("Stack %s deleted: %s", deployed.name, result.deleted.status)
    return result
