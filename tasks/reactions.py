"""Batch tasks of the reactive runbooks: which of a window's failed commands the runbooks
started, which stopped instances to start again, and StartInstances."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime

from alibabacloud_ecs20140526 import models as ecs
from prefect import get_run_logger, task
from prefect.events import Event, emit_event
from pydantic import BaseModel

from alicloud_runbooks import restarts
from alicloud_runbooks.blocks import AlibabaCloudCredentials
from alicloud_runbooks.cloud_assistant import chunks
from alicloud_runbooks.errors import call
from alicloud_runbooks.events import names
from alicloud_runbooks.text import plural
from tasks.instances import FLOW_RUN_TAG

DIAGNOSTICS_COMMAND = "collect-diagnostics"
MAX_INVOCATIONS = 50  # DescribeInvocations calls one window may spend
DESCRIBE_MAX_IDS = 100
START_MAX_IDS = 100

# Read-only and bounded: each probe under `timeout`, each output cut; always exits 0, so a
# host too broken to answer some probes still reports the others.
DIAGNOSTICS_SCRIPT = r"""set +e
probe() { echo "== $1"; shift; timeout 10 "$@" 2>&1 | tail -n 40; }
journal() {
  journalctl -n 50 --no-pager 2>/dev/null || tail -n 50 /var/log/messages 2>/dev/null \
    || echo "(no journal)"
}
agent_log() {
  tail -n 30 /usr/local/share/aliyun-assistant/*/log/aliyun_assistant_main.log 2>/dev/null \
    || echo "(no agent log here)"
}
probe "uptime" uptime
probe "disk" df -hP
probe "inodes" df -iP
probe "memory" free -m
probe "top processes" sh -c 'ps -eo pid,pcpu,pmem,etime,comm --sort=-pcpu | head -n 15'
echo "== journal (last 50 lines)"; journal 2>&1 | tail -n 50
echo "== cloud assistant agent log (last 30 lines)"; agent_log 2>&1 | tail -n 30
exit 0
"""


class Failure(BaseModel):
    """One instance's failed or timed-out runbook command."""

    instance_id: str
    invoke_id: str
    command_name: str
    status: str
    event_id: str


@task(name="runbook-failures")
def runbook_failures(
    credentials: AlibabaCloudCredentials, events: Sequence[Event]
) -> list[Failure]:
    """The window's TaskCompleted failures of commands a runbook started: their invocation
    carries the `runbooks:flow-run` tag (one DescribeInvocations per distinct invocation, at
    most 50). The diagnostics command's own failures are left out (the loop guard, also in
    the trigger).

    Example:
        ```python
        failures = runbook_failures(credentials, await windows.collect(window))
        ```
    """
    logger = get_run_logger()
    by_invocation: dict[str, list[Event]] = {}
    for event in events:
        if event.payload.get("commandName") == DIAGNOSTICS_COMMAND:
            continue
        invoke_id = event.payload.get("invokeId")
        if invoke_id:
            by_invocation.setdefault(invoke_id, []).append(event)
    if len(by_invocation) > MAX_INVOCATIONS:
        logger.warning(
            "%d failed invocations in the window: only the first %d are looked at",
            len(by_invocation),
            MAX_INVOCATIONS,
        )
    client = credentials.ecs_client()
    failures: list[Failure] = []
    for invoke_id in list(by_invocation)[:MAX_INVOCATIONS]:
        request = ecs.DescribeInvocationsRequest(
            region_id=credentials.region_id, invoke_id=invoke_id
        )
        body = call("DescribeInvocations", lambda r=request: client.describe_invocations(r).body)
        found = body.invocations.invocation if body.invocations else []
        if not found:
            logger.info("Invocation %s is gone: skipped", invoke_id)
            continue
        tags = {t.tag_key: t.tag_value for t in (found[0].tags.tag if found[0].tags else [])}
        if FLOW_RUN_TAG not in tags:
            logger.info("Invocation %s was not started by a runbook: skipped", invoke_id)
            continue
        if found[0].command_name == DIAGNOSTICS_COMMAND:
            continue
        for event in by_invocation[invoke_id]:
            failures.append(
                Failure(
                    instance_id=event.payload.get("instanceId", ""),
                    invoke_id=invoke_id,
                    command_name=found[0].command_name or "",
                    status=event.resource.get(names.INVOCATION_STATUS_LABEL) or "",
                    event_id=str(event.id),
                )
            )
    unique = {f.instance_id: f for f in failures if f.instance_id}
    logger.info(
        "%s of runbook commands failed in the window (%s)",
        plural(len(unique), "instance"),
        plural(len({f.invoke_id for f in unique.values()}), "invocation"),
    )
    return list(unique.values())


def _describe(
    credentials: AlibabaCloudCredentials, instance_ids: Sequence[str]
) -> dict[str, tuple[str, dict[str, str]]]:
    """Status and tags of each instance that still exists, 100 per DescribeInstances call."""
    client = credentials.ecs_client()
    found: dict[str, tuple[str, dict[str, str]]] = {}
    for batch in chunks(list(instance_ids), DESCRIBE_MAX_IDS):
        request = ecs.DescribeInstancesRequest(
            region_id=credentials.region_id,
            instance_ids=json.dumps(batch),
            max_results=DESCRIBE_MAX_IDS,
        )
        body = call("DescribeInstances", lambda r=request: client.describe_instances(r).body)
        for instance in body.instances.instance or []:
            tags = {t.tag_key: t.tag_value for t in (instance.tags.tag if instance.tags else [])}
            found[instance.instance_id] = (instance.status, tags)
    return found


@task(name="decide-restarts")
async def decide_restarts(
    credentials: AlibabaCloudCredentials,
    events: Sequence[Event],
    action: restarts.Action,
    max_per_hour: int,
    managed_value: str = "true",
) -> list[restarts.Decision]:
    """For each instance the window saw stop: managed (tag `runbooks:managed`), asked for by a
    runbook, restarts in the last hour (both from the event store), and the verdict.

    Example:
        ```python
        decisions = await decide_restarts(credentials, events, "start", max_per_hour=3)
        ```
    """
    stopped: dict[str, datetime] = {}
    for event in events:
        instance_id = event.resource.id.removeprefix(names.instance_resource(""))
        stopped[instance_id] = max(event.occurred, stopped.get(instance_id, event.occurred))
    ids = list(stopped)
    if not ids:
        return []
    described = _describe(credentials, ids)
    asked = await restarts.asked_to_stop(ids, stopped)
    counts = await restarts.restarts_since(ids, datetime.now(UTC))
    decisions = []
    for instance_id in ids:
        state, tags = described.get(instance_id, (None, {}))
        decisions.append(
            restarts.decide(
                instance_id,
                state=state,
                managed=tags.get(restarts.MANAGED_TAG) == managed_value,
                asked=instance_id in asked,
                restarts_last_hour=counts[instance_id],
                max_per_hour=max_per_hour,
                action=action,
            )
        )
    return decisions


@task(name="start-instances")
def start_instances(
    credentials: AlibabaCloudCredentials, instance_ids: Sequence[str], reason: str
) -> None:
    """StartInstances, 100 per call; each instance's `runbooks.instance.restarted` event
    (which the loop guard counts) is emitted before its call.

    Example:
        ```python
        start_instances(credentials, ["i-bp1…"], reason="stopped without a runbook asking")
        ```
    """
    client = credentials.ecs_client()
    for batch in chunks(list(instance_ids), START_MAX_IDS):
        for instance_id in batch:
            emit_event(
                event=restarts.RESTARTED,
                resource={
                    "prefect.resource.id": names.instance_resource(instance_id),
                    "prefect.resource.name": instance_id,
                },
                payload={"reason": reason},
            )
        request = ecs.StartInstancesRequest(region_id=credentials.region_id, instance_id=batch)
        call("StartInstances", lambda r=request: client.start_instances(r))
    get_run_logger().info("Started %s again", plural(len(instance_ids), "instance"))
