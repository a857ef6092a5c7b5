"""The event runbook against two polling runbooks, side by side, measured from outside.

One local stack (`prefect server start`, alisim and the relay each in its own process as in
production (`bench/split_stack.py`; `--in-process` runs them as threads here), the EventBridge
rules), boots drawn per instance over 0 to `--boot-seconds` s. At each size the same alisim
runs, one after the other: `provision_and_run` (events, driven as in
`bench/runbook_bench.py`), and the polling baseline (`bench/polling_runbook.py`) with a fixed
5 s interval and with OOS `ACS::WaitFor`'s back-off (2, 4, 8 … s, capped at 300 s). Every
figure comes from alisim's call log (`GET /_alisim/call-log`: each API call's and each
published event's time at alisim), not from the runbooks' own accounts:

- heartbeat → RunCommand: the last FirstHeartbeat published to the first RunCommand call;
- delivery → read: the last TaskCompleted/OutputDelivered published to the first OSS
  GetObject (the first output read);
- wall: the runbook from its start to its return;
- Describe calls: every Describe* call alisim served during the run.

Prints a table and draws `docs/side-by-side.png` (needs the `bench` extra: matplotlib).
Usage: python -m bench.side_by_side [--sizes 10 100 1000] [--boot-seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from pydantic import BaseModel

from alicloud_runbooks.report import WaitSummary
from alisim.config import BootTime, zero_delay_settings
from bench.polling_runbook import fixed, oos_backoff, polling_provision_and_run
from bench.runbook_bench import WARM_UP_INSTANCES, _quiet_console
from bench.split_stack import start_split
from flows.provision_and_run import provision_and_run
from flows.steps import CommandSpec
from local_stack.stack import LocalStack, flush_prefect_clients

BUCKET = "side-by-side-outputs"
SCRIPT = "echo ok"
FIRST_HEARTBEAT = "ecs:CloudAssistant:FirstHeartbeat"
RESULT_EVENTS = ("ecs:CloudAssistant:TaskCompleted", "ecs:CloudAssistant:OutputDelivered")
RUNBOOKS = ("events", "poll 5 s", "OOS back-off")
FIGURE = Path(__file__).resolve().parents[1] / "docs" / "side-by-side.png"


class Measured(BaseModel):
    """One runbook at one size, from alisim's call log."""

    runbook: str
    instances: int
    succeeded: int
    wall_s: float
    heartbeat_to_run_ms: float | None
    delivery_to_read_ms: float | None
    describe_calls: int
    api_calls: int
    paths: dict[str, str] = {}
    """Events only: per wait, the event path (source event to its arrival in the flow's
    process) p50/max and how its keys settled: where the time goes."""


def _log(sim_url: str, since: float) -> dict[str, list[dict]]:
    response = httpx.get(f"{sim_url}/_alisim/call-log", params={"since": since}, timeout=30)
    response.raise_for_status()
    return response.json()


Run = Callable[[], tuple[int, dict[str, str]]]


def measure(sim_url: str, runbook: str, instances: int, run: Run) -> Measured:
    """Run `run` (it returns how many instances succeeded, and notes) and read the call log
    of its window."""
    started = time.time()
    perf = time.perf_counter()
    succeeded, paths = run()
    wall = time.perf_counter() - perf
    ended = time.time()
    log = _log(sim_url, started)
    calls = [c for c in log["calls"] if c["time"] <= ended]
    events = [e for e in log["events"] if e["time"] <= ended]
    beats = [e["time"] for e in events if e["type"] == FIRST_HEARTBEAT]
    results = [e["time"] for e in events if e["type"] in RESULT_EVENTS]
    run_calls = [c["time"] for c in calls if c["action"] == "RunCommand"]
    reads = [c["time"] for c in calls if c["product"] == "Oss" and c["action"] == "GetObject"]
    to_run = None
    if beats and run_calls:
        to_run = (min(t for t in run_calls if t >= max(beats)) - max(beats)) * 1000
    to_read = None
    if results and reads:
        after = [t for t in reads if t >= max(results)]
        to_read = ((min(after) if after else max(reads)) - max(results)) * 1000
    return Measured(
        runbook=runbook,
        instances=instances,
        succeeded=succeeded,
        wall_s=wall,
        heartbeat_to_run_ms=to_run,
        delivery_to_read_ms=to_read,
        describe_calls=sum(1 for c in calls if c["action"].startswith("Describe")),
        api_calls=len(calls),
        paths=paths,
    )


def _path(wait: WaitSummary) -> str:
    path = wait.delivery_ms
    spread = f"path p50 {path[len(path) // 2]:,.0f} ms, max {path[-1]:,.0f} ms" if path else "-"
    return f"{spread}; {wait.by_event} by event, {wait.by_reconciliation} by reconciliation"


def _event_run(stack: LocalStack, instances: int) -> tuple[int, dict[str, str]]:
    report = asyncio.run(
        provision_and_run(
            count=instances,
            command=CommandSpec(script=SCRIPT, output_bucket=BUCKET),
            credentials=stack.credentials(),
            heartbeat_timeout=120,
            on_failure="continue",
            name="side-by-side",
        )
    )
    flush_prefect_clients(timeout=10)
    paths = {w.name: _path(w) for w in report.waits}
    return len(report.instances) - len(report.failed), paths


