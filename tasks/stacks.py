"""ROS stack steps: create or update (decided by name), delete, wait by event, outputs and
resources, instances, diagnosis. The judging and the waiting live in
`alicloud_runbooks.ros_stacks`; these tasks make the calls and log what they did."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from alibabacloud_ros20190910 import models as ros
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from pydantic import BaseModel, Field, model_validator

from alicloud_runbooks import ros_stacks
from alicloud_runbooks.blocks import AlibabaCloudCredentials
from alicloud_runbooks.errors import AlibabaCloudError, call, cloud_call
from alicloud_runbooks.events import names
from alicloud_runbooks.ros_stacks import Diagnosis, Operation, StackOutcome
from alicloud_runbooks.stream import EventStream
from alicloud_runbooks.times import parse_time
from alicloud_runbooks.waiter import Owner
from tasks.instances import stack_instances

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# A create's terminal event is its stack's own (the id is new): a retried run finds its first
# attempt's this far back. An update's or a delete's count only from the call on, less this
# much clock difference between the flow's machine and the relay's.
CREATE_LOOKBACK = timedelta(hours=1)
CLOCK_SKEW = timedelta(seconds=1)


class StackTemplate(BaseModel):
    """Exactly one of: a file in the project (`templates/…`), a body, or a URL (OSS/HTTP)."""

    path: str | None = None
    body: str | None = None
    url: str | None = None

    @model_validator(mode="after")
    def _one(self) -> StackTemplate:
        given = [n for n in ("path", "body", "url") if getattr(self, n)]
        if len(given) != 1:
            raise ValueError(
                f"give the stack template as exactly one of path, body or url (got "
                f"{', '.join(given) or 'none'})"
            )
        return self

    def request_fields(self) -> dict[str, str]:
        """`TemplateBody` (a file read here, or the body) or `TemplateURL`."""
        if self.url:
            return {"template_url": self.url}
        if self.body:
            return {"template_body": self.body}
        assert self.path is not None
        file = Path(self.path)
        if not file.is_absolute():
            file = PROJECT_ROOT / file
        if not file.is_file():
            raise ValueError(
                f"stack template file {self.path!r} does not exist (looked for {file}); "
                "give a path in the project, e.g. templates/network.yaml"
            )
        return {"template_body": file.read_text(encoding="utf-8")}


class StackSpec(BaseModel):
    """What a stack should be: its name, template, parameters and options."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,254}$")
    template: StackTemplate
    parameters: dict[str, str] = {}
    tags: dict[str, str] = {}
    timeout_minutes: int = Field(default=60, ge=10, le=1440)
    disable_rollback: bool = False


class StackAction(BaseModel):
    """What was asked of ROS, and from when its outcome counts."""

    stack_id: str
    name: str
    operation: Operation | Literal["none"]
    """`none`: an update with nothing to change (the stack stays as it is)."""
    started_at: datetime
    since: datetime
    timeout_minutes: int = 60
    status: str | None = None
    """Known at once: for `none`, the stack's status as it stays; for a delete of a stack
    already gone, StackNotFound."""
    reused: bool = False
    """The stack this flow run had created on an earlier attempt (its ClientToken)."""
    request_id: str | None = None
    """An update's or a delete's request id: its events name it, an earlier one's do not."""


def client_token(operation: str, name: str) -> str:
    """The same for every attempt of one flow run, so a retried CreateStack returns the
    first attempt's stack instead of a second one (ROS's ClientToken: ≤64, [A-Za-z0-9_-])."""
    context = FlowRunContext.get()
    run = str(context.flow_run.id) if context and context.flow_run else str(uuid.uuid4())
    digest = hashlib.sha256(f"{run}:{operation}:{name}".encode()).hexdigest()[:40]
    return f"rb-{operation}-{digest}"


