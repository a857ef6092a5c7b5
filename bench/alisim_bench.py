"""alisim at fleet scale: 1,000 instances launched and one RunCommand batch on all of them.

alisim runs as its own process (`runbooks sim --zero-boot`) so its peak memory is its own.
Prints: wall time of each phase, p50/p99 latency of the Describe calls, alisim's peak RSS.
Usage: python -m bench.alisim_bench [--instances N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import TypeVar

import httpx
from alibabacloud_ecs20140526 import models as ecs

from alicloud_runbooks.clients import Endpoint, ecs_client
from alisim.config import DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET, DEFAULT_REGION
from alisim.server import free_port

T = TypeVar("T")
REGION = DEFAULT_REGION
BATCH = 100  # the API's per-call limit for RunInstances Amount and RunCommand InstanceId


def _start_alisim(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "local_stack.cli",
            "sim",
            "--zero-boot",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/_alisim/health", timeout=1).raise_for_status()
            return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("alisim did not start")


def _peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _timed(latencies: list[float], call: Callable[[], T]) -> T:
    started = time.perf_counter()
    result = call()
    latencies.append((time.perf_counter() - started) * 1000)
    return result


def _events(url: str, type_: str) -> int:
    body = httpx.get(f"{url}/_alisim/events", params={"type": type_, "limit": 10000}).json()
    return len(body["events"])


def _wait_events(url: str, type_: str, count: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while _events(url, type_) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"fewer than {count} {type_} events after {timeout}s")
        time.sleep(0.1)


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--instances", type=int, default=1000)
    args = parser.parse_args()
    n = args.instances
    port = free_port()
    proc = _start_alisim(port)
    url = f"http://127.0.0.1:{port}"
    try:
        client = ecs_client(
            access_key_id=DEFAULT_ACCESS_KEY_ID,
            access_key_secret=DEFAULT_ACCESS_KEY_SECRET,
            region=REGION,
            endpoint=Endpoint(openapi=f"127.0.0.1:{port}", protocol="http"),
        )
        describe_ms: list[float] = []
        t0 = time.perf_counter()
        ids: list[str] = []
        for start in range(0, n, BATCH):
            amount = min(BATCH, n - start)
            ids += client.run_instances(
                ecs.RunInstancesRequest(
                    region_id=REGION,
                    image_id="aliyun_3_x64",
                    instance_type="ecs.g7.large",
                    amount=amount,
                )
            ).body.instance_id_sets.instance_id_set
        _wait_events(url, "ecs:CloudAssistant:FirstHeartbeat", n)
        t_launch = time.perf_counter() - t0

        t1 = time.perf_counter()
        invocations = [
            client.run_command(
                ecs.RunCommandRequest(
                    region_id=REGION,
                    type="RunShellScript",
                    command_content="echo ok",
                    instance_id=ids[i : i + BATCH],
                )
            ).body.invoke_id
            for i in range(0, n, BATCH)
        ]
        _wait_events(url, "ecs:CloudAssistant:TaskCompleted", n)
        t_run = time.perf_counter() - t1

        for _ in range(3):
            token = None
            while True:
                page = _timed(
                    describe_ms,
                    lambda t=token: (
                        client.describe_instances(
                            ecs.DescribeInstancesRequest(
                                region_id=REGION, max_results=100, next_token=t
                            )
                        ).body
                    ),
                )
                token = page.next_token
                if not token:
                    break
        success = 0
        for invoke_id in invocations:
            token = None
            while True:
                body = _timed(
                    describe_ms,
                    lambda t=token, i=invoke_id: (
                        client.describe_invocation_results(
                            ecs.DescribeInvocationResultsRequest(
                                region_id=REGION, invoke_id=i, max_results=50, next_token=t
                            )
                        ).body
                    ),
                )
                results = body.invocation.invocation_results.invocation_result
                success += sum(r.invocation_status == "Success" for r in results)
                token = body.invocation.next_token
                if not token:
                    break
        calls = httpx.get(f"{url}/_alisim/calls").json()
        print(f"instances: {n} (zero boot time), command: 'echo ok', 2 cores")
        print(
            f"launch to all FirstHeartbeat events: {t_launch:.2f} s "
            f"({n // BATCH} RunInstances calls)"
        )
        print(
            f"RunCommand batch to all TaskCompleted events: {t_run:.2f} s "
            f"({len(invocations)} RunCommand calls, {success}/{n} Success)"
        )
        print(f"wall time, launch + run: {t_launch + t_run:.2f} s")
        print(
            f"Describe latency over {len(describe_ms)} calls: p50 "
            f"{_pct(describe_ms, 50):.1f} ms, p99 {_pct(describe_ms, 99):.1f} ms"
        )
        print(f"alisim peak memory (VmHWM): {_peak_rss_mib(proc.pid):.0f} MiB")
        print(f"API calls counted by alisim: {calls['total']}")
    finally:
        proc.terminate()
        proc.wait(timeout=15)


if __name__ == "__main__":
    os.environ.setdefault("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
    main()