def _polling_run(stack: LocalStack, instances: int, policy: str) -> tuple[int, dict[str, str]]:
    intervals = fixed(5) if policy == "fixed" else oos_backoff()
    figures = polling_provision_and_run(
        stack.credentials(), instances, SCRIPT, BUCKET, intervals, prefix=f"polling-{policy}"
    )
    return sum(1 for s in figures.statuses.values() if s == "Success"), {}


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def print_table(rows: list[Measured]) -> None:
    print(
        f"\n{'size':>5}  {'runbook':<13} {'ok':>5} {'wall s':>7} {'beat→Run ms':>12} "
        f"{'result→read ms':>15} {'Describe':>9} {'API calls':>10}"
    )
    for r in rows:
        print(
            f"{r.instances:>5}  {r.runbook:<13} {r.succeeded:>5} {r.wall_s:>7.1f} "
            f"{_ms(r.heartbeat_to_run_ms):>12} {_ms(r.delivery_to_read_ms):>15} "
            f"{r.describe_calls:>9} {r.api_calls:>10}"
        )
        for name, text in r.paths.items():
            print(f"{'':>7}{name}: {text}")


def draw(rows: list[Measured], path: Path, note: str) -> None:
    """Per size: the two step delays and the Describe calls, events vs both baselines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({r.instances for r in rows})
    by = {(r.instances, r.runbook): r for r in rows}
    panels = [
        ("last FirstHeartbeat → RunCommand (s)", lambda r: (r.heartbeat_to_run_ms or 0) / 1000),
        (
            "last result/delivery → first output read (s)",
            lambda r: (r.delivery_to_read_ms or 0) / 1000,
        ),
        ("Describe* calls", lambda r: r.describe_calls),
        ("wall time (s)", lambda r: r.wall_s),
    ]
    colours = {"events": "#2a9d8f", "poll 5 s": "#e9c46a", "OOS back-off": "#e76f51"}
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.2))
    width = 0.8 / len(RUNBOOKS)
    for ax, (title, value) in zip(axes, panels, strict=True):
        for n, runbook in enumerate(RUNBOOKS):
            xs = [i + (n - 1) * width for i in range(len(sizes))]
            ys = [value(by[(s, runbook)]) if (s, runbook) in by else 0 for s in sizes]
            bars = ax.bar(xs, ys, width, label=runbook, color=colours[runbook])
            ax.bar_label(bars, fmt="%.3g", fontsize=7, padding=1)
        ax.set_xticks(range(len(sizes)), [f"{s:,} inst." for s in sizes])
        ax.set_title(title, fontsize=10)
        ax.margins(y=0.15)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"provision-and-run: events vs polling, measured at alisim ({note})", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"\nfigure: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--boot-seconds", type=float, default=10.0)
    parser.add_argument("--figure", type=Path, default=FIGURE)
    parser.add_argument(
        "--ports",
        type=int,
        nargs=3,
        default=None,
        metavar=("PREFECT", "ALISIM", "RELAY"),
        help="fixed ports for the stack, with --in-process (default: free ones)",
    )
    parser.add_argument(
        "--in-process", action="store_true", help="alisim and the relay as threads of this one"
    )
    parser.add_argument("--verbose", action="store_true", help="show the flows' own log lines")
    args = parser.parse_args()
    if not args.verbose:
        _quiet_console()
    settings = zero_delay_settings(
        boot_time_linux=BootTime(min_seconds=0, max_seconds=args.boot_seconds)
    )
    ports = args.ports or (None, None, None)
    stack = LocalStack(
        sim_settings=settings, prefect_port=ports[0], sim_port=ports[1], relay_port=ports[2]
    )
    rows: list[Measured] = []
    try:
        if args.in_process:
            stack.start()
        else:
            start_split(stack)
        stack.credentials().oss_bucket(BUCKET).create_bucket()
        note = f"boots 0-{args.boot_seconds:g} s, {os.cpu_count()} cores"
        print(f"side by side at {args.sizes} instances, {note}, script {SCRIPT!r}")
        with stack.prefect_client_settings():
            _event_run(stack, WARM_UP_INSTANCES)  # Prefect's first-run costs, not counted
            for size in args.sizes:
                runs: list[tuple[str, Run]] = [
                    ("events", lambda s=size: _event_run(stack, s)),
                    ("poll 5 s", lambda s=size: _polling_run(stack, s, "fixed")),
                    ("OOS back-off", lambda s=size: _polling_run(stack, s, "oos")),
                ]
                for runbook, run in runs:
                    rows.append(measure(stack.sim_url, runbook, size, run))
                    print_table(rows[-1:])
        print_table(rows)
        draw(rows, args.figure, note)
    finally:
        stack.stop()


if __name__ == "__main__":
    os.environ.setdefault("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
    main()
