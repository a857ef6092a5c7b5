"""`provision_and_run` end to end on 100 instances: what the event-driven runbook costs.

The whole local stack (`LocalStack`: `prefect server start`, alisim with zero boot time, the
relay and the EventBridge rules), one bucket for OSS output delivery, and the flow run in this
process with a trivial script (`echo ok`), so what is measured is the runbook and the event
path, not the instances. One 3-instance warm-up run first keeps Prefect's first-run costs
(client, task registration, the first subscriptions) out of the figures.

Prints, per run and as the median over `--runs`:
- wall time of the flow (target < 30 s for 100 instances);
- per wait (FirstHeartbeat, TaskCompleted, OutputDelivered): how many settled by event and by
  reconciliation, the reaction latency p50/p99 (source event time to the wait settling it:
  the flow acting on it, target p50 < 50 ms) and the event path's p50 (source event time to
  its arrival in the flow's process);
- the API calls alisim counted during the run (snapshots before and after, subtracted, so the
  setup and warm-up calls are left out), Describe* calls highlighted (target 0 in the happy
  path), next to what a 5 s polling loop would have spent on the same run (`polling.estimate`).
With zero boot time every instance's three Instance:StateChange events and its FirstHeartbeat
are published in the same instant, so the launch is the worst burst the event path can see;
`--boot-seconds S` draws each boot time from 0 to S seconds instead, as real instances spread.
Usage: python -m bench.runbook_bench [--instances 100] [--runs 1] [--gap 65] [--boot-seconds 0]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import time
from dataclasses import dataclass

import httpx
from prefect.logging.handlers import PrefectConsoleHandler

from alicloud_runbooks.report import RunReport
from alisim.config import BootTime, Settings, zero_delay_settings
from flows.provision_and_run import provision_and_run
from flows.steps import CommandSpec
from local_stack.polling import PollingEstimate, estimate
from local_stack.stack import LocalStack, flush_prefect_clients

BUCKET = "runbook-bench-outputs"
SCRIPT = "echo ok"
WARM_UP_INSTANCES = 3
STEPS = ("FirstHeartbeat", "TaskCompleted", "OutputDelivered")
POLL_INTERVAL = 5.0
REPLAY_WINDOW_S = 65.0  # the Prefect client backfills one minute on connect, plus a margin

Calls = dict[str, dict[str, int]]


@dataclass
class RunFigures:
    instances: int
    wall_s: float
    report: RunReport
    calls: Calls
    polling: PollingEstimate

    @property
    def succeeded(self) -> int:
        return len(self.report.instances) - len(self.report.failed)

    @property
    def total_calls(self) -> int:
        return sum(n for actions in self.calls.values() for n in actions.values())

    @property
    def describe_calls(self) -> dict[str, int]:
        return {
            f"{product}.{action}": n
            for product, actions in self.calls.items()
            for action, n in actions.items()
            if action.startswith("Describe")
        }

    def step(self, name: str) -> tuple[int, int, int, float | None, float | None, float | None]:
        """By event, by reconciliation, unsettled, reaction p50 and p99 ms, and the event
        path's p50 ms (source event to its arrival in the flow's process)."""
        wait = next((w for w in self.report.waits if w.name == name), None)
        if wait is None:
            return 0, 0, 0, None, None, None
        return (
            wait.by_event,
            wait.by_reconciliation,
            wait.unsettled,
            wait.percentile(50),
            wait.percentile(99),
            wait.percentile(50, of="delivery_ms"),
        )


def _quiet_console() -> None:
    """The flow's INFO lines (one per task) would bury the figures; they still go to the API."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler):
            handler.setLevel(logging.WARNING)


def sim_settings(boot_seconds: float) -> Settings:
    if boot_seconds <= 0:
        return zero_delay_settings()
    return zero_delay_settings(boot_time_linux=BootTime(min_seconds=0, max_seconds=boot_seconds))


def _calls(sim_url: str) -> Calls:
    response = httpx.get(f"{sim_url}/_alisim/calls", timeout=10)
    response.raise_for_status()
    return response.json()["calls"]


def _subtract(after: Calls, before: Calls) -> Calls:
    diff: Calls = {}
    for product, actions in after.items():
        for action, n in actions.items():
            delta = n - before.get(product, {}).get(action, 0)
            if delta:
                diff.setdefault(product, {})[action] = delta
    return diff


def run_flow(stack: LocalStack, instances: int) -> RunFigures:
    before = _calls(stack.sim_url)
    started = time.perf_counter()
    report = asyncio.run(
        provision_and_run(
            count=instances,
            command=CommandSpec(script=SCRIPT, output_bucket=BUCKET),
            credentials=stack.credentials(),
            heartbeat_timeout=60,
            on_failure="continue",
            name="runbook-bench",
        )
    )
    wall = time.perf_counter() - started
    # The run's queued logs and events go out now, outside the timed run.
    flush_prefect_clients(timeout=10)
    calls = _subtract(_calls(stack.sim_url), before)
    return RunFigures(instances, wall, report, calls, estimate(report, POLL_INTERVAL))


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _actions(calls: dict[str, int]) -> str:
    return ", ".join(f"{action} {n}" for action, n in sorted(calls.items())) or "none"


