"""ROS stacks: which terminal status is a success for which operation, the wait for it by
`acs.ros.Stack.StatusChange` events, and the diagnosis of a failure.

The outcome table is the one place a stack status is judged. Others got it wrong: Terraform
waits on ROLLBACK_COMPLETE after an update until its timeout, OOS's CreateStack never stops on
CREATE_ROLLBACK_FAILED, and counting every `*_COMPLETE` as success counts rollbacks too.

The wait follows contract 3 (`alicloud_runbooks.reconciliation`): one subscription, the
stored events read first, GetStack only when no event has come by a check time (a lost
event), then again at growing intervals, never past the stack's own TimeoutInMinutes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from alibabacloud_ros20190910 import models as ros
from alibabacloud_ros20190910.client import Client as RosClient
from prefect.events.schemas.events import Event
from pydantic import BaseModel

from alicloud_runbooks.errors import AlibabaCloudError, cloud_call
from alicloud_runbooks.events import names
from alicloud_runbooks.reconciliation import Answer, StragglerPolicy
from alicloud_runbooks.stream import EventStream
from alicloud_runbooks.times import parse_time
from alicloud_runbooks.waiter import EventWait, Owner, WaitResult, wait_for_events

logger = logging.getLogger(__name__)

Operation = Literal["create", "update", "delete"]
Verdict = Literal["success", "failure"]
NOT_FOUND = "StackNotFound"
STACK_TYPE = "ALIYUN::ROS::Stack"
EVENTS_PAGE = 50


@dataclass(frozen=True)
class Outcomes:
    success: frozenset[str]
    failure: frozenset[str]


OUTCOMES: dict[Operation, Outcomes] = {
    "create": Outcomes(
        success=frozenset({"CREATE_COMPLETE"}),
        failure=frozenset({"CREATE_FAILED", "CREATE_ROLLBACK_COMPLETE", "CREATE_ROLLBACK_FAILED"}),
    ),
    "update": Outcomes(
        success=frozenset({"UPDATE_COMPLETE"}),
        failure=frozenset({"UPDATE_FAILED", "ROLLBACK_COMPLETE", "ROLLBACK_FAILED"}),
    ),
    # A deleted stack is soon unknown to GetStack: StackNotFound is a delete's success too.
    "delete": Outcomes(
        success=frozenset({"DELETE_COMPLETE", NOT_FOUND}),
        failure=frozenset({"DELETE_FAILED"}),
    ),
}


# A stack an update left unchanged (nothing to update) is healthy in these: the template in
# force is the one asked for.
UPDATABLE_OK = frozenset({"CREATE_COMPLETE", "UPDATE_COMPLETE", "ROLLBACK_COMPLETE"})


def outcome(operation: Operation, status: str | None) -> Verdict | None:
    """`success` or `failure` when `status` ends `operation`, else None (still in progress,
    or a status another operation ends in, which this wait must not take for its own)."""
    table = OUTCOMES[operation]
    if status in table.success:
        return "success"
    if status in table.failure:
        return "failure"
    return None


class FailedResource(BaseModel):
    """A resource that failed, from ListStackEvents."""

    logical_id: str
    resource_type: str
    status: str
    reason: str
    physical_id: str | None = None
    time: str | None = None


class Diagnosis(BaseModel):
    stack_id: str
    stack_status: str | None = None
    stack_reason: str | None = None
    first: list[FailedResource] = []
    """The resources that failed first (at the earliest failure time): the causes."""
    later: list[FailedResource] = []
    """Failures after those (a rollback that failed to delete, say)."""

    def summary(self) -> str:
        if not self.first:
            return self.stack_reason or "no failed resource found in the stack's events"
        return "; ".join(f"{f.logical_id} ({f.resource_type}): {f.reason}" for f in self.first)


class StackOutcome(BaseModel):
    """How a stack operation ended, and how the wait learned it."""

    stack_id: str
    operation: Operation
    status: str | None
    reason: str | None = None
    verdict: Verdict | Literal["timeout"]
    settled_by: Literal["event", "reconciliation"] | None = None
    seconds: float
    get_stack_calls: int = 0
    event_id: str | None = None
    reaction_ms: float | None = None
    """From the terminal event's arrival at the relay to the wait settling (event only)."""
    from_source_ms: float | None = None
    """From the event's own time (ROS announcing the status) to the wait settling."""

    @property
    def succeeded(self) -> bool:
        return self.verdict == "success"


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def get_stack(client: RosClient, region: str, stack_id: str) -> dict[str, Any] | None:
    """GetStack as a dict; None for StackNotFound."""
    try:
        with cloud_call(f"GetStack of {stack_id}"):
            body = client.get_stack(ros.GetStackRequest(region_id=region, stack_id=stack_id)).body
    except AlibabaCloudError as exc:
        if exc.code == NOT_FOUND:
            return None
        raise
    return body.to_map()


