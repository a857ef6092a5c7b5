"""Where a burst spends its time, hop by hop: the profile behind the 1,000-instance figures.

`provision_and_run` on `--instances` at zero boot time (every instance's events published in
the same instant, the worst burst the event path sees) on the local stack, alisim and the relay
each in its own process as in production (`--in-process`: threads of this one, as the tests
run them; `--backend scale-out`: PostgreSQL, Redis, two API servers, the services process and
two relay replicas), then, for every Alibaba event that settled a wait, its four times joined
by event id:

- source: the Alibaba event's own `time` (alisim publishes it at that instant);
- relay: when the relay took the push (the relayed event's Prefect `occurred`);
- Prefect: when Prefect's API accepted it (`received`, from Prefect's event store);
- flow: when the run had it (`arrived`, from the run's `runbooks.wait.settled` events).

Per wait it prints p50/p99/max of each hop (source → relay is alisim's push queue and the
relay's HTTP handling; relay → Prefect is the relay's write; Prefect → flow is Prefect's
broker, its websocket and the flow's parsing), and the CPU seconds each part used during the
run (Prefect's processes, alisim's, the relay's, and the rest of this process: the flow), per
event pushed to the relay. With `--py-spy DIR` it also samples each process with py-spy (the
`bench` extra installs it) and prints what each part's samples were doing.
Usage: python -m bench.burst_profile [--instances 1000] [--backend sqlite|scale-out]
       [--in-process] [--py-spy DIR] [--dump FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from bench.runbook_bench import WARM_UP_INSTANCES, _quiet_console, sim_settings
from bench.split_stack import ServerProcess, start_split
from flows.provision_and_run import provision_and_run
from flows.steps import CommandSpec
from local_stack.stack import LocalStack, flush_prefect_clients

BUCKET = "burst-profile-outputs"
HOPS = ("source → relay", "relay → Prefect", "Prefect → flow", "source → flow")
PARTS = ("prefect", "alisim", "relay", "flow")
PAGE = 50


def _stat(path: str) -> list[str]:
    """The fields of a /proc stat file after the command name (state, ppid, …)."""
    return Path(path).read_text().rsplit(")", 1)[1].split()


def _ticks(path: str) -> float:
    fields = _stat(path)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tree_cpu(roots: list[int]) -> float:
    """CPU seconds of these processes and their live descendants (PostgreSQL's backends)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parents[int(entry)] = int(_stat(f"/proc/{entry}/stat")[1])
            except OSError:
                continue
    wanted, total = set(roots), 0.0
    for pid in sorted(parents):
        node, seen = pid, 0
        while node not in wanted and node in parents and seen < 64:
            node, seen = parents[node], seen + 1
        if node in wanted:
            try:
                total += _ticks(f"/proc/{pid}/stat")
            except OSError:
                continue
    return total


class CpuMeter:
    """CPU seconds of Prefect's processes, of alisim's and the relay's (their processes, or
    their threads here), and of the rest of this process (the flow), by part."""

    def __init__(self, prefect_pids: list[int], processes: dict[str, int]) -> None:
        self.prefect_pids = prefect_pids
        self.processes = processes
        self.start = self._sample()

    def _sample(self) -> dict[str, float]:
        names = {t.native_id: t.name for t in threading.enumerate()}
        parts = {"prefect": _tree_cpu(self.prefect_pids)}
        for part, pid in self.processes.items():
            parts[part] = _ticks(f"/proc/{pid}/stat")
        me = os.getpid()
        for tid in os.listdir(f"/proc/{me}/task"):
            try:
                used = _ticks(f"/proc/{me}/task/{tid}/stat")
            except OSError:
                continue
            name = names.get(int(tid), "")
            part = name if name in ("alisim", "relay") else "flow"
            parts[part] = parts.get(part, 0.0) + used
        return parts

    def used(self) -> dict[str, float]:
        end = self._sample()
        return {part: end.get(part, 0.0) - self.start.get(part, 0.0) for part in PARTS}


def _pages(client: httpx.Client, body: dict[str, Any]) -> list[dict[str, Any]]:
    page = client.post("/events/filter", json={**body, "limit": PAGE}).json()
    found = list(page["events"])
    while page.get("next_page"):
        page = client.get(page["next_page"]).json()
        found += page["events"]
    return found


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def hop_times(
    api_url: str, since: datetime, dump: Path | None = None
) -> dict[str, dict[str, list[float]]]:
    """Per wait, per hop: milliseconds of every event that settled a key by event (and, with
    `dump`, each event's four times as JSON lines)."""
    with httpx.Client(base_url=api_url, timeout=60) as client:
        occurred = {"since": since.isoformat(), "until": (since + timedelta(days=1)).isoformat()}
        settled = _pages(
            client, {"filter": {"event": {"name": ["runbooks.wait.settled"]}, "occurred": occurred}}
        )
        arrived: dict[str, tuple[str, datetime]] = {}
        for event in settled:
            for entry in event["payload"]["settled"]:
                if entry.get("event_id") and entry.get("arrived"):
                    arrived[entry["event_id"]] = (event["payload"]["wait"], _time(entry["arrived"]))
        stored: list[dict[str, Any]] = []
        ids = sorted(arrived)
        for i in range(0, len(ids), 200):
            stored += _pages(client, {"filter": {"id": {"id": ids[i : i + 200]}}})
    hops: dict[str, dict[str, list[float]]] = {}
    lines = []
    for event in stored:
        wait, flow = arrived[event["id"]]
        source = _time(event["payload"]["acs"]["time"])
        relay, prefect = _time(event["occurred"]), _time(event["received"])
        times = {"source": source, "relay": relay, "prefect": prefect, "flow": flow}
        lines.append(json.dumps({"wait": wait, **{k: v.timestamp() for k, v in times.items()}}))
        per = hops.setdefault(wait, {hop: [] for hop in HOPS})
        for hop, (a, b) in zip(
            HOPS, [(source, relay), (relay, prefect), (prefect, flow), (source, flow)], strict=True
        ):
            per[hop].append((b - a).total_seconds() * 1000)
    if dump is not None:
        dump.write_text("\n".join(lines) + "\n")
    return hops


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def print_hops(hops: dict[str, dict[str, list[float]]]) -> None:
    print(f"\n{'wait':<16} {'hop':<16} {'events':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for wait, per in hops.items():
        for hop in HOPS:
            values = per[hop]
            if values:
                print(
                    f"{wait:<16} {hop:<16} {len(values):>6} {_pct(values, 0.5):>8,.0f} "
                    f"{_pct(values, 0.99):>8,.0f} {max(values):>8,.0f}"
                )


def published_events(sim_url: str, since: float) -> collections.Counter[str]:
    """Events alisim published during the run, by type (a rule may leave some out)."""
    log = httpx.get(f"{sim_url}/_alisim/call-log", params={"since": since}, timeout=30).json()
    return collections.Counter(e["type"] for e in log["events"])


def delivered_events(sim_url: str, since: datetime) -> collections.Counter[str]:
    """Events alisim's EventBridge delivered to the relay during the run, by type."""
    found: collections.Counter[str] = collections.Counter()
    after = 0
    while True:
        page = httpx.get(
            f"{sim_url}/_alisim/deliveries",
            params={"after": after, "outcome": "delivered", "limit": 10_000},
            timeout=30,
        ).json()
        for record in page["deliveries"]:
            if _time(record["time"]) >= since:
                found[record["event_type"]] += 1
        if not page["deliveries"]:
            return found
        after = page["next"]


def print_cpu(used: dict[str, float], events: int, wall: float) -> None:
    print(f"\nCPU during the run ({wall:.1f} s wall, {os.cpu_count()} cores, {events} events):")
    for part in PARTS:
        per = used[part] / events * 1000 if events else 0.0
        print(f"  {part:<15} {used[part]:6.1f} s  {per:5.2f} ms per event")
    total = sum(used.values())
    print(
        f"  {'all':<15} {total:6.1f} s  {total / events * 1000 if events else 0:5.2f} ms per event"
    )


# ----- py-spy


def start_py_spy(directory: Path, pids: dict[str, int]) -> list[subprocess.Popen[bytes]]:
    exe = shutil.which("py-spy", path=os.path.dirname(sys.executable)) or shutil.which("py-spy")
    if exe is None:
        raise SystemExit("py-spy is not installed: pip install -c constraints.txt -e '.[bench]'")
    directory.mkdir(parents=True, exist_ok=True)
    spies = []
    for name, pid in pids.items():
        out = directory / f"{name}.txt"
        command = [exe, "record", "-p", str(pid), "-r", "100", "-f", "raw", "-o", str(out)]
        spies.append(
            subprocess.Popen(
                [*command, "--nonblocking", "--threads"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    return spies


def stop_py_spy(spies: list[subprocess.Popen[bytes]]) -> None:
    for spy in spies:
        spy.send_signal(signal.SIGINT)
    for spy in spies:
        spy.wait(timeout=60)


def _part_of(stack: str) -> str:
    """The part a sample of this process belongs to, when alisim and the relay run in it."""
    if "AlisimServer._run" in stack:
        return "alisim"
    if "ThreadedServer.start" in stack:
        return "relay"
    return "flow"


# What each sample was doing: the first of these markers, in this order, that a frame of its
# stack holds (py-spy sees only the running task's own frames under asyncio, so the markers
# name the tasks and threads themselves; the database thread serves every query alike).
ACTIVITIES: dict[str, list[tuple[str, str]]] = {
    "prefect": [
        ("idle (waiting for work)", "EpollSelector.select"),
        ("storing events (the persister, SQLAlchemy INSERTs)", "event_persister"),
        ("storing events (the persister, SQLAlchemy INSERTs)", "_BulkORMInsert"),
        ("SQLite thread (mostly storing events)", "_connection_worker_thread"),
        ("websocket stream to subscribers", "stream_workspace_events_out"),
        ("websocket stream to subscribers", "events/stream.py"),
        ("websocket stream to subscribers", "websockets"),
        ("automations (triggers)", "events/triggers.py"),
        ("task-run recorder", "task_run_recorder"),
        ("POST /api/events", "api/events.py"),
        ("POST /api/events", "events/messaging.py"),
        ("other API requests", "fastapi/"),
        ("other API requests", "starlette/"),
        ("other database work (SQLAlchemy)", "sqlalchemy/"),
    ],
    "alisim": [
        ("idle (waiting for work)", "EpollSelector.select"),
        ("EventBridge pushes to the relay", "eventbridge/delivery.py"),
        ("EventBridge pushes to the relay", "aiohttp/"),
        ("Cloud Assistant runs", "cloud_assistant/"),
        ("OSS requests (the flow's reads)", "alisim/oss/"),
        ("ECS API", "alisim/ecs/"),
        ("API plumbing (HTTP, signatures)", "openapi/"),
        ("API plumbing (HTTP, signatures)", "uvicorn/"),
        ("API plumbing (HTTP, signatures)", "starlette/"),
    ],
    "relay": [
        ("idle (waiting for work)", "EpollSelector.select"),
        ("writes to Prefect (httpx)", "prefect_sink.py"),
        ("mapping and checking events", "alicloud_runbooks/events/"),
        ("mapping and checking events", "relay/app.py"),
        ("HTTP server (uvicorn, starlette)", "uvicorn/"),
        ("HTTP server (uvicorn, starlette)", "starlette/"),
    ],
    "flow": [
        ("idle (waiting for work)", "EpollSelector.select"),
        ("idle (waiting for work)", "Condition.wait"),
        ("OSS output reads (oss2)", "_read_oss"),
        ("event stream (websocket, parsing)", "prefect/events/clients.py"),
        ("event stream (websocket, parsing)", "alicloud_runbooks/stream.py"),
        ("waits (settling, progress)", "alicloud_runbooks/"),
        ("Prefect client (logs, events, task runs)", "prefect/"),
        ("Alibaba SDK calls", "alibabacloud"),
    ],
}


def _activity(part: str, stack: str) -> str:
    for name, marker in ACTIVITIES[part]:
        if marker in stack:
            return name
    return "other"


def print_py_spy(directory: Path) -> None:
    """Each part's samples by what they were doing."""
    counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for source in ("prefect", "alisim", "relay", "bench"):
        path = directory / f"{source}.txt"
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            part = _part_of(stack) if source == "bench" else source
            counts[part][_activity(part, stack)] += int(count)
    for part in PARTS:
        total = sum(counts[part].values())
        if not total:
            continue
        print(f"\npy-spy, {part} ({total} samples at 100 Hz, all its threads):")
        for name, count in counts[part].most_common():
            print(f"  {100 * count / total:5.1f}%  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--boot-seconds", type=float, default=0.0)
    parser.add_argument(
        "--backend",
        choices=["sqlite", "scale-out"],
        default="sqlite",
        help="Prefect on SQLite (one process) or the scale-out stack (PostgreSQL, Redis, two "
        "API servers, a services process, two relay replicas)",
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="alisim and the relay as threads of this process (as the tests run them), not "
        "in processes of their own",
    )
    parser.add_argument("--py-spy", type=Path, default=None, metavar="DIR")
    parser.add_argument(
        "--push-concurrency",
        type=int,
        default=None,
        help="alisim's EventBridge pushes in flight at once (its default otherwise)",
    )
    parser.add_argument(
        "--dump", type=Path, default=None, help="each event's four times, as JSON lines"
    )
    parser.add_argument("--verbose", action="store_true", help="show the flows' own log lines")
    args = parser.parse_args()
    if not args.verbose:
        _quiet_console()
    settings = sim_settings(args.boot_seconds)
    if args.push_concurrency:
        settings.delivery_concurrency = args.push_concurrency
    stack = LocalStack(sim_settings=settings)
    scale_out = None
    try:
        if args.backend == "scale-out":
            from local_stack.scale_out import ScaleOutPrefect

            scale_out = ScaleOutPrefect()
            stack.start(prefect=scale_out.start())
            named = scale_out.pids()
            prefect_pids, spied = list(named.values()), named["api-1"]
        elif args.in_process:
            stack.start()
            assert stack.prefect is not None and stack.prefect.proc is not None
            prefect_pids = [spied := stack.prefect.proc.pid]
        else:
            start_split(stack)
            assert stack.prefect is not None and stack.prefect.proc is not None
            prefect_pids = [spied := stack.prefect.proc.pid]
        processes = {
            part: server.proc.pid
            for part, server in (("alisim", stack.sim), ("relay", stack.relay))
            if isinstance(server, ServerProcess)
        }
        stack.credentials().oss_bucket(BUCKET).create_bucket()

        def run(count: int) -> None:
            asyncio.run(
                provision_and_run(
                    count=count,
                    command=CommandSpec(script="echo ok", output_bucket=BUCKET),
                    credentials=stack.credentials(),
                    heartbeat_timeout=120,
                    on_failure="continue",
                    name="burst-profile",
                )
            )

        with stack.prefect_client_settings():
            run(WARM_UP_INSTANCES)
            flush_prefect_clients(timeout=10)
            since, started = datetime.now(UTC), time.time()
            spies = []
            if args.py_spy:
                pids = {"prefect": spied, "bench": os.getpid(), **processes}
                spies = start_py_spy(args.py_spy, pids)
            meter = CpuMeter(prefect_pids, processes)
            perf = time.perf_counter()
            run(args.instances)
            wall = time.perf_counter() - perf
            used = meter.used()
            stop_py_spy(spies)
            flush_prefect_clients(timeout=10)
        published = published_events(stack.sim_url, started)
        delivered = delivered_events(stack.sim_url, since)
        print(
            f"provision_and_run, {args.instances} instances, boots 0-{args.boot_seconds:g} s, "
            f"Prefect {args.backend}, alisim and the relay "
            f"{'in this process' if args.in_process else 'in their own processes'}, "
            f"wall {wall:.1f} s"
        )
        for title, counts in (("published", published), ("pushed to the relay", delivered)):
            print(
                f"  events {title}: {sum(counts.values())} ("
                + ", ".join(f"{n} {t.split(':', 1)[-1]}" for t, n in counts.most_common())
                + ")"
            )
        print_hops(hop_times(stack.api_url, since, args.dump))
        print_cpu(used, sum(delivered.values()), wall)
        if args.py_spy:
            print_py_spy(args.py_spy)
    finally:
        stack.stop()
        if scale_out is not None:
            scale_out.stop()


if __name__ == "__main__":
    os.environ.setdefault("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
    main()
