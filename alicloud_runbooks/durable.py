"""Waits that hold no process: suspend the flow run, and let Prefect resume it.

A wait still open after a while suspends its flow run (`suspend_flow_run`: the process exits,
no worker slot is held). Two automations, owned by the run and removed when it resumes, bring
it back:
- **Reactive**: once the expected number of the awaited events (e.g. TaskCompleted) related
  to the run have arrived: the relay relates each Cloud Assistant event to the run that tagged
  itself with the event's invocation (`relay/runs.py`);
- **Proactive**: at the wait's next deadline if they have not, so reconciliation runs then.
Prefect re-runs the flow from the top after a resume; tasks with persisted results come back
cached (RunInstances and RunCommand are not repeated, and their ClientTokens would make a
repeat harmless), and the wait reads what arrived from the store, settling keys exactly as
an in-process wait does. A run with no deployment cannot be suspended: it waits in process.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext
from prefect.events import Event
from prefect.events.actions import ResumeFlowRun
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

from alicloud_runbooks.events.posting import apost_events

logger = logging.getLogger(__name__)

SUSPENDED_EVENT = "runbooks.wait.suspended"
ANNOUNCE_AGAIN = (1.0, 3.0)  # seconds between the copies of the suspended event
RUNNING_EVENT = "prefect.flow-run.Running"  # the run is back: the deadline is not needed
MIN_PROACTIVE_SECONDS = 10  # Prefect's floor for a Proactive trigger's window
RESUME_MARGIN = timedelta(minutes=10)  # a suspend outlives its deadline automation by this


def flow_run_resource(flow_run_id: UUID | str) -> str:
    return f"prefect.flow-run.{flow_run_id}"


def why_not_durable() -> str | None:
    """Why this flow run cannot suspend (and must wait in process), or None if it can."""
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return "not inside a flow run"
    if context.flow_run.deployment_id is None:
        return "the run has no deployment (Prefect resumes only deployed runs)"
    if context.flow_run.parent_task_run_id is not None:
        return "the run is a subflow (Prefect cannot suspend subflows)"
    return None


async def fired_keys(flow_run_id: UUID) -> set[str]:
    """The suspend keys this run has already used: a resumed run skips them."""
    async with get_client() as client:
        run = await client.read_flow_run(flow_run_id)
    return set(run.empirical_policy.pause_keys or ())


async def arm(
    flow_run_id: UUID,
    key: str,
    event: str,
    expected: int,
    deadline: datetime,
) -> list[UUID]:
    """The two automations that resume the suspended run: when `expected` events named
    `event` related to the run have come, or at `deadline` if they have not."""
    run = flow_run_resource(flow_run_id)
    window = max(float(MIN_PROACTIVE_SECONDS), (deadline - datetime.now(UTC)).total_seconds())
    match_related = {"prefect.resource.id": run}
    common = {"owner_resource": run, "actions": [ResumeFlowRun()], "enabled": True}
    automations = [
        AutomationCore(
            name=f"runbooks-resume-{flow_run_id}-{key}-events",
            description=f"Resume run {flow_run_id} once {expected} {event} events have come",
            trigger=EventTrigger(
                expect={event},
                match_related=match_related,
                posture=Posture.Reactive,
                threshold=expected,
                within=timedelta(seconds=window + RESUME_MARGIN.total_seconds()),
            ),
            **common,
        ),
        # Keyed on the run itself (the suspended event's resource): Prefect's resume action
        # finds the run to resume in the bucket's labels, as a Proactive firing has no event.
        AutomationCore(
            name=f"runbooks-resume-{flow_run_id}-{key}-deadline",
            description=f"Resume run {flow_run_id} at its deadline to reconcile what is missing",
            trigger=EventTrigger(
                after={SUSPENDED_EVENT},
                expect={RUNNING_EVENT},
                match={"prefect.resource.id": run},
                for_each={"prefect.resource.id"},
                posture=Posture.Proactive,
                threshold=1,
                within=timedelta(seconds=window),
            ),
            **common,
        ),
    ]
    async with get_client() as client:
        return [await client.create_automation(a) for a in automations]


async def announce(flow_run_id: UUID, key: str, expected: int, deadline: datetime) -> None:
    """The event that starts the deadline automation's window, stored before the process
    exits (`emit_event` would send it from a background worker, too late).

    Sent again after `ANNOUNCE_AGAIN` seconds: Prefect loads a new automation into its
    triggers a moment after creating it (later on a loaded server), and an `after` event it
    sees before then starts no window. A second copy opens the window if the first did not,
    and changes nothing if it did (Prefect keeps an open bucket as it is)."""
    for pause in (0.0, *ANNOUNCE_AGAIN):
        await asyncio.sleep(pause)
        event = Event(
            event=SUSPENDED_EVENT,
            resource={"prefect.resource.id": flow_run_resource(flow_run_id)},
            related=[
                {
                    "prefect.resource.id": f"runbooks.wait.{flow_run_id}.{key}",
                    "prefect.resource.role": "wait",
                    "prefect.resource.name": key,
                }
            ],
            payload={"expected": expected, "deadline": deadline.isoformat()},
        )
        await apost_events([event])


async def disarm(flow_run_id: UUID) -> None:
    """Remove every resume automation of this run (after it resumed, or when it ends)."""
    async with get_client() as client:
        await client.delete_resource_owned_automations(flow_run_resource(flow_run_id))
