"""Cloud Assistant knowledge the runbooks need: API limits, final statuses, the agent version
rules for events, the three waits (FirstHeartbeat, TaskCompleted, OutputDelivered), which events
belong to a run, and the batched calls that answer for a missing event
(DescribeCloudAssistantStatus, DescribeInvocations) or stop a command (StopInvocation)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from alibabacloud_ecs20140526 import models as ecs
from alibabacloud_ecs20140526.client import Client as EcsClient
from prefect.events.schemas.events import Event
from pydantic import BaseModel, Field

from alicloud_runbooks.errors import call, is_transient
from alicloud_runbooks.events import names
from alicloud_runbooks.reconciliation import Answer, RetryPolicy, StragglerPolicy
from alicloud_runbooks.times import parse_time
from alicloud_runbooks.waiter import EventWait, Owner, Settlement

RUN_COMMAND_MAX_INSTANCES = 100
STATUS_MAX_INSTANCES = 50
RESULTS_PAGE_SIZE = 50
INVOCATIONS_PAGE_SIZE = 50
INLINE_OUTPUT_LIMIT = 24 * 1024
INVOCATION_GROUP_TAG = "runbooks:invocation-group"

FINAL_INVOCATION_STATUSES = frozenset(
    {"Success", "Failed", "Error", "Timeout", "Cancelled", "Terminated", "Aborted", "Invalid"}
)
FINAL_DELIVERY_STATUSES = frozenset({"Finished", "Failed"})

# "The Cloud Assistant Agent version must be later than …" (reference/cloud-assistant-events.txt)
FIRST_HEARTBEAT_MIN = {"Linux": "1.0.2.569", "Windows": "1.0.0.149"}
OUTPUT_DELIVERY_MIN = {"Linux": "2.2.4.1007", "Windows": "2.1.4.1007"}

RECONCILE_RETRY = RetryPolicy(retryable=is_transient)

T = TypeVar("T")


def chunks(items: Sequence[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".") if p.isdigit())


def first_heartbeat_rule(os_type: str, version: str | None) -> str | None:
    """Why this agent never sends FirstHeartbeat, or None if it does."""
    floor = FIRST_HEARTBEAT_MIN.get(os_type.capitalize(), FIRST_HEARTBEAT_MIN["Linux"])
    if version and _version(version) > _version(floor):
        return None
    return (
        f"Cloud Assistant agent {version or 'unknown'} never sends FirstHeartbeat: "
        f"{os_type.capitalize()} agents must be later than {floor}. Update the agent "
        "(or use a newer image) so runbooks can react to it"
    )


class Invocation(BaseModel):
    """One RunCommand call: its ids, its instances, and the tag that finds its whole step."""

    invoke_id: str
    command_id: str | None = None
    instance_ids: list[str]
    started_at: datetime
    group: str | None = Field(
        default=None, description=f"the value of the {INVOCATION_GROUP_TAG} tag"
    )


class InvocationRecord(BaseModel):
    """What one instance did in one invocation, from its events or the Describe APIs."""

    instance_id: str
    invoke_id: str
    status: str
    exit_code: int | None = None
    start_time: str | None = None
    finish_time: str | None = None
    error_code: str | None = None
    error_info: str | None = None
    output: str | None = None
    dropped: int = 0
    oss_status: str | None = None
    oss_uri: str | None = None
    oss_error: str | None = None

    @property
    def final(self) -> bool:
        return self.status in FINAL_INVOCATION_STATUSES

    @staticmethod
    def _oss_error(code: str | None, info: str | None) -> str | None:
        return f"{code}: {info}" if code else None

    @classmethod
    def from_result(
        cls, r: ecs.DescribeInvocationResultsResponseBodyInvocationInvocationResultsInvocationResult
    ) -> InvocationRecord:
        output = base64.b64decode(r.output).decode("utf-8", "replace") if r.output else None
        return cls(
            instance_id=r.instance_id,
            invoke_id=r.invoke_id,
            status=r.invocation_status,
            exit_code=r.exit_code,
            start_time=r.start_time,
            finish_time=r.finished_time,
            error_code=r.error_code or None,
            error_info=r.error_info or None,
            output=output,
            dropped=r.dropped or 0,
            oss_status=r.oss_output_status or None,
            oss_uri=r.oss_output_uri or None,
            oss_error=cls._oss_error(r.oss_output_error_code, r.oss_output_error_info),
        )

    @classmethod
    def from_invoke_instance(
        cls,
        invoke_id: str,
        r: ecs.DescribeInvocationsResponseBodyInvocationsInvocationInvokeInstancesInvokeInstance,
    ) -> InvocationRecord:
        final = r.invocation_status in FINAL_INVOCATION_STATUSES
        return cls(
            instance_id=r.instance_id,
            invoke_id=invoke_id,
            status=r.invocation_status,
            # An unfinished command has no exit code, whatever the API puts there.
            exit_code=r.exit_code if final else None,
            start_time=r.start_time or None,
            finish_time=r.finish_time or None,
            error_code=r.error_code or None,
            error_info=r.error_info or None,
            dropped=r.dropped or 0,
            oss_status=r.oss_output_status or None,
            oss_uri=r.oss_output_uri or None,
            oss_error=cls._oss_error(r.oss_output_error_code, r.oss_output_error_info),
        )

    @classmethod
    def from_event(cls, data: Mapping[str, object]) -> InvocationRecord:
        exit_code = data.get("exitCode")
        error_code = data.get("errorCode")
        return cls(
            instance_id=str(data["instanceId"]),
            invoke_id=str(data["invokeId"]),
            status=str(data["invocationStatus"]),
            exit_code=int(str(exit_code)) if str(exit_code or "").lstrip("-").isdigit() else None,
            start_time=data.get("startTime"),  # type: ignore[arg-type]
            finish_time=data.get("finishTime"),  # type: ignore[arg-type]
            error_code=None if error_code in (None, "", "0") else str(error_code),
            error_info=data.get("errorDesc") or None,  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class CommandClock:
    """When a command's result is due, from what the API says about it.

    Deadlines run from when the command *started*, not from RunCommand: a command that waits
    for its agent or for a free slot is not late. It may wait `start_timeout` seconds to start;
    then it has its own `timeout`; `grace` covers the agent reporting back."""

    timeout: float
    grace: float
    start_timeout: float

    @property
    def limit(self) -> float:
        """Seconds from RunCommand after which no result can still be on its way."""
        return self.start_timeout + self.timeout + self.grace

    def recheck_at(self, record: InvocationRecord, now: datetime) -> datetime:
        grace = timedelta(seconds=self.grace)
        if record.status == "Running" and (started := parse_time(record.start_time)):
            due = started + timedelta(seconds=self.timeout) + grace
            return due if due > now else now + grace
        if record.status == "Stopping":
            return now + grace
        return now + timedelta(seconds=self.timeout) + grace


# ----- which events belong to the run
def invocation_check(
    invocations: Sequence[Invocation], *, require_command: bool
) -> Callable[[Event], str | None]:
    """An event of one of the run's invocations is genuine only if the instance is part of
    that invocation and (TaskCompleted) its command is that invocation's command."""
    by_id = {inv.invoke_id: inv for inv in invocations}
    members = {inv.invoke_id: set(inv.instance_ids) for inv in invocations}

    def check(event: Event) -> str | None:
        invoke_ids = [
            r.id.removeprefix(names.invocation_resource(""))
            for r in event.related
            if r.id.startswith(names.invocation_resource(""))
        ]
        ours = next((i for i in invoke_ids if i in by_id), None)
        if ours is None:
            return "names none of the run's invocations"
        instance = event.resource.id.removeprefix(names.instance_resource(""))
        if instance not in members[ours]:
            return f"instance {instance} is not part of invocation {ours}"
        expected = by_id[ours].command_id
        commands = [
            r.id.removeprefix(names.command_resource(""))
            for r in event.related
            if r.id.startswith(names.command_resource(""))
        ]
        if require_command and expected and commands != [expected]:
            return (
                f"command {', '.join(commands) or 'missing'} is not the invocation's ({expected})"
            )
        return None

    return check