def stack_wait(
    stack_id: str,
    operation: Operation,
    since: datetime,
    first_check: float,
    limit: float,
    owner: Owner | None = None,
    request_id: str | None = None,
) -> EventWait:
    """The wait spec: StatusChange events of this stack whose status ends `operation`. With
    the action's `request_id`, an event naming another request (the notification's
    `requestId`: the operation that caused it) is an earlier operation's, not this one's."""

    def relevant(event: Event) -> bool:
        return outcome(operation, event.resource.get(names.STACK_STATUS_LABEL)) is not None

    def check(event: Event) -> str | None:
        theirs = event.payload.get("requestId")
        if request_id and theirs and theirs != request_id:
            return f"it is request {theirs}'s, not this {operation}'s ({request_id})"
        return None

    return EventWait(
        name=f"{operation} of stack {stack_id}",
        event=names.STACK_STATUS_CHANGE,
        keys=[stack_id],
        resource_of=names.stack_resource,
        since=since,
        timeout=min(first_check, limit),
        limit=limit,
        owner=owner,
        relevant=relevant,
        check=check,
        stragglers=StragglerPolicy(rounds=0),
        watch=None,
    )


async def wait_for_stack(
    client: RosClient,
    region: str,
    stack_id: str,
    operation: Operation,
    started_at: datetime,
    timeout_minutes: int = 60,
    *,
    since: datetime | None = None,
    first_check: float = 300.0,
    recheck_every: float = 60.0,
    grace: float = 60.0,
    stream: EventStream | None = None,
    owner: Owner | None = None,
    log: logging.Logger | logging.LoggerAdapter | None = None,
    run_wait: Callable[..., Any] | None = None,
    request_id: str | None = None,
) -> tuple[StackOutcome, WaitResult]:
    """Wait for `operation`'s terminal status of `stack_id`.

    An event settles it with no API call. Where none has come `first_check` seconds after
    the action, one GetStack asks (a lost event costs that call); a stack still in progress
    is asked again every `recheck_every` seconds, until TimeoutInMinutes (plus `grace`)
    after the action, when the verdict is `timeout`. `since`: the oldest stored event that
    may count (a create's events are the stack's own: a retried run finds its first
    attempt's; an update's or a delete's only from the action on).
    """
    log = log or logger
    started_at = _aware(started_at)
    calls = 0

    async def reconcile(keys: list[str]) -> dict[str, Answer]:
        nonlocal calls
        answers: dict[str, Answer] = {}
        for key in keys:
            calls += 1
            found = await asyncio.to_thread(get_stack, client, region, key)
            status = found.get("Status") if found is not None else NOT_FOUND
            data = found or {"StackId": key, "Status": NOT_FOUND}
            if outcome(operation, status) is not None:
                answers[key] = Answer(data=data, status=status)
            else:
                later = datetime.now(UTC) + timedelta(seconds=recheck_every)
                answers[key] = Answer(data=data, final=False, recheck_at=later, status=status)
        return answers

    limit = timeout_minutes * 60 + grace
    spec = stack_wait(
        stack_id, operation, since or started_at, first_check, limit, owner, request_id
    )
    spec.origin = started_at
    runner = run_wait or (lambda s, r, st: wait_for_events(s, r, log=log, stream=st))
    result: WaitResult = await runner(spec, reconcile, stream)
    seconds = round((datetime.now(UTC) - started_at).total_seconds(), 2)
    settled = result.settled.get(stack_id)
    if settled is None:
        last = result.last_known.get(stack_id) or {}
        why = result.reconcile_error or f"no terminal status within {timeout_minutes} min"
        return (
            StackOutcome(
                stack_id=stack_id,
                operation=operation,
                status=last.get("Status"),
                reason=f"{why}; last seen {last.get('Status') or 'nothing'}",
                verdict="timeout",
                seconds=seconds,
                get_stack_calls=calls,
            ),
            result,
        )
    if settled.by == "event":
        status = settled.data.get("status")
        reason = settled.data.get("statusReason") or settled.data.get("StatusReason")
        status = status or settled.data.get("Status")
    else:
        status = settled.data.get("Status")
        reason = settled.data.get("StatusReason")
    reaction = None
    if settled.by == "event" and settled.relayed_at is not None:
        reaction = (settled.settled_at - settled.relayed_at).total_seconds() * 1000
    verdict = outcome(operation, status) or "failure"
    return (
        StackOutcome(
            stack_id=stack_id,
            operation=operation,
            status=status,
            reason=reason,
            verdict=verdict,
            settled_by=settled.by,
            seconds=seconds,
            get_stack_calls=calls,
            event_id=settled.event_id,
            reaction_ms=reaction,
            from_source_ms=settled.reaction_ms,
        ),
        result,
    )


