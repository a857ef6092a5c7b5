"""Batch tasks around Cloud Assistant commands: run on many instances, read their outputs."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from uuid import UUID

from alibabacloud_ecs20140526 import models as ecs
from prefect import get_run_logger, task
from prefect.client.orchestration import get_client
from prefect.events import emit_event
from prefect.runtime import flow_run
from pydantic import BaseModel

from alicloud_runbooks.blocks import AlibabaCloudCredentials
from alicloud_runbooks.cloud_assistant import (
    INVOCATION_GROUP_TAG,
    RUN_COMMAND_MAX_INSTANCES,
    Invocation,
    InvocationRecord,
    chunks,
    describe_results,
    stop_invocations,
)
from alicloud_runbooks.errors import call
from alicloud_runbooks.events import names
from alicloud_runbooks.report import OutputSource
from alicloud_runbooks.text import plural
from tasks.instances import FLOW_RUN_TAG, client_token

__all__ = ["Invocation", "Output", "read_outputs", "run_command", "stop_commands"]


class Output(BaseModel):
    text: str | None
    source: OutputSource
    error: str | None = None


_TAGGING = threading.Lock()


def _tag_run(invoke_id: str) -> None:
    """Tag the flow run with the invocation, so the relay relates its events to this run
    (alicloud_runbooks/relay/runs.py): the UI links both ways, and a suspended run is resumed
    by them. Best effort: the waits find the events by instance either way."""
    run_id = flow_run.get_id()
    if not run_id:
        return
    try:
        with _TAGGING, get_client(sync_client=True) as client:
            run = client.read_flow_run(UUID(run_id))
            tags = list(dict.fromkeys([*run.tags, names.invocation_resource(invoke_id)]))
            client.update_flow_run(UUID(run_id), tags=tags)
    except Exception as exc:
        get_run_logger().warning("Could not tag the run with invocation %s: %s", invoke_id, exc)


def oss_destination(bucket: str | None, prefix: str | None) -> str | None:
    if not bucket:
        return None
    prefix = (prefix or "").strip("/")
    return f"oss://{bucket}/{prefix}" if prefix else f"oss://{bucket}"


@task(name="run-command", persist_result=True)
def run_command(
    credentials: AlibabaCloudCredentials,
    instance_ids: Sequence[str],
    script: str,
    name: str = "runbook",
    command_type: str = "RunShellScript",
    parameters: dict[str, str] | None = None,
    timeout: int = 60,
    output_bucket: str | None = None,
    output_prefix: str | None = "runbooks",
) -> list[Invocation]:
    """RunCommand on up to 100 instances per call; one invocation per call, all tagged with
    one group so a single DescribeInvocations call can answer for the whole step.

    Example:
        ```python
        from alicloud_runbooks.blocks import AlibabaCloudCredentials
        from tasks.commands import run_command

        invocations = run_command(
            AlibabaCloudCredentials.load("prod"), ["i-bp1…"], "uptime", name="uptime",
            output_bucket="ops-outputs",
        )
        ```
    """
    logger = get_run_logger()
    client = credentials.ecs_client()
    delivery = oss_destination(output_bucket, output_prefix)
    group = client_token("run-command-group", name, len(instance_ids), *instance_ids[:1])
    tags = {FLOW_RUN_TAG: flow_run.get_id() or "none", INVOCATION_GROUP_TAG: group}
    invocations: list[Invocation] = []
    for index, batch in enumerate(chunks(list(instance_ids), RUN_COMMAND_MAX_INSTANCES)):
        request = ecs.RunCommandRequest(
            region_id=credentials.region_id,
            type=command_type,
            command_content=script,
            content_encoding="PlainText",
            instance_id=batch,
            name=name,
            timeout=timeout,
            # Built-in parameters ({{ACS::InstanceId}}) are replaced only with parameters on.
            enable_parameter=bool(parameters) or "{{ACS::" in script,
            parameters=parameters or None,
            oss_output_delivery=delivery,
            client_token=client_token("run-command", index, name, *batch),
            tag=[ecs.RunCommandRequestTag(key=k, value=v) for k, v in tags.items()],
        )
        started_at = datetime.now(UTC)
        body = call("RunCommand", lambda r=request: client.run_command(r).body)
        invocations.append(
            Invocation(
                invoke_id=body.invoke_id,
                command_id=body.command_id,
                instance_ids=batch,
                started_at=started_at,
                group=group,
            )
        )
        _tag_run(body.invoke_id)
        emit_event(
            event="runbooks.command.invoked",
            resource={
                "prefect.resource.id": names.invocation_resource(body.invoke_id),
                "prefect.resource.name": name,
                names.REGION_LABEL: credentials.region_id,
            },
            related=[
                {
                    "prefect.resource.id": names.command_resource(body.command_id),
                    "prefect.resource.role": "command",
                }
            ],
            payload={"instances": batch, "timeout": timeout, "oss_output_delivery": delivery},
        )
        logger.info(
            "RunCommand %r on %s: invocation %s%s",
            name,
            plural(len(batch), "instance"),
            body.invoke_id,
            f", output to {delivery}" if delivery else "",
        )
    return invocations


def _read_oss(credentials: AlibabaCloudCredentials, uri: str) -> str:
    bucket_name, _, key = uri.removeprefix("oss://").partition("/")
    bucket = credentials.oss_bucket(bucket_name)
    return bucket.get_object(key).read().decode("utf-8", "replace")


@task(name="read-outputs")
async def read_outputs(
    credentials: AlibabaCloudCredentials,
    records: dict[str, InvocationRecord],
) -> dict[str, Output]:
    """Full outputs from OSS where they were delivered; the rest from DescribeInvocationResults
    (one call per invocation), marked truncated when the API dropped bytes.

    Example (with the records of `wait_for_results`):
        ```python
        outputs = await read_outputs(credentials, results.records)
        print(outputs["i-bp1…"].text)
        ```
    """
    logger = get_run_logger()
    outputs: dict[str, Output] = {}
    inline_needed: dict[str, list[str]] = {}
    errors: dict[str, str] = {}

    async def fetch(instance_id: str, uri: str) -> None:
        try:
            text = await asyncio.to_thread(_read_oss, credentials, uri)
        except Exception as exc:
            reason = f"reading {uri} failed: {getattr(exc, 'code', type(exc).__name__)}"
            errors[instance_id] = reason
            logger.warning("%s: %s; falling back to the inline output", instance_id, reason)
            inline_needed.setdefault(records[instance_id].invoke_id, []).append(instance_id)
        else:
            outputs[instance_id] = Output(text=text, source="oss")

    fetches = []
    for instance_id, record in records.items():
        if record.oss_status == "Finished" and record.oss_uri:
            fetches.append(fetch(instance_id, record.oss_uri))
        else:
            if record.oss_error:
                errors[instance_id] = f"OSS delivery failed: {record.oss_error}"
            inline_needed.setdefault(record.invoke_id, []).append(instance_id)
    semaphore = asyncio.Semaphore(16)

    async def bounded(coro):  # type: ignore[no-untyped-def]
        async with semaphore:
            await coro

    await asyncio.gather(*(bounded(f) for f in fetches))
    if inline_needed:
        client = credentials.ecs_client()
        wanted = [i for ids in inline_needed.values() for i in ids]
        try:
            inline = await asyncio.to_thread(
                describe_results, client, credentials.region_id, list(inline_needed), wanted
            )
        except Exception as exc:
            # The results are known; only the text is missing: report it, don't fail on it.
            logger.error("Could not read %s inline: %s", plural(len(wanted), "output"), exc)
            inline = {}
            errors.update({i: f"reading the output failed: {exc}" for i in wanted})
        for instance_id in wanted:
            found = inline.get(instance_id)
            if found is None or found.output is None:
                outputs[instance_id] = Output(
                    text=None, source="none", error=errors.get(instance_id)
                )
                continue
            source: OutputSource = "inline-truncated" if found.dropped else "inline"
            outputs[instance_id] = Output(
                text=found.output, source=source, error=errors.get(instance_id)
            )
        logger.info(
            "Read %s inline with DescribeInvocationResults (%d truncated at 24 KB)",
            plural(len(wanted), "output"),
            sum(1 for i in wanted if outputs[i].source == "inline-truncated"),
        )
    return outputs


@task(name="stop-commands")
def stop_commands(
    credentials: AlibabaCloudCredentials,
    invocations: Sequence[Invocation],
    instance_ids: Sequence[str],
    reason: str,
) -> dict[str, str]:
    """StopInvocation for these instances' commands, so none is left running unseen (or killed
    later by an instance's deletion without the report saying so); the errors, per instance.

    Example:
        ```python
        errors = stop_commands(credentials, invocations, ["i-bp1…"], "the run is ending")
        ```
    """
    wanted = set(instance_ids)
    targets = {
        inv.invoke_id: [i for i in inv.instance_ids if i in wanted]
        for inv in invocations
        if wanted & set(inv.instance_ids)
    }
    if not targets:
        return {}
    get_run_logger().warning(
        "Stopping the command on %s: %s", plural(len(wanted), "instance"), reason
    )
    errors = stop_invocations(credentials.ecs_client(), credentials.region_id, targets)
    for instance_id, error in errors.items():
        get_run_logger().error("%s: could not stop its command: %s", instance_id, error)
    return errors
