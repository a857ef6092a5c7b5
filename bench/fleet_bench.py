"""`fleet_run` on 1,000 instances in batches of 10%: what rate control costs.

The whole local stack (`prefect server start`, alisim with zero boot time, the relay and the
EventBridge rules), 1,000 running instances launched beforehand, and the flow run in this
process with `echo ok` (outputs read inline), so what is measured is the rollout and the event
path, not the instances. A 3-instance warm-up run comes first.

Two runs: `concurrency 2` (OOS's ConcurrencyInBatches: each batch of 100 is a sliding window
of 2 instances, a RunCommand call each time a slot frees) and, for comparison, each batch at
once (one RunCommand call of 100). Prints per run: wall time; per batch the API calls
(RunCommand, DescribeInvocationResults for the inline outputs, reconciliation calls), checked
against alisim's own count for the run; and the gap from a batch's last result (its
TaskCompleted event settling) to the next batch's first RunCommand call.

Usage: python -m bench.fleet_bench [--instances 1000] [--batch 10%] [--concurrency 2 (0: all)]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import statistics
import time

import httpx
from alibabacloud_ecs20140526 import models as ecs
from prefect.logging.handlers import PrefectConsoleHandler

from alicloud_runbooks.cloud_assistant import RESULTS_PAGE_SIZE
from alicloud_runbooks.rate_control import RateControl
from alicloud_runbooks.report import FleetReport
from alisim.config import zero_delay_settings
from flows.fleet_run import fleet_run
from flows.steps import CommandSpec
from local_stack.stack import LocalStack, flush_prefect_clients

SCRIPT = "echo ok"
REGION = "cn-hangzhou"
REPLAY_WINDOW_S = 65.0

Calls = dict[str, dict[str, int]]


def _quiet_console() -> None:
    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler):
            handler.setLevel(logging.WARNING)


def _calls(stack: LocalStack) -> Calls:
    response = httpx.get(f"{stack.sim_url}/_alisim/calls", timeout=10)
    response.raise_for_status()
    return response.json()["calls"]


def _subtract(after: Calls, before: Calls) -> dict[str, int]:
    return {
        f"{product}.{action}": n - before.get(product, {}).get(action, 0)
        for product, actions in after.items()
        for action, n in actions.items()
        if n - before.get(product, {}).get(action, 0)
    }


def launch(stack: LocalStack, count: int) -> list[str]:
    """Running instances with their agents online, 100 per RunInstances call."""
    client = stack.credentials().ecs_client()
    ids: list[str] = []
    while len(ids) < count:
        ids += client.run_instances(
            ecs.RunInstancesRequest(
                region_id=REGION,
                image_id="aliyun_3_x64",
                instance_type="ecs.g7.large",
                amount=min(100, count - len(ids)),
            )
        ).body.instance_id_sets.instance_id_set
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        online = 0
        for start in range(0, len(ids), 50):
            statuses = client.describe_cloud_assistant_status(
                ecs.DescribeCloudAssistantStatusRequest(
                    region_id=REGION, instance_id=ids[start : start + 50], max_results=50
                )
            ).body.instance_cloud_assistant_status_set.instance_cloud_assistant_status
            online += sum(1 for s in statuses if s.cloud_assistant_status == "true")
        if online == len(ids):
            return ids
        time.sleep(0.5)
    raise RuntimeError("the instances' agents did not come online within 120 s")


def run(
    stack: LocalStack, ids: list[str], control: RateControl
) -> tuple[FleetReport, float, dict[str, int]]:
    before = _calls(stack)
    started = time.perf_counter()
    report = asyncio.run(
        fleet_run(
            CommandSpec(script=SCRIPT),
            instance_ids=ids,
            rate_control=control,
            credentials=stack.credentials(),
        )
    )
    wall = time.perf_counter() - started
    flush_prefect_clients(timeout=10)
    return report, wall, _subtract(_calls(stack), before)


def _pct(values: list[float], q: int) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def print_run(label: str, report: FleetReport, wall: float, calls: dict[str, int]) -> None:
    ok = len(report.instances) - len(report.failed)
    print(f"\n{label}: wall {wall:.1f} s, {ok}/{len(report.instances)} succeeded")
    print(
        f"  {'batch':>5} {'instances':>9} {'at once':>7} {'RunCommand':>10} {'outputs':>7} "
        f"{'recon':>5} {'API calls':>9} {'by event':>8} {'seconds':>8}"
    )
    sizes = {inv.invoke_id: len(inv.instance_ids) for inv in report.invocations}
    counted = 0
    for b in report.batches:
        # DescribeInvocationResults pages 50 results: one call per 50 instances of a group.
        outputs = sum(math.ceil(sizes[i] / RESULTS_PAGE_SIZE) for i in b.invoke_ids)
        api = b.run_command_calls + outputs + b.reconciliation_rounds
        counted += api
        print(
            f"  {b.number:>5} {b.instances:>9} {b.width:>7} {b.run_command_calls:>10} "
            f"{outputs:>7} {b.reconciliation_rounds:>5} {api:>9} {b.by_event:>8} "
            f"{(b.seconds or 0):>8.2f}"
        )
    ecs_calls = sum(n for k, n in calls.items() if k.startswith("Ecs."))
    print(
        f"  API calls: RunCommand, DescribeInvocationResults for the inline outputs (one per 50 "
        f"instances of a group), reconciliation rounds; sum {counted}, alisim counted "
        f"{ecs_calls} ECS calls ({', '.join(f'{k} {n}' for k, n in sorted(calls.items()))})"
    )
    gaps = [
        (after.first_command_at - before.last_result_at).total_seconds() * 1000
        for before, after in zip(report.batches, report.batches[1:], strict=False)
        if before.last_result_at and after.first_command_at
    ]
    if gaps:
        print(
            f"  last result of a batch -> next batch's first RunCommand: p50 {_pct(gaps, 50):.0f}"
            f" ms, max {max(gaps):.0f} ms (over {len(gaps)} gaps)"
        )
    print(f"  progress artifact writes: {report.progress_writes}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--batch", default="10%")
    parser.add_argument(
        "--concurrency", type=int, default=2, help="instances at once in a batch (0: all)"
    )
    parser.add_argument(
        "--skip-whole-batches", action="store_true", help="only the concurrency-limited run"
    )
    parser.add_argument("--verbose", action="store_true", help="show the flows' own log lines")
    args = parser.parse_args()
    if not args.verbose:
        _quiet_console()
    t0 = time.perf_counter()
    stack = LocalStack(sim_settings=zero_delay_settings()).start()
    try:
        print(
            f"stack up in {time.perf_counter() - t0:.1f} s; {os.cpu_count()} cores; "
            f"launching {args.instances + 3} instances"
        )
        with stack.prefect_client_settings():
            ids = launch(stack, args.instances + 3)
            warm, fleet = ids[:3], ids[3:]
            _, wall, _ = run(stack, warm, RateControl(batch_size=1))
            print(f"warm-up (3 instances in 3 batches, not counted): {wall:.2f} s")
            control = RateControl(batch_size=args.batch, concurrency=args.concurrency or None)
            print_run(
                f"batches of {args.batch}, concurrency {args.concurrency or 'the whole batch'}",
                *run(stack, fleet, control),
            )
            if args.concurrency and not args.skip_whole_batches:
                # A subscription replays the last minute of matching events when it opens:
                # wait it out, so this run's batches do not receive the previous run's.
                time.sleep(REPLAY_WINDOW_S)
                print_run(
                    f"batches of {args.batch}, each at once",
                    *run(stack, fleet, RateControl(batch_size=args.batch)),
                )
    finally:
        stack.stop()


if __name__ == "__main__":
    os.environ.setdefault("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
    main()