# ----- the three waits
def heartbeat_wait(
    instance_ids: Collection[str],
    since: datetime,
    timeout: float,
    owner: Owner | None = None,
    stragglers: StragglerPolicy | None = None,
) -> EventWait:
    return EventWait(
        name="FirstHeartbeat",
        event=names.FIRST_HEARTBEAT,
        keys=instance_ids,
        resource_of=names.instance_resource,
        since=since,
        timeout=timeout,
        owner=owner,
        stragglers=stragglers or StragglerPolicy(),
        retry=RECONCILE_RETRY,
    )


def task_completed_wait(
    invocations: Sequence[Invocation],
    since: datetime,
    clock: CommandClock,
    owner: Owner | None = None,
    stragglers: StragglerPolicy | None = None,
    on_settle: Callable[[Settlement], None] | None = None,
) -> EventWait:
    return EventWait(
        name="TaskCompleted",
        event=names.TASK_COMPLETED,
        keys=[i for inv in invocations for i in inv.instance_ids],
        resource_of=names.instance_resource,
        related=[names.invocation_resource(inv.invoke_id) for inv in invocations],
        since=since,
        timeout=clock.timeout + clock.grace,
        limit=clock.limit,
        owner=owner,
        check=invocation_check(invocations, require_command=True),
        stragglers=stragglers or StragglerPolicy(),
        retry=RECONCILE_RETRY,
        on_settle=on_settle,
    )


