"""The stack engine: create, update, delete, roll back, continue and cancel, as tasks in
alisim's event loop.

Resources run in dependency order, as many at once as the stack's `Parallelism` allows (0:
no limit), each with its own stack events. A resource that fails stops the operation: the
ones still running are aborted, and the stack fails or rolls back (create: by deleting what
was made; update: by undoing what changed, through ROLLBACK_*). `TimeoutInMinutes` bounds a
create or an update, scaled by `time_scale`. Terminal statuses are announced through
`alisim.ros.notify`. Status reasons follow the one Alibaba documents ("Stack CREATE completed
successfully") and, where it documents none, the Heat wording ROS grew from.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from alisim.ros import notify
from alisim.ros.models import (
    STACK_TYPE,
    OperationError,
    ResourceStatus,
    Stack,
    StackEvent,
    StackResource,
    StackStatus,
)
from alisim.ros.resources import TYPES
from alisim.ros.resources.base import Context, ResourceFailed
from alisim.ros.template import graph
from alisim.ros.template.errors import TemplateError
from alisim.ros.template.functions import Evaluator
from alisim.ros.template.parse import Template

if TYPE_CHECKING:
    from alisim.cloud import Cloud

log = logging.getLogger("alisim.ros")

STATE_CHANGED = "state changed"


class StackFailed(Exception):
    """An operation failed; `reason` is the stack's StatusReason."""

    def __init__(self, reason: str, error: OperationError | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error = error


def pseudo_parameters(cloud: Cloud, stack_id: str, stack_name: str) -> dict[str, Any]:
    settings = cloud.settings
    return {
        "ALIYUN::AccountId": settings.account_id,
        "ALIYUN::Region": settings.region,
        "ALIYUN::StackId": stack_id,
        "ALIYUN::StackName": stack_name,
        "ALIYUN::TenantId": settings.account_id,
    }


class View:
    """The functions' view of a stack's resources (`Resources` protocol)."""

    def __init__(self, template: Template, resources: dict[str, StackResource]) -> None:
        self.template = template
        self.resources = resources

    def _copies(self, name: str) -> list[StackResource] | None:
        spec = self.template.resources[name]
        if spec.count is None:
            found = self.resources.get(name)
            return None if found is None else [found]
        return sorted(
            (r for r in self.resources.values() if r.template_name == name and r.index is not None),
            key=lambda r: r.index or 0,
        )

    def _value(self, resource: StackResource, read: Callable[[StackResource], Any]) -> Any:
        if not resource.exists and resource.status != ResourceStatus.CREATE_IN_PROGRESS:
            raise TemplateError(
                f"The resource {resource.logical_id} is not created (it is {resource.status}).",
            )
        return read(resource)

    def ref(self, name: str) -> Any:
        copies = self._copies(name)
        if copies is None:
            return None
        values = [self._value(r, lambda r: TYPES[r.type].ref(r)) for r in copies]
        return values if self.template.resources[name].count is not None else values[0]

    def attribute(self, name: str, attribute: str) -> Any:
        copies = self._copies(name)
        if copies is None:
            return None
        values = [self._value(r, lambda r: TYPES[r.type].attribute(r, attribute)) for r in copies]
        return values if self.template.resources[name].count is not None else values[0]


def evaluator(
    cloud: Cloud,
    stack: Stack,
    resources: dict[str, StackResource] | None = None,
    template: Template | None = None,
    values: dict[str, Any] | None = None,
) -> Evaluator:
    template = template or stack.template
    values = {
        **(values if values is not None else stack.values),
        **pseudo_parameters(cloud, stack.stack_id, stack.name),
    }
    view = View(template, resources if resources is not None else stack.resources)
    return Evaluator(template, values, region=cloud.settings.region, resources=view)


def expand(
    cloud: Cloud, stack: Stack, template: Template, values: dict[str, Any]
) -> tuple[dict[str, StackResource], dict[str, set[str]]]:
    """The template's resources as the stack holds them: conditions applied, `Count`
    expanded (`Web[0]`, `Web[1]`…), with the dependencies between the copies."""
    ev = Evaluator(
        template,
        {**values, **pseudo_parameters(cloud, stack.stack_id, stack.name)},
        region=cloud.settings.region,
    )
    template_deps = graph.dependencies(template)
    copies: dict[str, list[str]] = {}
    resources: dict[str, StackResource] = {}
    for name in graph.order(template_deps):
        spec = template.resources[name]
        if spec.condition is not None and not ev.condition(spec.condition, f"Resources.{name}"):
            continue
        if spec.count is None:
            resources[name] = StackResource(logical_id=name, spec=spec)
            copies[name] = [name]
            continue
        raw = ev.evaluate(spec.count, f"Resources.{name}.Count")
        try:
            count = int(raw)
        except (TypeError, ValueError):
            raise TemplateError(f"Resources.{name}.Count: {raw!r} is not a number.") from None
        if not 0 <= count <= 300:
            raise TemplateError(f"Resources.{name}.Count must be between 0 and 300, not {count}.")
        copies[name] = []
        for index in range(count):
            logical_id = f"{name}[{index}]"
            resources[logical_id] = StackResource(logical_id=logical_id, spec=spec, index=index)
            copies[name].append(logical_id)
    if len(resources) > 300:
        raise TemplateError(
            f"A stack holds at most 300 resources; this one would have {len(resources)}."
        )
    deps = {
        logical_id: {copy for dep in template_deps[r.template_name] for copy in copies.get(dep, [])}
        for logical_id, r in resources.items()
    }
    return resources, deps


def reverse(deps: dict[str, set[str]], names: set[str]) -> dict[str, set[str]]:
    """For deleting: each resource after everything that depends on it."""
    return {name: {other for other in names if name in deps.get(other, set())} for name in names}


@dataclass
class Undo:
    created: list[StackResource] = field(default_factory=list)
    updated: list[tuple[StackResource, dict[str, Any], dict[str, Any]]] = field(
        default_factory=list
    )
    replaced: list[tuple[StackResource, StackResource]] = field(default_factory=list)


class Engine:
    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud

    # ----- status and events
    def _event(
        self, stack: Stack, logical_id: str, physical_id: str, kind: str, status: str, reason: str
    ) -> None:
        stack.events.append(
            StackEvent(stack.stack_id, stack.name, logical_id, physical_id, kind, status, reason)
        )

    def stack_status(self, stack: Stack, status: StackStatus, reason: str) -> None:
        stack.status = status
        stack.reason = reason
        if status in (StackStatus.UPDATE_IN_PROGRESS,):
            stack.updated_at = time.time()
        self._event(stack, stack.name, stack.stack_id, STACK_TYPE, status, reason)
        if not status.in_progress:
            notify.stack_status_changed(self.cloud, stack)

    def _resource_status(
        self,
        stack: Stack,
        resource: StackResource,
        status: ResourceStatus,
        reason: str = STATE_CHANGED,
    ) -> None:
        resource.status = status
        resource.reason = reason
        if status in (ResourceStatus.CREATE_COMPLETE, ResourceStatus.UPDATE_COMPLETE):
            resource.updated_at = time.time()
        self._event(stack, resource.logical_id, resource.physical_id, resource.type, status, reason)

    # ----- one resource, one operation
    async def _fault(self, stack: Stack, resource: StackResource, operation: str) -> None:
        fault = self.cloud.faults.ros_fault(
            stack=stack.name,
            logical_id=resource.logical_id,
            template_name=resource.template_name,
            resource_type=resource.type,
            operation=operation,
        )
        if fault is None:
            return
        if fault.delay_seconds:
            await asyncio.sleep(self.cloud.settings.scaled(fault.delay_seconds))
        if fault.hang:
            await asyncio.Event().wait()
        if fault.reason is not None:
            raise ResourceFailed(fault.code, fault.reason)

    async def _operate(
        self,
        stack: Stack,
        resource: StackResource,
        action: str,
        work: Callable[[Context], Awaitable[None]],
    ) -> None:
        """Run one resource operation with its IN_PROGRESS / COMPLETE / FAILED events;
        a failure is raised as `StackFailed` carrying the stack's reason."""
        statuses = {
            "CREATE": (
                ResourceStatus.CREATE_IN_PROGRESS,
                ResourceStatus.CREATE_COMPLETE,
                ResourceStatus.CREATE_FAILED,
            ),
            "UPDATE": (
                ResourceStatus.UPDATE_IN_PROGRESS,
                ResourceStatus.UPDATE_COMPLETE,
                ResourceStatus.UPDATE_FAILED,
            ),
            "DELETE": (
                ResourceStatus.DELETE_IN_PROGRESS,
                ResourceStatus.DELETE_COMPLETE,
                ResourceStatus.DELETE_FAILED,
            ),
        }[action]
        self._resource_status(stack, resource, statuses[0])
        ctx = Context(self.cloud, stack, resource)
        try:
            await self._fault(stack, resource, action.lower())
            await work(ctx)
        except asyncio.CancelledError:
            self._resource_status(stack, resource, statuses[2], f"{action} aborted")
            raise
        except (ResourceFailed, TemplateError) as exc:
            code = exc.code
            message = exc.message
        except Exception as exc:
            log.exception("ROS resource %s %s failed inside alisim", resource.logical_id, action)
            code, message = "InternalError", f"alisim failed: {type(exc).__name__}: {exc}"
        else:
            if action == "CREATE":
                resource.created_at = time.time()
            self._resource_status(stack, resource, statuses[1])
            return
        self._resource_status(stack, resource, statuses[2], f"{code}: {message}")
        raise StackFailed(
            f"Resource {action} failed: {code}: resources.{resource.logical_id}: {message}",
            OperationError(
                action, code, message, resource.logical_id, resource.type, stack.request_id
            ),
        )

    async def _create_one(self, stack: Stack, resource: StackResource, ev: Evaluator) -> None:
        async def work(ctx: Context) -> None:
            where = f"Resources.{resource.template_name}.Properties"
            props = ev.with_index(resource.index).evaluate(resource.spec.properties, where)
            resource.properties = props
            await TYPES[resource.type].create(ctx, props)

        await self._operate(stack, resource, "CREATE", work)

    async def _delete_one(self, stack: Stack, resource: StackResource) -> None:
        await self._operate(stack, resource, "DELETE", TYPES[resource.type].delete)

    def _retain(self, stack: Stack, resource: StackResource, why: str) -> None:
        self._resource_status(
            stack,
            resource,
            ResourceStatus.DELETE_COMPLETE,
            f"Resource retained ({why}); it is left in place",
        )

    # ----- running many
    async def _schedule(
        self,
        stack: Stack,
        names: list[str],
        deps: dict[str, set[str]],
        run: Callable[[str], Awaitable[None]],
        *,
        cancellable: bool = False,
    ) -> None:
        """Run `run(name)` for every name after its dependencies (those among `names`),
        `Parallelism` at a time. The first failure stops new starts and aborts the rest;
        with `cancellable`, CancelUpdateStack stops it too (Safe: lets running ones end)."""
        wanted = set(names)
        needs = {n: deps.get(n, set()) & wanted for n in names}
        pending = list(names)
        running: dict[asyncio.Task[None], str] = {}
        done: set[str] = set()
        failure: StackFailed | None = None
        limit = stack.parallelism or len(names) or 1
        cancel = stack.cancel if cancellable else None
        waiter: asyncio.Task[Any] | None = None
        try:
            while True:
                stopping = failure is not None or (cancel is not None and cancel.is_set())
                if not stopping:
                    for name in list(pending):
                        if len(running) >= limit:
                            break
                        if needs[name] <= done:
                            pending.remove(name)
                            running[asyncio.ensure_future(run(name))] = name
                if cancel is not None and cancel.is_set() and stack.cancel_type == "Quick":
                    for task in running:
                        task.cancel()
                if not running:
                    break
                wait_for: set[asyncio.Task[Any]] = set(running)
                if cancel is not None and not cancel.is_set():
                    if waiter is None or waiter.done():
                        waiter = asyncio.ensure_future(cancel.wait())
                    wait_for.add(waiter)
                finished, _ = await asyncio.wait(wait_for, return_when=asyncio.FIRST_COMPLETED)
                for task in finished:
                    if task is waiter:
                        continue
                    name = running.pop(task)
                    if task.cancelled():
                        continue
                    exc = task.exception()
                    if exc is None:
                        done.add(name)
                    elif isinstance(exc, StackFailed):
                        failure = failure or exc
                        for other in running:
                            other.cancel()
                    else:
                        raise exc
        except asyncio.CancelledError:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            raise
        finally:
            if waiter is not None:
                waiter.cancel()
        if failure is not None:
            raise failure
        if cancel is not None and cancel.is_set():
            raise StackFailed("Stack UPDATE cancelled")
        if pending:
            raise StackFailed(f"Resources {sorted(pending)} could not start")

    async def _within_timeout(self, stack: Stack, action: str, work: Awaitable[None]) -> None:
        seconds = self.cloud.settings.scaled(stack.timeout_minutes * 60)
        try:
            async with asyncio.timeout(seconds):
                await work
        except TimeoutError:
            raise StackFailed(
                f"Stack {action} timed out after {stack.timeout_minutes} minutes",
                OperationError(action, "StackTimeout", "Timed out", request_id=stack.request_id),
            ) from None

    async def _delete_all(
        self,
        stack: Stack,
        deps: dict[str, set[str]],
        resources: list[StackResource],
        retain: set[str],
    ) -> None:
        by_id = {r.logical_id: r for r in resources}
        names = [r.logical_id for r in resources]

        async def run(name: str) -> None:
            resource = by_id[name]
            if name in retain or resource.template_name in retain:
                self._retain(stack, resource, "RetainResources")
            elif resource.spec.deletion_policy == "Retain" and stack.status.action == "DELETE":
                self._retain(stack, resource, "DeletionPolicy Retain")
            elif resource.exists:
                await self._delete_one(stack, resource)

        await self._schedule(stack, names, reverse(deps, set(names)), run)

    # ----- create
    async def create(self, stack: Stack, deps: dict[str, set[str]]) -> None:
        """After the caller set CREATE_IN_PROGRESS (as each operation's first status is set
        before the API answers)."""
        await self._create_resources(stack, deps, list(stack.resources))

    async def _create_resources(
        self, stack: Stack, deps: dict[str, set[str]], names: list[str]
    ) -> None:
        ev = evaluator(self.cloud, stack)

        async def run(name: str) -> None:
            await self._create_one(stack, stack.resources[name], ev)

        try:
            await self._within_timeout(stack, "CREATE", self._schedule(stack, names, deps, run))
        except StackFailed as failure:
            stack.operation_error = failure.error
            if stack.disable_rollback:
                self.stack_status(stack, StackStatus.CREATE_FAILED, failure.reason)
                return
            await self._rollback_create(stack, deps, failure)
            return
        stack.operation_error = None
        self.stack_status(stack, StackStatus.CREATE_COMPLETE, "Stack CREATE completed successfully")

    async def _rollback_create(
        self, stack: Stack, deps: dict[str, set[str]], failure: StackFailed
    ) -> None:
        self.stack_status(
            stack,
            StackStatus.CREATE_ROLLBACK_IN_PROGRESS,
            f"Stack CREATE_ROLLBACK started: {failure.reason}",
        )
        existing = [r for r in stack.resources.values() if r.exists]
        try:
            await self._delete_all(stack, deps, existing, set())
        except StackFailed as again:
            stack.operation_error = again.error
            self.stack_status(stack, StackStatus.CREATE_ROLLBACK_FAILED, again.reason)
            return
        self.stack_status(
            stack,
            StackStatus.CREATE_ROLLBACK_COMPLETE,
            "Stack CREATE_ROLLBACK completed successfully",
        )

    async def continue_create(
        self, stack: Stack, deps: dict[str, set[str]], recreate: set[str]
    ) -> None:
        """ContinueCreateStack, Recreate mode: `recreate` and what depends on them are
        deleted and made again, with every resource not yet complete."""
        again = graph.dependents(deps, recreate)
        doomed = [r for n, r in stack.resources.items() if n in again and r.exists]
        try:
            await self._delete_all(stack, deps, doomed, set())
        except StackFailed as failure:
            stack.operation_error = failure.error
            self.stack_status(stack, StackStatus.CREATE_FAILED, failure.reason)
            return
        names = [
            n
            for n, r in stack.resources.items()
            if n in again or r.status != ResourceStatus.CREATE_COMPLETE
        ]
        for name in names:
            resource = stack.resources[name]
            resource.status = ResourceStatus.INIT_COMPLETE
            resource.physical_id, resource.state, resource.attributes = "", None, {}
        await self._create_resources(stack, deps, names)

    def ignore_failed(self, stack: Stack) -> None:
        """ContinueCreateStack, Ignore mode: the failed and uncreated resources leave the
        stack (what a failed one made is left in place), which then counts as created."""
        self.stack_status(stack, StackStatus.CREATE_IN_PROGRESS, "Stack CREATE started")
        stack.resources = {
            n: r for n, r in stack.resources.items() if r.status == ResourceStatus.CREATE_COMPLETE
        }
        stack.operation_error = None
        self.stack_status(stack, StackStatus.CREATE_COMPLETE, "Stack CREATE completed successfully")

    # ----- delete
    async def delete(
        self, stack: Stack, deps: dict[str, set[str]], retain: set[str], retain_all: bool
    ) -> None:
        resources = [r for r in stack.resources.values() if r.exists] + [
            r for r in stack.retired if r.exists
        ]
        if retain_all:
            retain = {r.logical_id for r in resources}
        try:
            await self._delete_all(stack, deps, resources, retain)
        except StackFailed as failure:
            stack.operation_error = failure.error
            self.stack_status(stack, StackStatus.DELETE_FAILED, failure.reason)
            return
        stack.retired.clear()
        self.stack_status(stack, StackStatus.DELETE_COMPLETE, "Stack DELETE completed successfully")
        self.cloud.ros.forget(stack)

    # ----- update
    async def update(
        self,
        stack: Stack,
        template: Template,
        body: str,
        given: dict[str, str],
        values: dict[str, Any],
        deps: dict[str, set[str]],
        new: dict[str, StackResource],
        timeout_minutes: int,
    ) -> None:
        before = (
            stack.template,
            stack.template_body,
            stack.given,
            stack.values,
            stack.resources,
            stack.timeout_minutes,
        )
        old_deps = expanded_deps(self.cloud, stack)
        stack.timeout_minutes = timeout_minutes
        current = {
            name: stack.resources[name]
            if name in stack.resources
            and stack.resources[name].type == r.type
            and stack.resources[name].exists
            else r
            for name, r in new.items()
        }
        for name, resource in current.items():
            if resource is not new[name]:
                resource.spec = new[name].spec
        undo = Undo()
        stack.template, stack.template_body, stack.given, stack.values = (
            template,
            body,
            given,
            values,
        )
        stack.resources = current
        ev = evaluator(self.cloud, stack)

        async def run(name: str) -> None:
            await self._update_one(stack, current, name, ev, undo)

        try:
            await self._within_timeout(
                stack, "UPDATE", self._schedule(stack, list(current), deps, run, cancellable=True)
            )
        except StackFailed as failure:
            stack.operation_error = failure.error
            cancelled = stack.cancel is not None and stack.cancel.is_set()
            if stack.disable_rollback and not cancelled:
                self._keep_failed_update(stack, before[4], undo)
                self.stack_status(stack, StackStatus.UPDATE_FAILED, failure.reason)
                return
            await self._rollback_update(stack, before, deps, undo, failure)
            return
        finally:
            stack.cancel = None
        removed = dropped(before[4], current, undo)
        stale = [old for _, old in undo.replaced] + removed
        try:
            await self._delete_all(
                stack,
                old_deps,
                stale + [r for r in stack.retired if r.exists],
                {r.logical_id for r in removed if r.spec.deletion_policy == "Retain"},
            )
        except StackFailed as failure:
            stack.operation_error = failure.error
            stack.retired = [r for r in stale + stack.retired if r.exists]
            self.stack_status(stack, StackStatus.UPDATE_FAILED, failure.reason)
            return
        stack.retired = []
        stack.operation_error = None
        self.stack_status(stack, StackStatus.UPDATE_COMPLETE, "Stack UPDATE completed successfully")

    async def _update_one(
        self, stack: Stack, current: dict[str, StackResource], name: str, ev: Evaluator, undo: Undo
    ) -> None:
        resource = current[name]
        if not resource.exists:
            await self._create_one(stack, resource, ev)
            undo.created.append(resource)
            return
        kind = TYPES[resource.type]
        where = f"Resources.{resource.template_name}.Properties"
        try:
            props = ev.with_index(resource.index).evaluate(resource.spec.properties, where)
        except TemplateError as exc:
            self._resource_status(
                stack, resource, ResourceStatus.UPDATE_FAILED, f"{exc.code}: {exc.message}"
            )
            raise StackFailed(f"Resource UPDATE failed: {exc.code}: {exc.message}") from None
        if props == resource.properties:
            return
        if kind.replaces(resource.properties, props):
            fresh = StackResource(logical_id=name, spec=resource.spec, index=resource.index)
            current[name] = fresh

            async def replace(ctx: Context) -> None:
                fresh.properties = props
                await kind.create(ctx, props)

            undo.replaced.append((fresh, resource))
            await self._operate(stack, fresh, "UPDATE", replace)
            return
        old_props, old_attributes = resource.properties, dict(resource.attributes)

        async def in_place(ctx: Context) -> None:
            await kind.update(ctx, old_props, props)
            resource.properties = props

        undo.updated.append((resource, old_props, old_attributes))
        await self._operate(stack, resource, "UPDATE", in_place)

    def _keep_failed_update(self, stack: Stack, old: dict[str, StackResource], undo: Undo) -> None:
        """UPDATE_FAILED keeps what was made; what it replaced or dropped stays until the
        stack is deleted or updated again."""
        stack.retired.extend(old_resource for _, old_resource in undo.replaced)
        stack.retired.extend(dropped(old, stack.resources, undo))

    async def _rollback_update(
        self,
        stack: Stack,
        before: tuple[Any, ...],
        new_deps: dict[str, set[str]],
        undo: Undo,
        failure: StackFailed,
    ) -> None:
        self.stack_status(
            stack, StackStatus.ROLLBACK_IN_PROGRESS, f"Stack ROLLBACK started: {failure.reason}"
        )
        made = [r for r in undo.created if r.exists] + [
            new for new, _ in undo.replaced if new.exists
        ]
        (
            stack.template,
            stack.template_body,
            stack.given,
            stack.values,
            stack.resources,
            stack.timeout_minutes,
        ) = before
        try:
            for resource, old_props, old_attributes in reversed(undo.updated):

                async def restore(
                    ctx: Context,
                    resource: StackResource = resource,
                    old_props: dict[str, Any] = old_props,
                    old_attributes: dict[str, Any] = old_attributes,
                ) -> None:
                    await TYPES[resource.type].update(ctx, resource.properties, old_props)
                    resource.properties = old_props
                    resource.attributes = old_attributes

                await self._operate(stack, resource, "UPDATE", restore)
            await self._delete_all(stack, new_deps, made, set())
        except StackFailed as again:
            stack.operation_error = again.error
            self.stack_status(stack, StackStatus.ROLLBACK_FAILED, again.reason)
            return
        self.stack_status(
            stack, StackStatus.ROLLBACK_COMPLETE, "Stack ROLLBACK completed successfully"
        )


def dropped(
    old: dict[str, StackResource], current: dict[str, StackResource], undo: Undo
) -> list[StackResource]:
    """Resources of the previous template the update no longer holds (removed, or of another
    type now) and that still exist; replaced ones are in `undo.replaced`."""
    replaced = {id(old_resource) for _, old_resource in undo.replaced}
    return [
        r
        for name, r in old.items()
        if r.exists and current.get(name) is not r and id(r) not in replaced
    ]


def expanded_deps(cloud: Cloud, stack: Stack) -> dict[str, set[str]]:
    """The dependencies between the stack's current resources."""
    template_deps = graph.dependencies(stack.template)
    by_template: dict[str, list[str]] = {}
    for logical_id, resource in stack.resources.items():
        by_template.setdefault(resource.template_name, []).append(logical_id)
    return {
        logical_id: {
            copy
            for dep in template_deps.get(r.template_name, set())
            for copy in by_template.get(dep, [])
        }
        for logical_id, r in stack.resources.items()
    }
