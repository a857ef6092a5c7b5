"""Durable waits: how soon a suspended run is running again after its awaited event.

On the whole local stack (Prefect, alisim, the relay) with the runbooks served by
`deployments.serve` (runner poll 1 s), `--runs` `run-command` runs at once, each on its own
instance with `sleep <seconds>; echo done` and `suspend_after=2`: every run suspends while its
command runs and is resumed by the relayed TaskCompleted. Printed per run and as p50/p99:
- event → Resuming: the TaskCompleted reaching Prefect (the relay's receipt) to the run's
  `Resuming` state (the automation's reaction);
- event → Running: to the run's `Running` state again (the runner started its process);
- whether any process of the run existed while it was suspended.

Usage: python -m bench.durable_bench [--runs 5] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from prefect.client.orchestration import get_client

from alicloud_runbooks.events import names
from alisim.config import zero_delay_settings
from local_stack.servers import FAST_EVENT_STORE, PrefectServer
from local_stack.serving import ServedDeployments
from local_stack.stack import LocalStack

BLOCK = "durable-bench"


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def _start(instance_ids: list[str], seconds: float) -> list[str]:
    async with get_client() as client:
        deployment = await client.read_deployment_by_name("run-command/run-command")
        runs = []
        for instance_id in instance_ids:
            run = await client.create_flow_run_from_deployment(
                deployment.id,
                parameters={
                    "credentials_block": BLOCK,
                    "instance_ids": [instance_id],
                    "command": {
                        "script": f"sleep {seconds}; echo done",
                        "timeout": int(seconds * 6),
                        "suspend_after": 2,
                    },
                },
            )
            runs.append(str(run.id))
        return runs


def _processes_of(run_id: str) -> bool:
    marker = f"PREFECT__FLOW_RUN_ID={run_id}".encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "environ").read_bytes():
                    return True
            except OSError:
                continue
    return False


def _history(api: httpx.Client, run_id: str) -> list[dict[str, Any]]:
    states = api.get("/flow_run_states/", params={"flow_run_id": run_id}).json()
    return sorted(states, key=lambda s: s["timestamp"])


def _event_time(api: httpx.Client, instance_id: str) -> datetime | None:
    found = api.post(
        "/events/filter",
        json={
            "filter": {
                "event": {"name": [names.TASK_COMPLETED]},
                "resource": {"id": [names.instance_resource(instance_id)]},
                "occurred": {"since": "2026-01-01T00:00:00Z"},
            },
            "limit": 5,
        },
    ).json()["events"]
    return min((_time(e["occurred"]) for e in found), default=None)


def _pct(values: list[float], q: int) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    prefect = PrefectServer(extra_env=FAST_EVENT_STORE)
    stack = LocalStack(sim_settings=zero_delay_settings())
    try:
        prefect.start()
        stack.start(prefect=prefect)
        with ServedDeployments(stack, BLOCK), stack.prefect_client_settings():
            instances = stack.launch_ready(args.runs)
            runs = asyncio.run(_start(instances, args.seconds))
            api = httpx.Client(base_url=stack.api_url, timeout=30)
            # How long each run's process outlived its Suspended state (the flow engine's
            # shutdown), and whether one was still there later in the wait.
            suspended_at: dict[str, float] = {}
            exited_after: dict[str, float] = {}
            held_late = {r: False for r in runs}
            deadline = time.monotonic() + args.seconds * 6 + 300
            pending = set(runs)
            while pending and time.monotonic() < deadline:
                for run_id in list(pending):
                    current = api.get(f"/flow_runs/{run_id}").json()["state"]
                    if current["name"] == "Suspended":
                        now = time.monotonic()
                        since = now - suspended_at.setdefault(run_id, now)
                        alive = _processes_of(run_id)
                        if not alive and run_id not in exited_after:
                            exited_after[run_id] = since
                        if alive and run_id in exited_after:
                            held_late[run_id] = True
                    if current["type"] in ("COMPLETED", "FAILED", "CRASHED"):
                        pending.discard(run_id)
                time.sleep(0.5)
            to_resuming, to_running = [], []
            print(f"{args.runs} run-command runs, `sleep {args.seconds:g}`, {os.cpu_count()} cores")
            for run_id, instance_id in zip(runs, instances, strict=True):
                history = _history(api, run_id)
                names_ = [s["name"] for s in history]
                event = _event_time(api, instance_id)
                resuming = next((s for s in history if s["name"] == "Resuming"), None)
                after = history[names_.index("Resuming") :] if resuming else []
                running = next((s for s in after if s["name"] == "Running"), None)
                line = f"  {run_id[:8]}: {' > '.join(names_)}"
                if event and resuming and running:
                    a = (_time(resuming["timestamp"]) - event).total_seconds()
                    b = (_time(running["timestamp"]) - event).total_seconds()
                    to_resuming.append(a)
                    to_running.append(b)
                    pending_ = next((s for s in after if s["name"] == "Pending"), None)
                    picked = (
                        (
                            _time(pending_["timestamp"]) - _time(resuming["timestamp"])
                        ).total_seconds()
                        if pending_
                        else float("nan")
                    )
                    line += (
                        f"; event → Resuming {a:.2f} s, → Running {b:.2f} s "
                        f"(runner picked it up {picked:.2f} s after Resuming)"
                    )
                if run_id in exited_after:
                    line += f"; process gone {exited_after[run_id]:.1f} s after Suspended"
                line += "; a process came back while suspended" if held_late[run_id] else ""
                print(line)
            if to_running:
                print(
                    f"event → Resuming p50 {_pct(to_resuming, 50):.2f} s, p99 "
                    f"{_pct(to_resuming, 99):.2f} s; event → Running p50 "
                    f"{_pct(to_running, 50):.2f} s, p99 {_pct(to_running, 99):.2f} s; "
                    f"runs whose process was gone while suspended: {len(exited_after)} of "
                    f"{len(runs)}"
                )
    finally:
        stack.stop()
        prefect.stop()


if __name__ == "__main__":
    os.environ.setdefault("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
    main()
