"""The steps the stack runbooks share: deploy (create or update, wait), conclude (outputs,
resources, diagnosis, artifacts, the failure policy) and remove. The flows read as runbooks;
the calls and the judging are in `tasks.stacks` and `alicloud_runbooks.ros_stacks`."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from prefect import get_run_logger
from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact
from pydantic import BaseModel

from alicloud_runbooks.blocks import AlibabaCloudCredentials
from alicloud_runbooks.ros_stacks import Diagnosis, StackOutcome
from alicloud_runbooks.waiter import Owner
from tasks.stacks import (
    StackAction,
    StackDetails,
    StackSpec,
    create_or_update_stack,
    delete_stack,
    diagnose_stack,
    stack_details,
    stack_events,
    wait_for_stack,
)

StackFailurePolicy = Literal["fail", "continue", "delete"]


class StackFailed(RuntimeError):
    """A stack operation ended in a failure status (or never ended)."""


class StackReport(BaseModel):
    name: str
    stack_id: str
    operation: str
    outcome: StackOutcome
    details: StackDetails = StackDetails()
    diagnosis: Diagnosis | None = None
    deleted: StackOutcome | None = None
    reused: bool = False
    started_at: datetime | None = None

    @property
    def succeeded(self) -> bool:
        return self.outcome.succeeded

    def error(self) -> str:
        o = self.outcome
        text = f"stack {self.name} ({self.stack_id}) {o.operation} ended {o.verdict}: {o.status}"
        if o.reason:
            text += f" ({o.reason})"
        if self.diagnosis is not None and self.diagnosis.first:
            text += f". Failed first: {self.diagnosis.summary()}"
        return text + ". See the run's artifacts."


def owner_of(credentials: AlibabaCloudCredentials) -> Owner:
    return Owner(account_id=credentials.resolve_account_id(), region=credentials.region_id)


async def run_and_wait(
    credentials: AlibabaCloudCredentials,
    act: Any,
    owner: Owner,
    first_check: float,
) -> tuple[StackAction, StackOutcome]:
    """Open the subscription, act (a task returning a StackAction), wait for its outcome."""
    async with stack_events() as stream:
        action: StackAction = act()
        outcome = await wait_for_stack(credentials, action, stream, owner, first_check)
    return action, outcome


async def deploy(
    credentials: AlibabaCloudCredentials,
    spec: StackSpec,
    owner: Owner,
    first_check: float,
) -> StackReport:
    action, outcome = await run_and_wait(
        credentials, lambda: create_or_update_stack(credentials, spec), owner, first_check
    )
    return StackReport(
        name=spec.name,
        stack_id=action.stack_id,
        operation=action.operation,
        outcome=outcome,
        reused=action.reused,
        started_at=action.started_at,
    )


async def remove(
    credentials: AlibabaCloudCredentials, stack_id: str, owner: Owner, first_check: float
) -> StackOutcome:
    _, outcome = await run_and_wait(
        credentials, lambda: delete_stack(credentials, stack_id), owner, first_check
    )
    return outcome


def _rows(report: StackReport) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = [
        {"kind": "output", "name": k, "type": "", "value or status": str(v), "reason": ""}
        for k, v in report.details.outputs.items()
    ]
    rows += [
        {
            "kind": "resource",
            "name": r.get("LogicalResourceId"),
            "type": r.get("ResourceType"),
            "value or status": f"{r.get('Status')} {r.get('PhysicalResourceId') or ''}".strip(),
            "reason": r.get("StatusReason") or "",
        }
        for r in report.details.resources
    ]
    if report.diagnosis is not None:
        rows += [
            {
                "kind": "failed first" if f in report.diagnosis.first else "failed later",
                "name": f.logical_id,
                "type": f.resource_type,
                "value or status": f.status,
                "reason": f.reason,
            }
            for f in report.diagnosis.first + report.diagnosis.later
        ]
    return rows


def summary_markdown(report: StackReport) -> str:
    o = report.outcome
    lines = [
        f"# Stack {report.name}: {o.operation} {o.verdict}",
        "",
        "| | |",
        "|---|---|",
        f"| stack id | `{report.stack_id}` |",
        f"| status | {o.status} |",
        f"| reason | {o.reason or ''} |",
        f"| seconds | {o.seconds:.1f} |",
        f"| settled by | {o.settled_by or 'nothing (timed out)'} |",
        f"| GetStack calls spent waiting | {o.get_stack_calls} |",
    ]
    if report.reused:
        lines.append("| reused | the stack an earlier attempt of this run created |")
    if report.diagnosis is not None:
        lines += ["", "## Why it failed", "", report.diagnosis.summary()]
    if report.deleted is not None:
        lines += ["", f"Deleted afterwards: {report.deleted.status} ({report.deleted.verdict})"]
    return "\n".join(lines)


async def publish(report: StackReport, key: str) -> None:
    await acreate_table_artifact(
        key=key,
        table=_rows(report),
        description=f"Stack {report.name}: outputs and resources",
    )
    await acreate_markdown_artifact(
        key=f"{key}-summary", markdown=summary_markdown(report), description="Stack outcome"
    )


async def conclude(
    credentials: AlibabaCloudCredentials,
    report: StackReport,
    on_failure: StackFailurePolicy,
    owner: Owner,
    first_check: float,
    key: str,
) -> StackReport:
    """Outputs and resources; on a failure the diagnosis, then `on_failure`; the artifacts
    in every case."""
    logger = get_run_logger()
    report.details = stack_details(credentials, report.stack_id)
    if not report.succeeded:
        report.diagnosis = diagnose_stack(credentials, report.stack_id, report.started_at)
        logger.error("%s", report.error())
        if on_failure == "delete":
            report.deleted = await remove(credentials, report.stack_id, owner, first_check)
    await publish(report, key)
    if not report.succeeded and on_failure != "continue":
        raise StackFailed(report.error())
    return report
