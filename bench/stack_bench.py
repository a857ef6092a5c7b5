"""deploy-stack of a 50-instance stack, next to a 5 s GetStack polling loop on the same kind
of stack.

The whole local stack (`LocalStack`: `prefect server start`, alisim, the relay, EventBridge
rules): `deploy-stack` creates `templates/fleet.yaml` with Amount=50 and waits by event; a
ROS delay fault on the InstanceGroup makes each stack take `--stack-seconds`, as a real one
takes minutes. For each run, a second stack of the same template is created with the SDK and
polled with GetStack every 5 s, as Terraform, iact3 and iac-code do.

Prints per run and as medians: the flow's reaction (from the relay's receipt of the terminal
event to the wait settling: the flow acting on it), the terminal status's time in alisim to
the flow acting, the GetStack calls the wait spent (target 0), and for the polling loop its
GetStack calls and its lag (alisim's terminal status to the poll that saw it).
Usage: python -m bench.stack_bench [--runs 5] [--instances 50] [--stack-seconds 7.3]
       [--ports 4700]  (prefect, alisim and relay on three consecutive ports)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
from alibabacloud_ros20190910 import models as ros
from prefect.logging.handlers import PrefectConsoleHandler

from alicloud_runbooks.times import parse_time
from alisim.config import zero_delay_settings
from flows.deploy_stack import deploy_stack
from local_stack.stack import LocalStack, flush_prefect_clients

TEMPLATE = "templates/fleet.yaml"
POLL_INTERVAL = 5.0


def _quiet_console() -> None:
    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler):
            handler.setLevel(logging.WARNING)


def _terminal_time(sim_url: str, stack_id: str) -> datetime | None:
    """When alisim announced the stack's terminal status (its event log, not an API call)."""
    found = httpx.get(
        f"{sim_url}/_alisim/events",
        params={"type": "ros:Stack:StatusChange", "contains": stack_id},
        timeout=10,
    ).json()["events"]
    for event in found:
        if event["data"]["status"].endswith(("_COMPLETE", "_FAILED")):
            return parse_time(event.get("time"))
    return None


def _poll(stack: LocalStack, name: str, amount: int) -> tuple[int, float | None, str]:
    """CreateStack, then GetStack every 5 s until a terminal status: calls and lag (ms)."""
    client = stack.credentials().ros_client()
    region = stack.credentials().region_id
    body = (Path(__file__).resolve().parent.parent / TEMPLATE).read_text()
    stack_id = client.create_stack(
        ros.CreateStackRequest(
            region_id=region,
            stack_name=name,
            template_body=body,
            parameters=[
                ros.CreateStackRequestParameters(
                    parameter_key="Amount", parameter_value=str(amount)
                )
            ],
        )
    ).body.stack_id
    calls = 0
    while True:
        time.sleep(POLL_INTERVAL)
        calls += 1
        status = client.get_stack(ros.GetStackRequest(region_id=region, stack_id=stack_id)).body
        if not status.status.endswith("_IN_PROGRESS"):
            seen = datetime.now(UTC)
            at = _terminal_time(stack.sim_url, stack_id)
            lag = (seen - at).total_seconds() * 1000 if at else None
            client.delete_stack(ros.DeleteStackRequest(region_id=region, stack_id=stack_id))
            return calls, lag, status.status


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):.0f}" if values else "-"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--instances", type=int, default=50)
    parser.add_argument("--stack-seconds", type=float, default=7.3)
    parser.add_argument("--ports", type=int, default=None)
    args = parser.parse_args()
    ports = {}
    if args.ports:
        ports = {
            "prefect_port": args.ports,
            "sim_port": args.ports + 1,
            "relay_port": args.ports + 2,
        }
    local = LocalStack(sim_settings=zero_delay_settings(), **ports).start()
    _quiet_console()
    reactions: list[float] = []
    from_source: list[float] = []
    wait_calls: list[float] = []
    poll_calls: list[float] = []
    poll_lags: list[float] = []
    try:
        fault = {
            "resource_type": "ALIYUN::ECS::InstanceGroup",
            "delay_seconds": args.stack_seconds,
        }
        httpx.post(f"{local.sim_url}/_alisim/faults", json={"ros": [fault]}).raise_for_status()
        print(
            f"deploy-stack of {args.instances} instances, {args.runs} runs, each stack "
            f"~{args.stack_seconds:g} s; polling loop: GetStack every {POLL_INTERVAL:g} s"
        )
        for n in range(args.runs):
            with local.prefect_client_settings():
                report = asyncio.run(
                    deploy_stack(
                        name=f"bench-{n}",
                        template=TEMPLATE,
                        parameters={"Amount": str(args.instances)},
                        credentials=local.credentials(),
                    )
                )
                flush_prefect_clients(timeout=10)
            o = report.outcome
            source_ms = o.from_source_ms
            calls, lag, status = _poll(local, f"poll-{n}", args.instances)
            print(
                f"run {n}: {o.status} in {o.seconds:.1f} s, settled by {o.settled_by}; "
                f"relay receipt -> flow acting {o.reaction_ms or 0:.0f} ms, ROS status -> "
                f"flow acting {source_ms or 0:.0f} ms; GetStack calls by the wait "
                f"{o.get_stack_calls} | 5 s poll: {status}, {calls} GetStack calls, lag "
                f"{lag or 0:.0f} ms"
            )
            if o.reaction_ms is not None:
                reactions.append(o.reaction_ms)
            if source_ms is not None:
                from_source.append(source_ms)
            wait_calls.append(o.get_stack_calls)
            poll_calls.append(calls)
            if lag is not None:
                poll_lags.append(lag)
        print(
            f"p50: event wait {_median(reactions)} ms from relay receipt "
            f"({_median(from_source)} ms from ROS's status time), GetStack calls "
            f"{_median(wait_calls)}; 5 s polling: lag {_median(poll_lags)} ms, "
            f"GetStack calls {_median(poll_calls)}"
        )
    finally:
        local.stop()


if __name__ == "__main__":
    main()
