"""Create or update a ROS stack, wait for its terminal status by event, publish its outputs
and resources; on a failure, say which resources failed first and why."""

from __future__ import annotations

from prefect import flow

from alicloud_runbooks.blocks import AlibabaCloudCredentials, resolve_credentials
from flows.stack_steps import StackFailurePolicy, StackReport, conclude, deploy, owner_of
from tasks.stacks import StackSpec, StackTemplate


@flow(name="deploy-stack")
async def deploy_stack(
    name: str,
    template: str | None = None,
    template_body: str | None = None,
    template_url: str | None = None,
    parameters: dict[str, str] | None = None,
    tags: dict[str, str] | None = None,
    timeout_minutes: int = 60,
    disable_rollback: bool = False,
    on_failure: StackFailurePolicy = "fail",
    first_check: float = 300.0,
    credentials: AlibabaCloudCredentials | None = None,
    credentials_block: str | None = None,
) -> StackReport:
    """Create stack `name` (or update it if it exists) from `template` (a file in the
    project, e.g. `templates/network.yaml`), `template_body` or `template_url`, and wait for
    its terminal status: by event, with GetStack only if none has come `first_check` seconds
    after the call. `on_failure`: `fail` (the run fails), `continue` (report and return) or
    `delete` (delete the stack, then fail). A retried run reuses the stack it created.

    Example:
        ```python
        import asyncio
        from flows.deploy_stack import deploy_stack

        report = asyncio.run(deploy_stack("web", template="templates/network.yaml"))
        print(report.outcome.status, report.details.outputs)
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
        disable_rollback=disable_rollback,
    )
    report = await deploy(credentials, spec, owner, first_check)
    return await conclude(credentials, report, on_failure, owner, first_check, "deploy-stack")