def list_events(client: RosClient, region: str, stack_id: str) -> list[dict[str, Any]]:
    """Every event of the stack, oldest first (the API pages newest first, 50 at most)."""
    found: list[dict[str, Any]] = []
    page = 1
    while True:
        request = ros.ListStackEventsRequest(
            region_id=region, stack_id=stack_id, page_number=page, page_size=EVENTS_PAGE
        )
        with cloud_call(f"ListStackEvents of {stack_id}"):
            body = client.list_stack_events(request).body
        found += [e.to_map() for e in body.events or []]
        if page * EVENTS_PAGE >= (body.total_count or 0) or not body.events:
            return list(reversed(found))
        page += 1


OPERATION_STARTS = frozenset({"CREATE_IN_PROGRESS", "UPDATE_IN_PROGRESS", "DELETE_IN_PROGRESS"})


def latest_operation(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events (oldest first) from the stack's last operation start on: an earlier
    operation's failures are not this one's causes."""
    starts = [
        i
        for i, e in enumerate(events)
        if e.get("ResourceType") == STACK_TYPE and e.get("Status") in OPERATION_STARTS
    ]
    return events[starts[-1] :] if starts else events


def diagnose_events(
    stack_id: str,
    events: list[dict[str, Any]],
    since: datetime | None = None,
    stack_status: str | None = None,
    stack_reason: str | None = None,
) -> Diagnosis:
    """The failed resources among `events` (oldest first), from `since` on (whole seconds,
    as the API gives them). The causes are those that failed before the stack itself
    reacted (its next own event: a rollback starting, or its failure); what fails after
    (a rollback that cannot delete) comes later. Times are whole seconds, so the order of
    the events decides, and the earliest failure time only where the stack says nothing."""
    floor = _aware(since).replace(microsecond=0) if since else None
    events = latest_operation(events)
    failed: list[tuple[FailedResource, bool]] = []
    seen: set[tuple[str, str]] = set()
    reacted = False
    for event in events:
        when = parse_time(event.get("CreateTime"))
        if floor is not None and when is not None and when < floor:
            continue
        status = event.get("Status") or ""
        if event.get("ResourceType") == STACK_TYPE:
            reacted = reacted or bool(failed)
            continue
        if not status.endswith("_FAILED"):
            continue
        key = (event.get("LogicalResourceId") or "", status)
        if key in seen:
            continue
        seen.add(key)
        found = FailedResource(
            logical_id=key[0],
            resource_type=event.get("ResourceType") or "",
            status=status,
            reason=event.get("StatusReason") or "",
            physical_id=event.get("PhysicalResourceId") or None,
            time=event.get("CreateTime"),
        )
        failed.append((found, not reacted))
    base = {"stack_id": stack_id, "stack_status": stack_status, "stack_reason": stack_reason}
    if not failed:
        return Diagnosis(**base)
    if all(first for _, first in failed):  # the stack said nothing in between
        earliest = min((f.time or "") for f, _ in failed)
        failed = [(f, (f.time or "") == earliest) for f, _ in failed]
    return Diagnosis(
        **base,
        first=[f for f, first in failed if first],
        later=[f for f, first in failed if not first],
    )


def diagnose(
    client: RosClient, region: str, stack_id: str, since: datetime | None = None
) -> Diagnosis:
    """ListStackEvents (and one GetStack for the stack's own reason) → the failure's causes."""
    stack = get_stack(client, region, stack_id) or {}
    return diagnose_events(
        stack_id,
        list_events(client, region, stack_id),
        since,
        stack.get("Status"),
        stack.get("StatusReason"),
    )
