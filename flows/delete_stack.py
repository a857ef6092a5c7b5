"""Delete a ROS stack and wait for it to be gone, by event."""

from __future__ import annotations

from prefect import flow, get_run_logger

from alicloud_runbooks.blocks import AlibabaCloudCredentials, resolve_credentials
from alicloud_runbooks.ros_stacks import StackOutcome
from flows.stack_steps import StackFailed, owner_of, remove
from tasks.stacks import diagnose_stack


@flow(name="delete-stack")
async def delete_stack(
    stack_id: str,
    first_check: float = 300.0,
    credentials: AlibabaCloudCredentials | None = None,
    credentials_block: str | None = None,
) -> StackOutcome:
    """Delete stack `stack_id` and wait for DELETE_COMPLETE (or StackNotFound). A
    DELETE_FAILED run fails, naming the resources that could not be deleted.

    Example:
        ```python
        import asyncio
        from flows.delete_stack import delete_stack

        asyncio.run(delete_stack("4a6c9851-…"))
        ```
    """
    credentials = await resolve_credentials(credentials, credentials_block)
    started = await remove(credentials, stack_id, owner_of(credentials), first_check)
    if started.succeeded:
        get_run_logger().info("Stack %s deleted (%s)", stack_id, started.status)
        return started
    why = diagnose_stack(credentials, stack_id)
    raise StackFailed(
        f"stack {stack_id} delete ended {started.verdict}: {started.status} "
        f"({started.reason}). Failed first: {why.summary()}"
    )
