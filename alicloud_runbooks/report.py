"""What a runbook run did, per instance and per wait: the flow's return value, the table
artifact and the markdown summary are all made from these models."""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from alicloud_runbooks.cloud_assistant import Invocation
from alicloud_runbooks.events.names import instance_resource
from alicloud_runbooks.waiter import Settlement, WaitResult

OutputSource = Literal["oss", "inline", "inline-truncated", "none"]
PREVIEW_CHARS = 120
PREVIEW_LINES = 3
EVENT_ROWS = 50
"""Instances listed with links to their events in the summary (failed ones first)."""
STEPS = ("heartbeat", "result", "output")


class EventRef(BaseModel):
    """A Prefect event that settled a wait: enough for its page in the UI."""

    id: str
    occurred: datetime | None = None


class InstanceReport(BaseModel):
    instance_id: str
    status: str = "NotRun"
    exit_code: int | None = None
    heartbeat_seconds: float | None = None
    duration_seconds: float | None = None
    invoke_id: str | None = None
    oss_uri: str | None = None
    output: str | None = None
    output_source: OutputSource = "none"
    settled_by: dict[str, Literal["event", "reconciliation"]] = Field(default_factory=dict)
    events: dict[str, EventRef] = Field(
        default_factory=dict, description="per step, the event that settled it"
    )
    error: str | None = None

    def settled(self, step: str, settlement: Settlement) -> None:
        """Record how `step` (heartbeat, result, output) was settled, and by which event."""
        self.settled_by[step] = settlement.by
        if settlement.event_id:
            self.events[step] = EventRef(id=settlement.event_id, occurred=settlement.relayed_at)

    @property
    def succeeded(self) -> bool:
        return self.status == "Success" and self.exit_code in (0, None) and not self.error

    def tail(self, lines: int = PREVIEW_LINES) -> str:
        """The last `lines` non-empty lines of the output, each cut at `PREVIEW_CHARS`, joined
        by ` ⏎ `. Cloud Assistant merges stdout and stderr into one output, so they are the
        last lines of both, as they were written."""
        text = (self.output or "").strip()
        last = [line for line in text.splitlines() if line.strip()][-lines:] if text else []
        cut = [
            line if len(line) <= PREVIEW_CHARS else line[: PREVIEW_CHARS - 1] + "…" for line in last
        ]
        preview = " ⏎ ".join(cut)
        if self.output_source == "inline-truncated":
            preview += " [inline, truncated at 24 KB]"
        return preview

    @property
    def preview(self) -> str:
        return self.tail()

    def row(self) -> dict[str, object]:
        return {
            "instance": self.instance_id,
            "heartbeat_s": self.heartbeat_seconds,
            "status": self.status,
            "exit_code": self.exit_code,
            "duration_s": self.duration_seconds,
            "oss_uri": self.oss_uri or "",
            "output_preview": self.preview,
            "settled_by": ", ".join(f"{k}: {v}" for k, v in self.settled_by.items()),
            "error": self.error or "",
        }


class WaitSummary(BaseModel):
    name: str
    instances: int
    by_event: int
    by_reconciliation: int
    unsettled: int
    seconds: float
    live: int = 0
    stored: int = 0
    duplicates: int = 0
    foreign: int = 0
    straggler_rounds: int = 0
    deadline_rounds: int = 0
    reconcile_error: str | None = None
    reaction_ms: list[float] = Field(
        default_factory=list, description="source event → the wait settling it, per key"
    )
    delivery_ms: list[float] = Field(
        default_factory=list, description="source event → its arrival in the flow's process"
    )

    @classmethod
    def of(cls, result: WaitResult) -> WaitSummary:
        reactions = [ms for s in result.settled.values() if (ms := s.reaction_ms) is not None]
        deliveries = [ms for s in result.settled.values() if (ms := s.delivery_ms) is not None]
        return cls(
            name=result.name,
            instances=len(result.settled) + len(result.unsettled),
            by_event=len(result.by("event")),
            by_reconciliation=len(result.by("reconciliation")),
            unsettled=len(result.unsettled),
            seconds=(result.finished_at - result.started_at).total_seconds(),
            live=result.live_events,
            stored=result.stored_events,
            duplicates=result.duplicates,
            foreign=sum(result.foreign.values()),
            straggler_rounds=result.straggler_rounds,
            deadline_rounds=result.deadline_rounds,
            reconcile_error=result.reconcile_error,
            reaction_ms=sorted(reactions),
            delivery_ms=sorted(deliveries),
        )

    def percentile(self, q: float, of: str = "reaction_ms") -> float | None:
        values: list[float] = getattr(self, of)
        if not values:
            return None
        if len(values) == 1:
            return values[0]
        return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


