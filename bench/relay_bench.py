"""Events per second from alisim's EventBridge through the relay into Prefect (SQLite).

Three processes, as in production: alisim (`runbooks sim`), the relay (`runbooks relay`)
and `prefect server start`. The rules come from `runbooks subscribe`. For each offered rate,
TaskCompleted events are published into alisim's bus for a fixed time; then the bench
waits for every push to settle and counts what Prefect stored. Prints, per rate: offered and
achieved events/s, events stored / published (loss), alisim retries, and the relay's own
latency p50/p99.
Usage: python -m bench.relay_bench [--rates 200,500,700,1000] [--seconds 10]
       python -m bench.relay_bench --backend scale-out [--seconds 10] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import UTC, datetime

import httpx

from alicloud_runbooks.clients import Endpoint, eventbridge_client
from alicloud_runbooks.subscribe import subscribe
from alisim.config import DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET, DEFAULT_REGION
from bench.split_stack import ServerProcess
from local_stack.servers import PrefectServer

TOKEN = "bench-token"


def task_completed(run: str, n: int) -> dict:
    return {
        "type": "ecs:CloudAssistant:TaskCompleted",
        "source": "acs.ecs",
        "data": {
            "instanceId": f"i-bench{n:07d}",
            "invokeId": run,
            "commandId": "c-bench",
            "invocationStatus": "Success",
            "exitCode": "0",
            "repeats": "1",
        },
    }


def _stored(api_url: str, run: str, since: datetime) -> int:
    body = httpx.post(
        f"{api_url}/events/count-by/event",
        json={
            "filter": {
                "occurred": {"since": since.isoformat()},
                "related": {"id": [f"acs.ecs.invocation.{run}"]},
            },
            "time_unit": "day",
            "time_interval": 1,
        },
        timeout=30,
    ).json()
    return sum(row["count"] for row in body)


def _settled(sim: str) -> bool:
    return httpx.get(f"{sim}/_alisim/deliveries", params={"limit": 1}).json()["pending"] == 0


def run_rate(sim: str, relay: str, api_url: str, rate: int, seconds: float) -> dict:
    run = f"t-bench-{rate}-{int(time.time())}"
    httpx.delete(f"{sim}/_alisim/deliveries")
    since = datetime.now(UTC)
    tick = 0.1
    per_tick = max(1, round(rate * tick))
    published = 0
    started = time.monotonic()
    with httpx.Client(timeout=30) as http:
        while time.monotonic() - started < seconds:
            batch = [task_completed(run, published + i) for i in range(per_tick)]
            http.post(f"{sim}/_alisim/events", json=batch).raise_for_status()
            published += len(batch)
            next_tick = started + (published / per_tick) * tick
            time.sleep(max(0.0, next_tick - time.monotonic()))
        offered_for = time.monotonic() - started
        deadline = time.monotonic() + 300
        while not _settled(sim) and time.monotonic() < deadline:
            time.sleep(0.2)
        drained_at = time.monotonic() - started
        stored = 0
        while time.monotonic() < deadline:
            stored = _stored(api_url, run, since)
            if stored >= published:
                break
            time.sleep(0.5)
        failed = len(
            http.get(
                f"{sim}/_alisim/deliveries", params={"outcome": "failed", "limit": 10000}
            ).json()["deliveries"]
        )
        health = http.get(f"{relay}/healthz").json()
    return {
        "rate": rate,
        "published": published,
        "stored": stored,
        "offered_per_s": published / offered_for,
        "achieved_per_s": published / drained_at,
        "retries": failed,
        "latency": health.get("latency", {}),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rates", default="200,500,700,1000")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument(
        "--backend",
        choices=["sqlite", "scale-out"],
        default="sqlite",
        help="scale-out: relay ingest against Prefect's own POST /api/events on PostgreSQL "
        "and Redis, side by side (bench/scale_out_bench.py)",
    )
    parser.add_argument("--concurrency", type=int, default=32, help="scale-out clients")
    args = parser.parse_args()
    if args.backend == "scale-out":
        from bench.scale_out_bench import run_scale_out

        run_scale_out(args.seconds, args.concurrency)
        return
    with PrefectServer() as prefect:
        sim = ServerProcess(["sim", "--zero-boot", "--log-level", "warning"], {}, "/_alisim/health")
        relay = ServerProcess(
            ["relay", "--token", TOKEN], {"PREFECT_API_URL": prefect.api_url}, "/healthz"
        )
        sim_port, relay_port = sim.port, relay.port
        try:
            client = eventbridge_client(
                access_key_id=DEFAULT_ACCESS_KEY_ID,
                access_key_secret=DEFAULT_ACCESS_KEY_SECRET,
                region=DEFAULT_REGION,
                endpoint=Endpoint(openapi=f"127.0.0.1:{sim_port}", protocol="http"),
            )
            subscribe(
                client,
                target_url=f"http://127.0.0.1:{relay_port}/eventbridge",
                token=TOKEN,
                dead_letter_arn="acs:mns:bench:/queues/dlq",
            )
            print("alisim -> relay -> Prefect (SQLite), 2 cores, one event per push")
            print(
                f"{'offered/s':>10} {'achieved/s':>11} {'stored/published':>17} "
                f"{'retries':>8} {'relay p50':>10} {'relay p99':>10}"
            )
            for rate in (int(r) for r in args.rates.split(",")):
                r = run_rate(
                    f"http://127.0.0.1:{sim_port}",
                    f"http://127.0.0.1:{relay_port}",
                    prefect.api_url,
                    rate,
                    args.seconds,
                )
                lat = r["latency"]
                print(
                    f"{r['offered_per_s']:>10.0f} {r['achieved_per_s']:>11.0f} "
                    f"{r['stored']:>8}/{r['published']:<8} {r['retries']:>8} "
                    f"{lat.get('p50_ms', float('nan')):>8.1f}ms "
                    f"{lat.get('p99_ms', float('nan')):>8.1f}ms",
                    flush=True,
                )
        finally:
            relay.stop()
            sim.stop()


if __name__ == "__main__":
    os.environ.setdefault("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
    main()