def output_delivered_wait(
    invocations: Sequence[Invocation],
    instance_ids: Collection[str],
    since: datetime,
    timeout: float,
    owner: Owner | None = None,
    stragglers: StragglerPolicy | None = None,
) -> EventWait:
    def final_delivery(event: Event) -> bool:
        return event.resource.get(names.DELIVERY_STATUS_LABEL) in FINAL_DELIVERY_STATUSES

    return EventWait(
        name="OutputDelivered",
        event=names.OUTPUT_DELIVERED,
        keys=instance_ids,
        resource_of=names.instance_resource,
        related=[names.invocation_resource(inv.invoke_id) for inv in invocations],
        since=since,
        timeout=timeout,
        owner=owner,
        relevant=final_delivery,
        check=invocation_check(invocations, require_command=False),
        stragglers=stragglers or StragglerPolicy(),
        retry=RECONCILE_RETRY,
    )


# ----- the batched calls
class AgentStatus(BaseModel):
    instance_id: str
    online: bool
    version: str | None = None
    os_type: str = "Linux"


def describe_agents(client: EcsClient, region: str, ids: Sequence[str]) -> dict[str, AgentStatus]:
    """DescribeCloudAssistantStatus, 50 instances per call (the API's limit)."""
    found: dict[str, AgentStatus] = {}
    for batch in chunks(ids, STATUS_MAX_INSTANCES):
        body = call(
            "DescribeCloudAssistantStatus",
            lambda b=batch: (
                client.describe_cloud_assistant_status(
                    ecs.DescribeCloudAssistantStatusRequest(
                        region_id=region, instance_id=b, max_results=STATUS_MAX_INSTANCES
                    )
                ).body
            ),
        )
        statuses = body.instance_cloud_assistant_status_set.instance_cloud_assistant_status
        for s in statuses or []:
            found[s.instance_id] = AgentStatus(
                instance_id=s.instance_id,
                online=s.cloud_assistant_status == "true",
                version=s.cloud_assistant_version,
                os_type=s.ostype or "Linux",
            )
    return found


def _invocations_page(
    client: EcsClient, region: str, *, group: str | None, invoke_id: str | None, token: str | None
) -> ecs.DescribeInvocationsResponseBody:
    request = ecs.DescribeInvocationsRequest(
        region_id=region,
        invoke_id=invoke_id,
        tag=[ecs.DescribeInvocationsRequestTag(key=INVOCATION_GROUP_TAG, value=group)]
        if group
        else None,
        include_output=False,
        max_results=INVOCATIONS_PAGE_SIZE,
        next_token=token,
    )
    return call("DescribeInvocations", lambda: client.describe_invocations(request).body)


