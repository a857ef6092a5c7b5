"""`provision_and_run` under injected faults: does every instance end right, and what does a
lost event cost?

On the whole local stack (`prefect server start`, alisim with zero boot time, the relay, the
EventBridge rules), for each size, three runs of the same runbook:
- fault-free;
- 10% of EventBridge pushes dropped (target: within 3x the fault-free wall time, at most one
  Describe call per 50 missing keys per reconciliation round);
- 10% dropped + 20% duplicated + 10% reordered pushes, and 5% of ECS API calls throttled.
The script fails with exit code 3 on the instances whose id ends in an even digit, so the
right outcome differs per instance; "correct" compares each row of the report (status, exit
code) with that rule. Then the memory of one 10,000-key wait, in this process.

Usage: python -m bench.fault_bench [--sizes 300,1000] [--memory-keys 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import time
import tracemalloc
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from prefect.logging.handlers import PrefectConsoleHandler

from alicloud_runbooks.cloud_assistant import CommandClock, Invocation, task_completed_wait
from alicloud_runbooks.events import names
from alicloud_runbooks.report import RunReport
from alicloud_runbooks.stream import EventStream
from alicloud_runbooks.waiter import Owner, wait_for_events
from alisim.config import zero_delay_settings
from flows.provision_and_run import provision_and_run
from flows.steps import CommandSpec
from local_stack.stack import LocalStack, flush_prefect_clients

BUCKET = "fault-bench-outputs"
SCRIPT = 'case "$INSTANCE_ID" in *[02468]) echo "even: failing"; exit 3;; esac; echo ok'
DROP = {"drop_rate": 0.1}
COMBINED = {
    "delivery": {"drop_rate": 0.1, "duplicate_rate": 0.2, "reorder_rate": 0.1},
    "api": [{"product": "Ecs", "action": "*", "error": "Throttling.User", "rate": 0.05}],
}


def expected(instance_id: str) -> tuple[str, int]:
    return ("Failed", 3) if instance_id[-1] in "02468" else ("Success", 0)


@dataclass
class Run:
    label: str
    instances: int
    wall_s: float
    report: RunReport
    describe: dict[str, int]

    @property
    def correct(self) -> int:
        return sum(
            1 for r in self.report.instances if (r.status, r.exit_code) == expected(r.instance_id)
        )

    def total(self, field: str) -> int:
        return sum(getattr(w, field) for w in self.report.waits)

    @property
    def counted_once(self) -> bool:
        ids = [r.instance_id for r in self.report.instances]
        return len(ids) == len(set(ids)) and all(
            w.by_event + w.by_reconciliation + w.unsettled == w.instances for w in self.report.waits
        )

    @property
    def rounds(self) -> int:
        return self.total("straggler_rounds") + self.total("deadline_rounds")


def _faults(stack: LocalStack, plan: dict[str, Any]) -> None:
    httpx.put(f"{stack.sim_url}/_alisim/faults", json=plan, timeout=10).raise_for_status()


def _describe_calls(stack: LocalStack) -> dict[str, int]:
    calls = httpx.get(f"{stack.sim_url}/_alisim/calls", timeout=10).json()["calls"]
    return {a: n for a, n in calls.get("Ecs", {}).items() if a.startswith("Describe")}


def settle(stack: LocalStack, timeout: float = 120) -> None:
    """Until the previous run's events have all been pushed and Prefect has stored them, so
    each run starts on a quiet stack (a 1,000-instance run leaves thousands behind it)."""
    deadline = time.monotonic() + timeout
    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    last = -1
    while time.monotonic() < deadline:
        pending = httpx.get(f"{stack.sim_url}/_alisim/health", timeout=10).json()
        stored = httpx.post(
            f"{stack.api_url}/events/filter",
            json={"filter": {"occurred": {"since": since}}, "limit": 1},
            timeout=30,
        ).json()["total"]
        if pending["deliveries_pending"] == 0 and stored == last:
            return
        last = stored
        time.sleep(1.0)


def run(stack: LocalStack, label: str, instances: int, plan: dict[str, Any] | None) -> Run:
    settle(stack)
    httpx.delete(f"{stack.sim_url}/_alisim/calls", timeout=10).raise_for_status()
    _faults(stack, plan or {})
    started = time.perf_counter()
    report = asyncio.run(
        provision_and_run(
            count=instances,
            command=CommandSpec(
                script=SCRIPT, output_bucket=BUCKET, result_grace=120, delivery_timeout=120
            ),
            credentials=stack.credentials(),
            heartbeat_timeout=120,
            on_failure="continue",
            name="fault-bench",
        )
    )
    wall = time.perf_counter() - started
    _faults(stack, {})
    flush_prefect_clients(timeout=10)
    return Run(label, instances, wall, report, _describe_calls(stack))


def print_runs(runs: list[Run]) -> None:
    base = runs[0].wall_s
    print(
        f"  {'run':<34} {'correct':>11} {'wall s':>7} {'x base':>6} {'by event':>9} "
        f"{'by recon':>8} {'copies':>6} {'rounds':>6} {'Describe calls':<40}"
    )
    for r in runs:
        describe = ", ".join(f"{a} {n}" for a, n in sorted(r.describe.items())) or "none"
        print(
            f"  {r.label:<34} {r.correct:>5}/{r.instances:<5} {r.wall_s:>7.1f} "
            f"{r.wall_s / base:>6.1f} {r.total('by_event'):>9} {r.total('by_reconciliation'):>8} "
            f"{r.total('duplicates'):>6} {r.rounds:>6} {describe:<40}"
        )
        if not r.counted_once:
            print("    !! an instance or a key was counted twice")
    dropped = runs[1]
    missing = dropped.total("by_reconciliation")
    calls = sum(dropped.describe.values())
    allowed = sum(
        math.ceil(w.by_reconciliation / 50) * (w.straggler_rounds + w.deadline_rounds)
        for w in dropped.report.waits
    )
    print(
        f"  10% dropped: {dropped.wall_s / base:.1f}x the fault-free wall time (target <= 3x); "
        f"{calls} Describe calls for {missing} missing keys in {dropped.rounds} rounds "
        f"(target <= {max(allowed, dropped.rounds)}: one per 50 missing keys per round)"
    )


async def wait_memory(stack: LocalStack, keys: int) -> None:
    """A 10,000-key TaskCompleted wait on a stream that also sees another 10,000 instances'
    heartbeats before it is narrowed: what the wait and its stream hold."""
    api = stack.api_url
    instance_ids = [f"i-mem{uuid.uuid4().hex[:16]}" for _ in range(keys)]
    invocations = [
        Invocation(
            invoke_id=f"t-mem{uuid.uuid4().hex[:12]}",
            command_id="c-mem",
            instance_ids=instance_ids[i : i + 100],
            started_at=datetime.now(UTC),
        )
        for i in range(0, keys, 100)
    ]
    account, region = stack.sim_settings.account_id, stack.sim_settings.region

    def event(name: str, instance: str, invocation: Invocation | None) -> dict[str, Any]:
        now = datetime.now(UTC).isoformat()
        related = (
            [
                {
                    "prefect.resource.id": names.invocation_resource(invocation.invoke_id),
                    "prefect.resource.role": "invocation",
                },
                {
                    "prefect.resource.id": names.command_resource("c-mem"),
                    "prefect.resource.role": "command",
                },
            ]
            if invocation
            else []
        )
        return {
            "id": str(uuid.uuid4()),
            "occurred": now,
            "event": name,
            "resource": {
                "prefect.resource.id": names.instance_resource(instance),
                names.ACCOUNT_LABEL: account,
                names.REGION_LABEL: region,
            },
            "related": related,
            "payload": {
                "acs": {"time": now},
                "instanceId": instance,
                "invokeId": invocation.invoke_id if invocation else "",
                "invocationStatus": "Success",
                "exitCode": "0",
            },
        }

    async with httpx.AsyncClient(timeout=60) as client:

        async def post(events: list[dict[str, Any]]) -> None:
            for i in range(0, len(events), 250):
                (await client.post(f"{api}/events", json=events[i : i + 250])).raise_for_status()

        tracemalloc.start()
        started = time.perf_counter()
        async with EventStream([names.FIRST_HEARTBEAT, names.TASK_COMPLETED]) as stream:
            noise = [f"i-noise{uuid.uuid4().hex[:12]}" for _ in range(keys)]
            await post([event(names.FIRST_HEARTBEAT, i, None) for i in noise])
            before_narrow = stream.backlog_size
            stream.narrow([names.instance_resource(i) for i in instance_ids])
            spec = task_completed_wait(
                invocations,
                datetime.now(UTC) - timedelta(minutes=5),
                CommandClock(timeout=300, grace=0, start_timeout=0),
                Owner(account, region),
            )
            waiting = asyncio.create_task(wait_for_events(spec, None, stream=stream))
            by_instance = {i: inv for inv in invocations for i in inv.instance_ids}
            await post([event(names.TASK_COMPLETED, i, by_instance[i]) for i in instance_ids])
            result = await waiting
        _, peak = tracemalloc.get_traced_memory()
        held = tracemalloc.take_snapshot()
        tracemalloc.stop()
    retained = sum(s.size for s in held.statistics("filename"))
    print(
        f"\n{keys:,}-key wait: {len(result.settled):,} settled ({result.live_events:,} live, "
        f"{result.stored_events:,} from the store) in {time.perf_counter() - started:.1f} s; "
        f"the stream kept {before_narrow:,} unrelated heartbeats until narrowed, 0 after; "
        f"Python memory peak {peak / 2**20:.1f} MiB, held after the wait "
        f"{retained / 2**20:.1f} MiB (results included)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="300,1000")
    parser.add_argument("--memory-keys", type=int, default=10_000)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    if not args.verbose:
        for handler in logging.getLogger().handlers:
            if isinstance(handler, PrefectConsoleHandler):
                handler.setLevel(logging.CRITICAL)
    stack = LocalStack(sim_settings=zero_delay_settings()).start()
    try:
        stack.credentials().oss_bucket(BUCKET).create_bucket()
        print(f"provision_and_run under faults, {os.cpu_count()} cores, script {SCRIPT!r}")
        with stack.prefect_client_settings():
            run(stack, "warm-up", 3, None)
            for size in [int(s) for s in args.sizes.split(",") if s]:
                print(f"\n{size} instances:")
                runs = [
                    run(stack, "fault-free", size, None),
                    run(stack, "10% dropped", size, {"delivery": DROP}),
                    run(stack, "10% drop, 20% dup, 10% reorder, 5% throttled", size, COMBINED),
                ]
                print_runs(runs)
            if args.memory_keys:
                asyncio.run(wait_memory(stack, args.memory_keys))
    finally:
        stack.stop()


if __name__ == "__main__":
    os.environ.setdefault("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
    main()