def _find(credentials: AlibabaCloudCredentials, name: str) -> Any | None:
    client = credentials.ros_client()
    request = ros.ListStacksRequest(region_id=credentials.region_id, stack_name=[name])
    body = call(f"ListStacks named {name}", lambda: client.list_stacks(request).body)
    for stack in body.stacks or []:
        if stack.stack_name == name and stack.status != "DELETE_COMPLETE":
            return stack
    return None


def _create(credentials: AlibabaCloudCredentials, spec: StackSpec, template: dict[str, str]) -> str:
    request = ros.CreateStackRequest(
        region_id=credentials.region_id,
        stack_name=spec.name,
        parameters=[
            ros.CreateStackRequestParameters(parameter_key=k, parameter_value=v)
            for k, v in spec.parameters.items()
        ]
        or None,
        tags=[ros.CreateStackRequestTags(key=k, value=v) for k, v in spec.tags.items()] or None,
        timeout_in_minutes=spec.timeout_minutes,
        disable_rollback=spec.disable_rollback,
        client_token=client_token("create", spec.name),
        **template,
    )
    client = credentials.ros_client()
    with cloud_call(f"CreateStack {spec.name}"):
        return client.create_stack(request).body.stack_id


def _update(
    credentials: AlibabaCloudCredentials, spec: StackSpec, stack_id: str, template: dict[str, str]
) -> str:
    request = ros.UpdateStackRequest(
        region_id=credentials.region_id,
        stack_id=stack_id,
        parameters=[
            ros.UpdateStackRequestParameters(parameter_key=k, parameter_value=v)
            for k, v in spec.parameters.items()
        ]
        or None,
        tags=[ros.UpdateStackRequestTags(key=k, value=v) for k, v in spec.tags.items()] or None,
        timeout_in_minutes=spec.timeout_minutes,
        client_token=client_token("update", spec.name),
        **template,
    )
    client = credentials.ros_client()
    with cloud_call(f"UpdateStack {spec.name}"):
        return client.update_stack(request).body.request_id


@task(name="create-or-update-stack", cache_policy=NO_CACHE)
def create_or_update_stack(credentials: AlibabaCloudCredentials, spec: StackSpec) -> StackAction:
    """CreateStack if no stack has the name, else UpdateStack; with this flow run's
    ClientToken, so a retried run finds the stack its first attempt created. A stack of the
    name that another run is creating, or one left by a failed create (not updatable), is a
    clear error.

    Example (inside a flow):
        ```python
        spec = StackSpec(name="web", template=StackTemplate(path="templates/network.yaml"))
        action = create_or_update_stack(credentials, spec)
        print(action.operation, action.stack_id)
        ```
    """
    logger = get_run_logger()
    template = spec.template.request_fields()
    now = datetime.now(UTC)
    existing = _find(credentials, spec.name)
    base = {"name": spec.name, "started_at": now, "timeout_minutes": spec.timeout_minutes}
    if existing is None or (existing.status or "").startswith("CREATE_"):
        try:
            stack_id = _create(credentials, spec, template)
        except AlibabaCloudError as exc:
            if exc.code != "StackExists" or existing is None:
                raise
            stack_id = None
        if stack_id is not None:
            reused = existing is not None and existing.stack_id == stack_id
            logger.info(
                "%s stack %s (%s)",
                "Reusing this run's" if reused else "Creating",
                spec.name,
                stack_id,
            )
            return StackAction(
                stack_id=stack_id,
                operation="create",
                since=now - CREATE_LOOKBACK,
                reused=reused,
                **base,
            )
        assert existing is not None
        if existing.status != "CREATE_COMPLETE":
            busy = existing.status == "CREATE_IN_PROGRESS"
            raise ValueError(
                f"stack name {spec.name!r} is in use by stack {existing.stack_id} "
                f"({existing.status}), "
                + (
                    "being created by another run: choose another name or wait for it"
                    if busy
                    else "a failed create that cannot be updated: delete it first"
                )
            )
    assert existing is not None
    if existing.status in ("UPDATE_IN_PROGRESS", "ROLLBACK_IN_PROGRESS"):
        # This run's own update, from an attempt that died: UpdateStack with the same
        # ClientToken answers as the first time, where another's would be refused as busy.
        # Its events name the first call's request: the wait counts them from the
        # update's start (the stack's UpdateTime) instead.
        try:
            _update(credentials, spec, existing.stack_id, template)
        except AlibabaCloudError:
            pass
        else:
            began = parse_time(existing.update_time) or now
            logger.info("Reusing this run's update of stack %s", spec.name)
            return StackAction(
                stack_id=existing.stack_id,
                operation="update",
                since=began - CLOCK_SKEW,
                reused=True,
                **base,
            )
    if (existing.status or "").endswith("_IN_PROGRESS"):
        raise ValueError(
            f"stack {spec.name!r} ({existing.stack_id}) is busy ({existing.status}) with "
            "another operation: wait for it to finish"
        )
    try:
        request_id = _update(credentials, spec, existing.stack_id, template)
    except AlibabaCloudError as exc:
        if exc.code != "NotSupported":
            raise
        logger.info("Stack %s: nothing to update (%s)", spec.name, exc.message)
        return StackAction(
            stack_id=existing.stack_id,
            operation="none",
            since=now,
            status=existing.status,
            **base,
        )
    logger.info("Updating stack %s (%s)", spec.name, existing.stack_id)
    return StackAction(
        stack_id=existing.stack_id,
        operation="update",
        since=now - CLOCK_SKEW,
        request_id=request_id,
        **base,
    )