class RunReport(BaseModel):
    flow: str
    started_at: datetime
    finished_at: datetime | None = None
    command: str | None = None
    invoke_ids: list[str] = Field(default_factory=list)
    invocations: list[Invocation] = Field(default_factory=list)
    instances: list[InstanceReport] = Field(default_factory=list)
    waits: list[WaitSummary] = Field(default_factory=list)
    stopped: list[str] = Field(
        default_factory=list, description="instances whose command the runbook stopped"
    )
    deleted: bool = False
    error: str | None = Field(default=None, description="why the run ended early, if it did")

    def row(self, instance_id: str) -> InstanceReport | None:
        return next((i for i in self.instances if i.instance_id == instance_id), None)

    @property
    def failed(self) -> list[InstanceReport]:
        return [i for i in self.instances if not i.succeeded]

    def rows(self) -> list[dict[str, object]]:
        return [i.row() for i in self.instances]

    def markdown(self, event_url: EventUrl | None = None, feed_url: FeedUrl | None = None) -> str:
        """The summary; `event_url` and `feed_url` make links to the UI's event pages."""
        ok = len(self.instances) - len(self.failed)
        lines = [
            f"# {self.flow}: {ok} of {len(self.instances)} "
            f"instance{'' if len(self.instances) == 1 else 's'} succeeded",
            "",
        ]
        if self.command:
            lines += [f"Command `{self.command}`, invocations {', '.join(self.invoke_ids)}.", ""]
        if self.error:
            lines += [f"**The run ended early:** {self.error}", ""]
        lines += [
            "| wait | instances | by event (live / stored) | by reconciliation | unsettled | "
            "straggler rounds | ignored (duplicate / foreign) | seconds | reaction p50 ms | "
            "p99 ms |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for w in self.waits:
            p50, p99 = w.percentile(50), w.percentile(99)
            lines.append(
                f"| {w.name} | {w.instances} | {w.by_event} ({w.live} / {w.stored}) | "
                f"{w.by_reconciliation} | {w.unsettled} | {w.straggler_rounds} | "
                f"{w.duplicates} / {w.foreign} | {w.seconds:.2f} | {_ms(p50)} | {_ms(p99)} |"
            )
        errors = [w for w in self.waits if w.reconcile_error]
        if errors:
            lines += [""] + [
                f"- {w.name}: reconciliation failed: {w.reconcile_error}" for w in errors
            ]
        if self.stopped:
            lines += [
                "",
                f"Stopped by the runbook (StopInvocation, no final status in time): "
                f"{', '.join(f'`{i}`' for i in self.stopped)}.",
            ]
        if self.failed:
            lines += ["", "## Failed", ""]
            lines += [
                f"- `{i.instance_id}`: {i.status}"
                + (f", exit code {i.exit_code}" if i.exit_code is not None else "")
                + (f": {i.error}" if i.error else "")
                for i in self.failed
            ]
        lines += ["", "Instances " + ("deleted." if self.deleted else "kept.")]
        lines += events_section(self.instances, event_url, feed_url)
        return "\n".join(lines)


EventUrl = Callable[[EventRef], str | None]
FeedUrl = Callable[[str], str | None]
"""The UI's event feed for one resource id (its events, and the runs' that name it)."""


def _event_cell(row: InstanceReport, step: str, event_url: EventUrl | None) -> str:
    by = row.settled_by.get(step)
    if by is None:
        return "-"
    if by == "reconciliation":
        return "reconciliation"
    ref = row.events.get(step)
    if ref is None:
        return "event"
    url = event_url(ref) if event_url else None
    return f"[event]({url})" if url else f"event `{ref.id}`"


def events_section(
    instances: list[InstanceReport], event_url: EventUrl | None, feed_url: FeedUrl | None = None
) -> list[str]:
    """Per instance (failed first, at most `EVENT_ROWS`), what settled each step: a link to
    the Alibaba event's page, or reconciliation; the instance links its event feed."""
    steps = [s for s in STEPS if any(s in i.settled_by for i in instances)]
    if not steps:
        return []
    ordered = sorted(instances, key=lambda i: i.succeeded)
    lines = [
        "",
        "## What settled each step",
        "",
        "| instance | " + " | ".join(steps) + " |",
        "|---|" + "---|" * len(steps),
    ]
    for row in ordered[:EVENT_ROWS]:
        cells = " | ".join(_event_cell(row, step, event_url) for step in steps)
        feed = feed_url(instance_resource(row.instance_id)) if feed_url else None
        name = f"[`{row.instance_id}`]({feed})" if feed else f"`{row.instance_id}`"
        lines.append(f"| {name} | {cells} |")
    if len(ordered) > EVENT_ROWS:
        lines += [
            "",
            f"… and {len(ordered) - EVENT_ROWS} more instances: the run's "
            "`runbooks.wait.settled` events name every event that settled a step.",
        ]
    return lines


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


NOT_STARTED = "NotStarted"
"""The status of an instance a fleet run never started (the run stopped before its batch)."""
START_FAILED = "StartFailed"
"""The status of an instance whose RunCommand call failed, so its command never ran."""


class BatchReport(BaseModel):
    """One batch of a fleet run: what ran, how it ended, and when (for the figures)."""

    number: int
    instances: int
    width: int = Field(description="instances of the batch allowed to run at once")
    canary: bool = False
    started_at: datetime | None = None
    first_command_at: datetime | None = Field(default=None, description="its first RunCommand call")
    last_result_at: datetime | None = Field(
        default=None, description="when its last instance's final status was counted"
    )
    finished_at: datetime | None = None
    invoke_ids: list[str] = Field(default_factory=list)
    succeeded: int = 0
    failed: int = 0
    by_event: int = 0
    by_reconciliation: int = 0
    reconciliation_rounds: int = 0

    @property
    def run_command_calls(self) -> int:
        return len(self.invoke_ids)

    @property
    def seconds(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


class FleetReport(RunReport):
    """A fleet run: the per-instance report, plus its batches, error budget and why it
    stopped early, if it did."""

    targets: str = ""
    rate_control: dict[str, object] = Field(default_factory=dict)
    error_budget: int = 0
    concurrency_limit: str | None = Field(
        default=None, description="the global concurrency limit the run shared, if any"
    )
    concurrency_limit_slots: int | None = None
    batches: list[BatchReport] = Field(default_factory=list)
    stopped_reason: str | None = Field(
        default=None, description="why the run started no further instances, if it stopped"
    )
    progress_writes: int = 0

    @property
    def not_started(self) -> list[str]:
        return [i.instance_id for i in self.instances if i.status == NOT_STARTED]

    @property
    def errors(self) -> list[InstanceReport]:
        """Instances that ran, or were meant to, and failed (not those never started)."""
        return [i for i in self.instances if not i.succeeded and i.status != NOT_STARTED]

    def markdown(self, event_url: EventUrl | None = None, feed_url: FeedUrl | None = None) -> str:
        total = len(self.instances)
        ok = total - len(self.failed)
        lines = [
            f"# {self.flow}: {ok} of {total} instance{'' if total == 1 else 's'} succeeded",
            "",
            f"Targets: {self.targets}. Error budget: {self.error_budget} "
            f"(max_errors {self.rate_control.get('max_errors')!r}); "
            f"{len(self.errors)} failed, {len(self.not_started)} not started.",
            "",
        ]
        if self.concurrency_limit:
            lines += [
                f"Shared global concurrency limit `{self.concurrency_limit}`: "
                f"{self.concurrency_limit_slots} instances at once across runs.",
                "",
            ]
        if self.stopped_reason:
            lines += [f"**Stopped:** {self.stopped_reason}", ""]
        if self.error:
            lines += [f"**The run ended early:** {self.error}", ""]
        lines += [
            "| batch | instances | at once | succeeded | failed | RunCommand calls | "
            "by event | by reconciliation | seconds |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for b in self.batches:
            seconds = "-" if b.seconds is None else f"{b.seconds:.2f}"
            lines.append(
                f"| {b.number}{' (canary)' if b.canary else ''} | {b.instances} | {b.width} | "
                f"{b.succeeded} | {b.failed} | {b.run_command_calls} | {b.by_event} | "
                f"{b.by_reconciliation} | {seconds} |"
            )
        if self.stopped:
            lines += [
                "",
                f"Stopped by the runbook (StopInvocation, no final status in time): "
                f"{', '.join(f'`{i}`' for i in self.stopped[:50])}"
                f"{' …' if len(self.stopped) > 50 else ''}.",
            ]
        if self.errors:
            lines += ["", "## Failed", ""]
            lines += [
                f"- `{i.instance_id}`: {i.status}"
                + (f", exit code {i.exit_code}" if i.exit_code is not None else "")
                + (f": {i.error}" if i.error else "")
                for i in self.errors[:100]
            ]
            if len(self.errors) > 100:
                lines.append(f"- … and {len(self.errors) - 100} more (see the table artifact)")
        if self.not_started:
            shown = ", ".join(f"`{i}`" for i in self.not_started[:50])
            more = len(self.not_started) - 50
            lines += [
                "",
                f"## Not started ({len(self.not_started)})",
                "",
                shown + (f" and {more} more" if more > 0 else "") + ".",
            ]
        lines += events_section(self.instances, event_url, feed_url)
        return "\n".join(lines)


HEAD_LINES = 200
TAIL_LINES = 200
LINE_CHARS = 500


def _fence(text: str) -> str:
    """A code fence longer than any run of backticks in `text`, so the output cannot end it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def output_markdown(row: InstanceReport, link: str | None = None, link_hours: float = 0) -> str:
    """One instance's output as a markdown artifact: all of it when short, else the first
    `HEAD_LINES` and the last `TAIL_LINES` lines with a marker of what was cut (lines longer
    than `LINE_CHARS` are cut too); `link` is where the whole output can be downloaded."""
    text = row.output or ""
    lines = text.splitlines()
    cut_lines = max(0, len(lines) - HEAD_LINES - TAIL_LINES)
    if cut_lines:
        marker = (
            f"… {cut_lines:,} lines cut (lines {HEAD_LINES + 1:,} to "
            f"{HEAD_LINES + cut_lines:,} of {len(lines):,}) …"
        )
        shown = [*lines[:HEAD_LINES], marker, *lines[-TAIL_LINES:]]
    else:
        shown = lines
    long_lines = sum(1 for line in shown if len(line) > LINE_CHARS)
    shown = [line if len(line) <= LINE_CHARS else line[:LINE_CHARS] + " …" for line in shown]
    body = "\n".join(shown)
    fence = _fence(body)
    status = row.status + (f", exit code {row.exit_code}" if row.exit_code is not None else "")
    source = {
        "oss": f"the full output, from OSS `{row.oss_uri}`",
        "inline": "the output returned by DescribeInvocationResults",
        "inline-truncated": "the output returned by DescribeInvocationResults, which keeps "
        "only its first 24 KB (no OSS output delivery)",
        "none": "no output",
    }[row.output_source]
    parts = [
        f"# Output of `{row.instance_id}` ({status})",
        "",
        f"Invocation `{row.invoke_id or '-'}`: {source}, {len(text.encode()):,} bytes in "
        f"{len(lines):,} lines. Cloud Assistant merges stdout and stderr into this one output.",
    ]
    if row.error:
        parts += ["", f"**Error:** {row.error}"]
    if link:
        valid = f" (valid {link_hours:g} h from the run's end)" if link_hours else ""
        parts += ["", f"[Download the whole output]({link}){valid}."]
    elif row.oss_uri:
        parts += ["", f"The whole output: `{row.oss_uri}`."]
    notes = []
    if cut_lines:
        notes.append(f"the middle {cut_lines:,} lines are cut")
    if long_lines:
        notes.append(f"{long_lines} lines longer than {LINE_CHARS} characters are cut")
    if notes:
        parts += ["", "Shown: " + "; ".join(notes) + "."]
    parts += ["", fence + "text", body, fence] if text else ["", "_(no output)_"]
    return "\n".join(parts)
