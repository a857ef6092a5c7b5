"""React to a failed stack (an `acs.ros.Stack.StatusChange` with a failure status): the
resources that failed first and why, as an artifact and a `runbooks.stack.diagnosed` event."""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact
from prefect.events import emit_event

from alicloud_runbooks.blocks import AlibabaCloudCredentials, resolve_credentials
from alicloud_runbooks.events import names
from alicloud_runbooks.ros_stacks import Diagnosis
from tasks.stacks import diagnose_stack as diagnose

DIAGNOSED = "runbooks.stack.diagnosed"
PREFIX = names.stack_resource("")


def _markdown(found: Diagnosis, status: str | None) -> str:
    lines = [
        f"# Stack {found.stack_id}: {status or found.stack_status}",
        "",
        f"Stack reason: {found.stack_reason or ''}",
        "",
        f"**Failed first:** {found.summary()}",
    ]
    return "\n".join(lines)


@flow(name="diagnose-stack")
async def diagnose_stack(
    stack_id: str,
    status: str | None = None,
    credentials: AlibabaCloudCredentials | None = None,
    credentials_block: str | None = None,
) -> Diagnosis:
    """Diagnose stack `stack_id` (its id, or its event resource id `acs.ros.stack.<id>`, as the
    trigger passes it): ListStackEvents → the resources that failed first in its latest
    operation and their reasons; a table artifact, and an event `runbooks.stack.diagnosed`
    related to the stack.

    Example:
        ```python
        import asyncio
        from flows.diagnose_stack import diagnose_stack

        print(asyncio.run(diagnose_stack("4a6c9851-…")).summary())
        ```
    """
    credentials = await resolve_credentials(credentials, credentials_block)
    stack_id = stack_id.removeprefix(PREFIX)
    found = diagnose(credentials, stack_id)
    rows = [
        {
            "when": "failed first" if f in found.first else "failed later",
            "resource": f.logical_id,
            "type": f.resource_type,
            "status": f.status,
            "reason": f.reason,
            "physical id": f.physical_id or "",
        }
        for f in found.first + found.later
    ]
    await acreate_table_artifact(
        key="stack-diagnosis", table=rows, description=f"Why stack {stack_id} failed"
    )
    await acreate_markdown_artifact(
        key="stack-diagnosis-summary", markdown=_markdown(found, status)
    )
    emit_event(
        event=DIAGNOSED,
        resource={
            "prefect.resource.id": f"runbooks.stack-diagnosis.{stack_id}",
            "prefect.resource.name": f"diagnosis of {stack_id}",
        },
        related=[
            {
                "prefect.resource.id": names.stack_resource(stack_id),
                "prefect.resource.role": "stack",
            }
        ],
        payload={
            "status": status or found.stack_status,
            "reason": found.stack_reason,
            "failed_first": [f.model_dump() for f in found.first],
            "failed_later": [f.model_dump() for f in found.later],
            "summary": found.summary(),
        },
    )
    return found
