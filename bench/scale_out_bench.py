"""Relay ingest against Prefect's own `POST /api/events` ingest, in the same run: on the
scale-out stack (PostgreSQL, Redis, two API servers, one services process, two relays) or on
the default one (`--backend sqlite`: one `prefect server start`, one relay).

Both paths get the same events under the same closed-loop load: `--concurrency` clients, each
sending one event a request (as EventBridge pushes) as fast as answers come, for `--seconds`,
spread round-robin over two targets (as a load balancer would):
- relay: CloudEvents to two `runbooks relay` processes, replica 1 posting to API server 1,
  replica 2 to API server 2;
- prefect: the very events the relay would write (its own mapping of the same CloudEvents)
  straight to the two API servers' `POST /api/events`.
Prints, per path: acknowledged events/s, request p50/p99, and how many acknowledged events
were stored (`/api/events/filter`) once the persister drained; then relay / prefect.
Usage: python -m bench.relay_bench --backend scale-out [--seconds 10] [--concurrency 32]
(or python -m bench.scale_out_bench [--backend sqlite|scale-out] [--seconds 10]
[--concurrency 32])
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from alicloud_runbooks.events.mapping import from_cloud_event
from bench.relay_bench import TOKEN, _stored
from bench.split_stack import ServerProcess
from local_stack.scale_out import ScaleOutPrefect
from local_stack.servers import FAST_EVENT_STORE, PrefectServer

ACCOUNT = "1234567890123456"


def cloud_event(run: str, n: int) -> dict[str, Any]:
    """A TaskCompleted CloudEvent as EventBridge pushes it."""
    from bench.relay_bench import task_completed  # relay_bench imports this module lazily

    now = datetime.now(UTC).isoformat()
    return {
        **task_completed(run, n),
        "id": str(uuid.uuid4()),
        "specversion": "1.0",
        "subject": f"acs.ecs:cn-hangzhou:{ACCOUNT}:{run}",
        "time": now,
        "aliyunaccountid": ACCOUNT,
        "aliyunpublishtime": now,
        "aliyuneventbusname": "default",
        "aliyunregionid": "cn-hangzhou",
    }


async def closed_loop(
    targets: list[str],
    request: Callable[[int], tuple[dict[str, str], Any, list[str]]],
    seconds: float,
    concurrency: int,
) -> dict[str, Any]:
    """`concurrency` clients posting one request after another; `request(n)` gives the
    headers, the JSON body and the ids it carries (the relay answers with its own ids)."""
    acknowledged: list[str] = []
    latencies: list[float] = []
    refused = 0
    counter = itertools.count()
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=concurrency)

    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def one_client() -> None:
            nonlocal refused
            while time.monotonic() < deadline:
                n = next(counter)
                headers, body, ids = request(n)
                started = time.perf_counter()
                try:
                    answer = await client.post(
                        targets[n % len(targets)], json=body, headers=headers
                    )
                except httpx.HTTPError:
                    refused += 1
                    continue
                latencies.append((time.perf_counter() - started) * 1000)
                if answer.is_success:
                    acknowledged.extend(answer.json()["ids"] if answer.content else ids)
                else:
                    refused += 1

        started = time.monotonic()
        await asyncio.gather(*(one_client() for _ in range(concurrency)))
        elapsed = time.monotonic() - started
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 2 else [float("nan")] * 99
    return {
        "acknowledged": acknowledged,
        "per_s": len(acknowledged) / elapsed,
        "refused": refused,
        "p50_ms": cuts[49],
        "p99_ms": cuts[98],
    }


def await_stored(api_url: str, run: str, since: datetime, expected: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    stored = 0
    while time.monotonic() < deadline:
        stored = _stored(api_url, run, since)
        if stored >= expected:
            break
        time.sleep(1)
    return stored


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--backend", choices=["scale-out", "sqlite"], default="scale-out")
    args = parser.parse_args(argv)
    if args.backend == "sqlite":
        run_sqlite(args.seconds, args.concurrency)
    else:
        run_scale_out(args.seconds, args.concurrency)


def run_sqlite(seconds: float, concurrency: int) -> dict[str, dict[str, Any]]:
    """The default stack: one `prefect server start` on SQLite and one relay in front of it."""
    with PrefectServer(extra_env=FAST_EVENT_STORE) as server:
        return compare(
            [server.api_url],
            seconds,
            concurrency,
            "SQLite stack: one `prefect server start`, one relay",
            {"relay": "relay -> POST /api/events", "prefect": "POST /api/events"},
        )


def run_scale_out(seconds: float, concurrency: int) -> dict[str, dict[str, Any]]:
    with ScaleOutPrefect() as prefect:
        return compare(
            prefect.api_urls,
            seconds,
            concurrency,
            "scale-out stack: PostgreSQL, Redis, 2 API servers, 1 services process",
            {
                "relay": "2 relays -> POST /api/events",
                "prefect": "POST /api/events, 2 API servers",
            },
        )


def compare(
    api_urls: list[str],
    seconds: float,
    concurrency: int,
    stack: str,
    names: dict[str, str],
) -> dict[str, dict[str, Any]]:
    """One relay per API server; the same closed loop through the relays, then straight;
    what was stored is read from the first API server."""
    relays = []
    try:
        for api in api_urls:
            env = {"PREFECT_API_URL": api, "RUNBOOKS_RELAY_ALLOWED_ACCOUNT_IDS": ACCOUNT}
            relays.append(ServerProcess(["relay", "--token", TOKEN], env, "/healthz"))
        relay_targets = [f"{relay.url}/eventbridge" for relay in relays]
        prefect_targets = [f"{api}/events" for api in api_urls]
        auth = {"Authorization": f"Bearer {TOKEN}"}
        stamp = int(time.time())
        results = {}
        for path in ("relay", "prefect"):
            run = f"t-bench-{path}-{stamp}"
            since = datetime.now(UTC)

            def via_relay(n: int, run: str = run) -> tuple[dict[str, str], Any, list[str]]:
                return auth, cloud_event(run, n), []

            def direct(n: int, run: str = run) -> tuple[dict[str, str], Any, list[str]]:
                event = from_cloud_event(cloud_event(run, n), received=datetime.now(UTC))
                return {}, [event], [event["id"]]

            request = via_relay if path == "relay" else direct
            targets = relay_targets if path == "relay" else prefect_targets
            result = asyncio.run(closed_loop(targets, request, seconds, concurrency))
            acknowledged = len(result["acknowledged"])
            result["stored"] = await_stored(api_urls[0], run, since, acknowledged, 180)
            results[path] = result
    finally:
        for relay in relays:
            relay.stop()
    print(
        f"{stack}; {os.cpu_count()} cores shared by all; {concurrency} clients, one event a "
        f"request, {seconds:g} s per path"
    )
    print(
        f"{'path':<34} {'acked ev/s':>10} {'p50':>9} {'p99':>9} {'stored/acked':>14} {'non-2xx':>8}"
    )
    for path, r in results.items():
        print(
            f"{names[path]:<34} {r['per_s']:>10.0f} {r['p50_ms']:>7.1f}ms {r['p99_ms']:>7.1f}ms "
            f"{r['stored']:>6}/{len(r['acknowledged']):<7} {r['refused']:>8}"
        )
    ratio = results["relay"]["per_s"] / results["prefect"]["per_s"]
    print(f"relay / Prefect ingest: {ratio:.2f} ({ratio:.0%})")
    return results


if __name__ == "__main__":
    os.environ.setdefault("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
    main()