def print_run(label: str, figures: RunFigures) -> None:
    print(
        f"\n{label}: wall {figures.wall_s:.2f} s (target < 30 s), "
        f"{figures.succeeded}/{figures.instances} succeeded"
    )
    print(
        f"  {'wait':<16} {'event':>6} {'recon':>6} {'unsettled':>9} {'p50 ms':>8} {'p99 ms':>8}"
        f" {'path p50':>9}   (reaction: source event to the wait settling it, target p50 < 50 ms;"
        " path: source event to its arrival in the flow's process)"
    )
    for name in STEPS:
        event, recon, unsettled, p50, p99, path = figures.step(name)
        print(
            f"  {name:<16} {event:>6} {recon:>6} {unsettled:>9} {_ms(p50):>8} {_ms(p99):>8}"
            f" {_ms(path):>9}"
        )
    print(f"  API calls counted by alisim: {figures.total_calls}")
    for product, actions in sorted(figures.calls.items()):
        print(f"    {product}: {_actions(actions)}")
    describe = figures.describe_calls
    print(
        f"  Describe* calls: {sum(describe.values())} (target 0)"
        + (f": {_actions(describe)}" if describe else "")
    )
    poll = figures.polling
    print(
        f"  a {poll.interval:.0f} s polling loop on the same run: {poll.total} Describe calls "
        f"({_actions(poll.calls)}), each change noticed {poll.mean_notice_delay_seconds:.1f} s "
        "late on average"
    )


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def print_median(runs: list[RunFigures]) -> None:
    print(f"\nmedian of {len(runs)} runs:")
    print(f"  wall {_median([r.wall_s for r in runs]):.2f} s (target < 30 s)")
    for name in STEPS:
        steps = [r.step(name) for r in runs]
        print(
            f"  {name:<16} reaction p50 {_ms(_median([s[3] for s in steps]))} ms, "
            f"p99 {_ms(_median([s[4] for s in steps]))} ms, "
            f"path p50 {_ms(_median([s[5] for s in steps]))} ms, "
            f"by event {_median([s[0] for s in steps]):.0f}, "
            f"by reconciliation {_median([s[1] for s in steps]):.0f}"
        )
    describe = _median([sum(r.describe_calls.values()) for r in runs])
    polling = _median([r.polling.total for r in runs])
    print(
        f"  API calls {_median([r.total_calls for r in runs]):.0f}, Describe* {describe:.0f} "
        f"(a {POLL_INTERVAL:.0f} s polling loop: {polling:.0f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=100)
    parser.add_argument("--runs", type=int, default=1, help="repeats; the median is printed too")
    parser.add_argument(
        "--boot-seconds",
        type=float,
        default=0.0,
        help="boot time drawn per instance from 0 to this (default 0: all at once)",
    )
    parser.add_argument(
        "--gap",
        type=float,
        default=REPLAY_WINDOW_S,
        help="seconds between repeats (default %(default)s): a Prefect event subscription "
        "replays the last minute of matching events when it connects, so a run started sooner "
        "also receives the previous run's hundreds of events",
    )
    parser.add_argument("--verbose", action="store_true", help="show the flows' own log lines")
    args = parser.parse_args()
    if not args.verbose:
        _quiet_console()
    t0 = time.perf_counter()
    stack = LocalStack(sim_settings=sim_settings(args.boot_seconds)).start()
    try:
        print(
            f"stack up in {time.perf_counter() - t0:.1f} s: prefect server {stack.api_url}, "
            f"alisim {stack.sim_url}, relay {stack.relay_url}, {len(stack.subscribed)} rules"
        )
        stack.credentials().oss_bucket(BUCKET).create_bucket()
        boot = f"boot 0-{args.boot_seconds:g} s" if args.boot_seconds > 0 else "zero boot time"
        print(
            f"provision_and_run on {args.instances} instances ({boot}), {SCRIPT!r}, output to "
            f"oss://{BUCKET}, {os.cpu_count()} cores"
        )
        with stack.prefect_client_settings():
            warm = run_flow(stack, WARM_UP_INSTANCES)
            print(
                f"warm-up ({WARM_UP_INSTANCES} instances, not counted): {warm.wall_s:.2f} s, "
                f"{warm.succeeded}/{WARM_UP_INSTANCES} succeeded"
            )
            runs: list[RunFigures] = []
            for n in range(1, args.runs + 1):
                if n > 1 and args.gap > 0:
                    time.sleep(args.gap)
                runs.append(run_flow(stack, args.instances))
                print_run(f"run {n}/{args.runs}", runs[-1])
        if len(runs) > 1:
            print_median(runs)
    finally:
        stack.stop()


if __name__ == "__main__":
    os.environ.setdefault("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
    main()
