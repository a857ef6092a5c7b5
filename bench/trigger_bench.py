"""Triggered runs: how soon a reactive deployment's run is Running after its event.

On the whole local stack (Prefect, alisim, the relay) with the runbooks served by
`deployments.serve` (`--poll-seconds`, default 1 as `runbooks up` serves them) and the
`restart-stopped-instances` trigger on: `--events` times, an instance is stopped through the
ECS SDK (one event per window, so each starts its own run); alisim publishes
`ecs:Instance:StateChange` → EventBridge → the relay → Prefect → the trigger → the runner.
Printed per event and as p50/p99:
- event → Running: the event reaching Prefect (the relay's receipt, the event's `occurred`)
  to the run's `Running` state (the trigger, the run's creation, the runner's poll, the flow
  process starting);
- event → created: the same to the run's creation (the automation alone);
- event → Pending: to the runner taking the run (its poll), before the flow's process starts;
- source → Running: from alisim's event time (EventBridge delivery and the relay included).

Usage: python -m bench.trigger_bench [--events 20] [--poll-seconds 1] [--start-method spawn]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from datetime import datetime
from typing import Any

import httpx
from alibabacloud_ecs20140526 import models as ecs

from alicloud_runbooks.events import names
from alisim.config import zero_delay_settings
from local_stack.servers import FAST_EVENT_STORE, PrefectServer
from local_stack.serving import ServedDeployments
from local_stack.stack import LocalStack

BLOCK = "trigger-bench"
TRIGGER = "restart-stopped-instances"
WINDOW_SECONDS = 5.0  # restart-stopped's `within` in prefect.yaml


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _stopped_event(api: httpx.Client, instance_id: str) -> dict[str, Any] | None:
    found = api.post(
        "/events/filter",
        json={
            "filter": {
                "event": {"name": [names.INSTANCE_STATE_CHANGE]},
                "resource": {"id": [names.instance_resource(instance_id)]},
                "occurred": {"since": "2026-01-01T00:00:00Z"},
            },
            "limit": 50,
        },
    ).json()["events"]
    stopped = [e for e in found if e["resource"].get(names.INSTANCE_STATE_LABEL) == "Stopped"]
    return stopped[0] if stopped else None


def _runs(api: httpx.Client, deployment_id: str) -> list[dict[str, Any]]:
    return api.post(
        "/flow_runs/filter", json={"deployments": {"id": {"any_": [deployment_id]}}}
    ).json()


def _state_at(api: httpx.Client, run_id: str, kind: str) -> datetime | None:
    states = api.get("/flow_run_states/", params={"flow_run_id": run_id}).json()
    found = [s for s in states if s["type"] == kind]
    return min(_time(s["timestamp"]) for s in found) if found else None


def _wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.1)
    raise RuntimeError(f"{what} within {timeout}s")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.trigger_bench")
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--poll-seconds", type=float, default=1.0)
    parser.add_argument("--start-method", choices=["forkserver", "spawn"], default="forkserver")
    args = parser.parse_args()
    prefect = PrefectServer(extra_env=FAST_EVENT_STORE)
    stack = LocalStack(sim_settings=zero_delay_settings())
    rows: list[tuple[str, float, float, float, float]] = []
    try:
        prefect.start()
        stack.start(prefect=prefect)
        api = httpx.Client(base_url=stack.api_url, timeout=30)
        with ServedDeployments(
            stack,
            BLOCK,
            poll_seconds=args.poll_seconds,
            enable_triggers=[TRIGGER],
            start_method=args.start_method,
            extra_env={"RUNBOOKS_WINDOW_SETTLE_SECONDS": "1"},
        ):
            deployment = api.get("/deployments/name/restart-stopped/restart-stopped").json()
            ids = stack.launch_ready(args.events)
            client = stack.credentials().ecs_client()
            for instance_id in ids:
                before = {r["id"] for r in _runs(api, deployment["id"])}
                client.stop_instances(
                    ecs.StopInstancesRequest(
                        region_id=stack.sim_settings.region, instance_id=[instance_id]
                    )
                )
                event = _wait(lambda i=instance_id: _stopped_event(api, i), 60, "no Stopped event")
                run = _wait(
                    lambda b=before: [r for r in _runs(api, deployment["id"]) if r["id"] not in b],
                    60,
                    "no triggered run",
                )[0]
                running = _wait(lambda r=run: _state_at(api, r["id"], "RUNNING"), 60, "not Running")
                pending = _state_at(api, run["id"], "PENDING") or running
                occurred = _time(event["occurred"])
                source = _time(event["payload"]["acs"]["time"])
                rows.append(
                    (
                        instance_id,
                        (running - occurred).total_seconds(),
                        (_time(run["created"]) - occurred).total_seconds(),
                        (running - source).total_seconds(),
                        (pending - occurred).total_seconds(),
                    )
                )
                print(
                    f"{instance_id}: event → Running {rows[-1][1]:.2f}s "
                    f"(created {rows[-1][2]:.2f}s, Pending {rows[-1][4]:.2f}s), "
                    f"source → Running {rows[-1][3]:.2f}s",
                    flush=True,
                )
                # The next stop must fall after this window, to start a run of its own.
                left = occurred.timestamp() + WINDOW_SECONDS + 0.5 - time.time()
                if left > 0:
                    time.sleep(left)
    finally:
        stack.stop()
        prefect.stop()
    running = [r[1] for r in rows]
    created = [r[2] for r in rows]
    whole = [r[3] for r in rows]
    pending = [r[4] for r in rows]
    cpus = os.cpu_count()
    load = os.getloadavg()[0]
    print(
        f"\n{len(rows)} triggered runs, runner poll {args.poll_seconds:g}s, start "
        f"{args.start_method}, {cpus} CPUs, load average {load:.1f}:"
    )
    for label, values in (
        ("event → Running ", running),
        ("event → created ", created),
        ("event → Pending ", pending),
        ("source → Running", whole),
    ):
        print(
            f"  {label} p50 {statistics.median(values):.2f}s  p99 {_pct(values, 0.99):.2f}s"
            f"  max {max(values):.2f}s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