@task(name="delete-stack", cache_policy=NO_CACHE)
def delete_stack(credentials: AlibabaCloudCredentials, stack_id: str) -> StackAction:
    """DeleteStack. A stack already gone is no error: the wait then settles at once.

    Example (inside a flow):
        ```python
        action = delete_stack(credentials, "4a6c9851-…")
        ```
    """
    now = datetime.now(UTC)
    client = credentials.ros_client()
    request = ros.DeleteStackRequest(region_id=credentials.region_id, stack_id=stack_id)
    request_id = None
    try:
        with cloud_call(f"DeleteStack {stack_id}"):
            request_id = client.delete_stack(request).body.request_id
    except AlibabaCloudError as exc:
        if exc.code != ros_stacks.NOT_FOUND:
            raise
        get_run_logger().info("Stack %s is already gone", stack_id)
        return StackAction(
            stack_id=stack_id,
            name=stack_id,
            operation="delete",
            started_at=now,
            since=now,
            status=ros_stacks.NOT_FOUND,
        )
    return StackAction(
        stack_id=stack_id,
        name=stack_id,
        operation="delete",
        started_at=now,
        since=now - CLOCK_SKEW,
        request_id=request_id,
    )


def stack_events() -> EventStream:
    """The subscription to open before the action (narrowed to the stack once its id is
    known; events before that are read from the store)."""
    return EventStream([names.STACK_STATUS_CHANGE], get_run_logger())


