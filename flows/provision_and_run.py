"""Launch instances, wait for their first heartbeats, run a command, collect the results and
full outputs, then delete the instances: every wait an event, never a polling loop."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from prefect import flow, get_run_logger
from prefect.exceptions import Pause

from alicloud_runbooks.blocks import AlibabaCloudCredentials, resolve_credentials
from alicloud_runbooks.events import names
from alicloud_runbooks.report import InstanceReport, RunReport, WaitSummary
from alicloud_runbooks.stream import EventStream
from alicloud_runbooks.text import plural
from alicloud_runbooks.waiter import Owner
from flows.steps import (
    CommandSpec,
    FailurePolicy,
    finish,
    reporting,
    run_and_collect,
    stop_unfinished_commands,
    will_retry,
)
from tasks.instances import delete_instances, launch_instances
from tasks.reporting import FullOutputs
from tasks.waits import wait_for_heartbeats

DEFAULT_IMAGE = "aliyun_3_x64_20G_alibase_20240819.vhd"


DEFAULT_COMMAND = CommandSpec(script='echo "hello from $(hostname)"')


@flow(name="provision-and-run")
async def provision_and_run(
    count: int = 1,
    command: CommandSpec = DEFAULT_COMMAND,
    image_id: str = DEFAULT_IMAGE,
    instance_type: str = "ecs.g7.large",
    keep_instances: bool = False,
    on_failure: FailurePolicy = "fail",
    heartbeat_timeout: float = 300,
    tags: dict[str, str] | None = None,
    name: str = "provision-and-run",
    full_outputs: FullOutputs = None,
    credentials: AlibabaCloudCredentials | None = None,
    credentials_block: str | None = None,
) -> RunReport:
    """Launch `count` instances, wait for their first heartbeats (`heartbeat_timeout` from
    launch), run `command` on them, collect the results and outputs (OSS with
    `command.output_bucket`, else inline), then delete them (unless `keep_instances`).
    `on_failure="fail"` fails the run if any instance fails; `"continue"` reports. `name`
    names the instances (and the command, unless it has a name). The failed instances'
    outputs, and those in `full_outputs` (ids or "all"), are artifacts of the run.
    Lost events are recovered early by batched reconciliation of the stragglers; a command
    with no final status in the end is stopped, never left running unseen. A deployed run
    whose results are still awaited after `suspend_after` seconds suspends (no process held)
    and is resumed by the events or at the deadline. Credentials: `credentials`, else the
    saved block named `credentials_block`, else the environment and the default chain.

    Example:
        ```python
        import asyncio
        from flows.provision_and_run import provision_and_run
        from flows.steps import CommandSpec

        report = asyncio.run(provision_and_run(count=3, command=CommandSpec(script="uptime")))
        ```
    """
    credentials = await resolve_credentials(credentials, credentials_block)
    owner = Owner(account_id=credentials.resolve_account_id(), region=credentials.region_id)
    report = RunReport(flow="provision-and-run", started_at=datetime.now(UTC))
    command = command.named(name)
    # Subscribed before launching, so no heartbeat slips between the call and the wait.
    async with (
        reporting(report, "provision-and-run", credentials, full_outputs),
        EventStream([names.FIRST_HEARTBEAT], get_run_logger()) as heartbeat_events,
    ):
        # In a thread, so the heartbeat stream keeps reading while RunInstances is called.
        launched = await asyncio.to_thread(
            launch_instances, credentials, count, image_id, instance_type, name=name, tags=tags
        )
        heartbeat_events.narrow([names.instance_resource(i) for i in launched.instance_ids])
        rows = {i: InstanceReport(instance_id=i) for i in launched.instance_ids}
        report.instances = list(rows.values())
        try:
            heartbeats = await wait_for_heartbeats(
                credentials,
                launched.instance_ids,
                launched.launched_at,
                timeout=heartbeat_timeout,
                stream=heartbeat_events,
                owner=owner,
            )
            await heartbeat_events.close()
            report.waits.append(WaitSummary.of(heartbeats.wait))
            for instance_id, settled in heartbeats.wait.settled.items():
                rows[instance_id].settled("heartbeat", settled)
            for instance_id, seconds in heartbeats.seconds.items():
                rows[instance_id].heartbeat_seconds = seconds
            for instance_id, error in heartbeats.errors.items():
                rows[instance_id].status = "NoHeartbeat"
                rows[instance_id].error = error
            if heartbeats.ready:
                await run_and_collect(credentials, report, rows, heartbeats.ready, command, owner)
            else:
                get_run_logger().error("No instance became ready; the command was not run")
        except Pause:
            raise  # a durable wait suspended the run: it resumes here, nothing to clean up
        except BaseException as exc:
            if will_retry():
                get_run_logger().warning(
                    "Keeping %s for the flow run's retry",
                    plural(len(launched.instance_ids), "instance"),
                )
                raise
            if not keep_instances:
                stop_unfinished_commands(
                    credentials,
                    report,
                    f"the run is ending ({type(exc).__name__}) and its instances are being deleted",
                )
                try:
                    delete_instances(credentials, launched.instance_ids)
                except Exception as cleanup:
                    # The original failure matters more than the cleanup's.
                    get_run_logger().error(
                        "Could not delete instances %s: %s; delete them by hand",
                        ", ".join(launched.instance_ids),
                        cleanup,
                    )
            raise
        if not keep_instances:
            delete_instances(credentials, launched.instance_ids)
            report.deleted = True
    return finish(report, "provision-and-run", on_failure, credentials, full_outputs)