def describe_invocations(
    client: EcsClient,
    region: str,
    invocations: Sequence[Invocation],
    instance_ids: Collection[str],
) -> dict[str, InvocationRecord]:
    """Per instance, its status in the run's invocations: one DescribeInvocations call per 50
    invocations of a step (found by their group tag), whatever the number of instances; an
    invocation the tag does not find is asked for by its id."""
    wanted = set(instance_ids)
    ours = {inv.invoke_id for inv in invocations}
    needed = {inv.invoke_id for inv in invocations if wanted & set(inv.instance_ids)}
    found: dict[str, InvocationRecord] = {}
    seen: set[str] = set()

    def take(body: ecs.DescribeInvocationsResponseBody) -> None:
        for invocation in body.invocations.invocation or []:
            if invocation.invoke_id not in ours:
                continue
            seen.add(invocation.invoke_id)
            for ii in invocation.invoke_instances.invoke_instance or []:
                if ii.instance_id in wanted:
                    found[ii.instance_id] = InvocationRecord.from_invoke_instance(
                        invocation.invoke_id, ii
                    )

    for group in sorted(
        {inv.group for inv in invocations if inv.invoke_id in needed and inv.group}
    ):
        token: str | None = None
        while True:
            body = _invocations_page(client, region, group=group, invoke_id=None, token=token)
            take(body)
            token = body.next_token
            if not token or not body.invocations.invocation or needed <= seen:
                break
    for invoke_id in sorted(needed - seen):
        take(_invocations_page(client, region, group=None, invoke_id=invoke_id, token=None))
    return found


def describe_results(
    client: EcsClient, region: str, invoke_ids: Collection[str], instance_ids: Collection[str]
) -> dict[str, InvocationRecord]:
    """DescribeInvocationResults, with the inline output: one paged call per invocation."""
    wanted = set(instance_ids)
    found: dict[str, InvocationRecord] = {}
    for invoke_id in invoke_ids:
        token: str | None = None
        while True:
            body = call(
                "DescribeInvocationResults",
                lambda i=invoke_id, t=token: (
                    client.describe_invocation_results(
                        ecs.DescribeInvocationResultsRequest(
                            region_id=region,
                            invoke_id=i,
                            max_results=RESULTS_PAGE_SIZE,
                            next_token=t,
                        )
                    ).body
                ),
            )
            results = body.invocation.invocation_results.invocation_result or []
            for r in results:
                if r.instance_id in wanted:
                    found[r.instance_id] = InvocationRecord.from_result(r)
            token = body.invocation.next_token
            if not token or not results:
                break
    return found


def stop_invocations(
    client: EcsClient, region: str, targets: Mapping[str, Sequence[str]]
) -> dict[str, str]:
    """StopInvocation per invocation, for the given instances; the errors, per instance."""
    errors: dict[str, str] = {}
    for invoke_id, instance_ids in targets.items():
        for batch in chunks(list(instance_ids), RUN_COMMAND_MAX_INSTANCES):
            request = ecs.StopInvocationRequest(
                region_id=region, invoke_id=invoke_id, instance_id=batch
            )
            try:
                call("StopInvocation", lambda r=request: client.stop_invocation(r))
            except Exception as exc:
                errors.update(dict.fromkeys(batch, str(exc)))
    return errors


# ----- reconcilers: what the API says, as answers the waiter understands
async def reconcile_agents(client: EcsClient, region: str, ids: list[str]) -> dict[str, Answer]:
    """Online agents are final (ready, or too old to send the event); offline ones are not."""
    found = await asyncio.to_thread(describe_agents, client, region, ids)
    return {
        key: Answer(
            data=status.model_dump(),
            final=status.online,
            status="online" if status.online else "offline",
        )
        for key, status in found.items()
    }


async def reconcile_results(
    client: EcsClient,
    region: str,
    invocations: Sequence[Invocation],
    clock: CommandClock,
    ids: list[str],
) -> dict[str, Answer]:
    """Final statuses settle; a command still Pending, Running or Stopping gets a new deadline."""
    found = await asyncio.to_thread(describe_invocations, client, region, invocations, ids)
    now = datetime.now(UTC)
    return {
        key: Answer(
            data=record.model_dump(),
            final=record.final,
            recheck_at=None if record.final else clock.recheck_at(record, now),
            status=record.status,
        )
        for key, record in found.items()
    }


async def reconcile_deliveries(
    client: EcsClient, region: str, invocations: Sequence[Invocation], ids: list[str]
) -> dict[str, Answer]:
    found = await asyncio.to_thread(describe_invocations, client, region, invocations, ids)
    return {
        key: Answer(
            data=record.model_dump(),
            final=record.oss_status in FINAL_DELIVERY_STATUSES,
            status=record.oss_status,
        )
        for key, record in found.items()
    }