@task(name="wait-for-stack", cache_policy=NO_CACHE)
async def wait_for_stack(
    credentials: AlibabaCloudCredentials,
    action: StackAction,
    stream: EventStream | None = None,
    owner: Owner | None = None,
    first_check: float = 300.0,
    recheck_every: float = 60.0,
) -> StackOutcome:
    """The operation's terminal status, by `acs.ros.Stack.StatusChange` (GetStack only if no
    event has come `first_check` seconds after the action; see `ros_stacks.wait_for_stack`).

    Example (inside a flow):
        ```python
        outcome = await wait_for_stack(credentials, create_or_update_stack(credentials, spec))
        print(outcome.verdict, outcome.status, outcome.settled_by)
        ```
    """
    logger = get_run_logger()
    if action.operation == "delete" and action.status == ros_stacks.NOT_FOUND:
        return StackOutcome(
            stack_id=action.stack_id,
            operation="delete",
            status=action.status,
            reason="the stack was already gone",
            verdict="success",
            seconds=0.0,
        )
    if action.operation == "none":
        return StackOutcome(
            stack_id=action.stack_id,
            operation="update",
            status=action.status,
            reason="nothing to update",
            verdict="success" if action.status in ros_stacks.UPDATABLE_OK else "failure",
            seconds=0.0,
        )
    if stream is not None:
        stream.narrow([names.stack_resource(action.stack_id)])
    outcome, _ = await ros_stacks.wait_for_stack(
        credentials.ros_client(),
        credentials.region_id,
        action.stack_id,
        action.operation,
        action.started_at,
        action.timeout_minutes,
        since=action.since,
        first_check=first_check,
        recheck_every=recheck_every,
        stream=stream,
        owner=owner,
        log=logger,
        request_id=action.request_id,
    )
    log = logger.info if outcome.succeeded else logger.error
    log(
        "Stack %s %s: %s (%s) after %.1fs, settled by %s, %d GetStack call%s",
        action.name,
        action.operation,
        outcome.status,
        outcome.reason,
        outcome.seconds,
        outcome.settled_by or "nothing",
        outcome.get_stack_calls,
        "" if outcome.get_stack_calls == 1 else "s",
    )
    return outcome


class StackDetails(BaseModel):
    outputs: dict[str, Any] = {}
    resources: list[dict[str, Any]] = []
    status: str | None = None
    reason: str | None = None


@task(name="stack-details", cache_policy=NO_CACHE)
def stack_details(credentials: AlibabaCloudCredentials, stack_id: str) -> StackDetails:
    """GetStack's outputs and ListStackResources' resources (two calls).

    Example (inside a flow):
        ```python
        details = stack_details(credentials, "4a6c9851-…")
        print(details.outputs["InstanceIds"])
        ```
    """
    client = credentials.ros_client()
    region = credentials.region_id
    stack = ros_stacks.get_stack(client, region, stack_id)
    if stack is None:
        return StackDetails(status=ros_stacks.NOT_FOUND)
    request = ros.ListStackResourcesRequest(region_id=region, stack_id=stack_id)
    body = call("ListStackResources", lambda: client.list_stack_resources(request).body)
    return StackDetails(
        outputs={o.get("OutputKey"): o.get("OutputValue") for o in stack.get("Outputs") or []},
        resources=[r.to_map() for r in body.resources or []],
        status=stack.get("Status"),
        reason=stack.get("StatusReason"),
    )


def _as_ids(value: Any) -> list[str]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            value = [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value or []]


def instances_of_stack(
    credentials: AlibabaCloudCredentials,
    stack_id: str,
    details: StackDetails | None = None,
    output: str | None = None,
) -> list[str]:
    """The stack's instances: from output `output` (a list, a JSON list or comma-separated
    ids) when given, else its Instance and InstanceGroup resources."""
    if output:
        details = details or stack_details(credentials, stack_id)
        if output not in details.outputs:
            raise ValueError(
                f"stack {stack_id} has no output {output!r} (it has: "
                f"{', '.join(sorted(details.outputs)) or 'none'})"
            )
        return _as_ids(details.outputs[output])
    return stack_instances(credentials, stack_id)


@task(name="diagnose-stack-failure", cache_policy=NO_CACHE)
def diagnose_stack(
    credentials: AlibabaCloudCredentials, stack_id: str, since: datetime | None = None
) -> Diagnosis:
    """ListStackEvents → the resources that failed first and their reasons.

    Example (inside a flow):
        ```python
        print(diagnose_stack(credentials, "4a6c9851-…").summary())
        ```
    """
    found = ros_stacks.diagnose(credentials.ros_client(), credentials.region_id, stack_id, since)
    get_run_logger().info("Stack %s: %s", stack_id, found.summary())
    return found
