"""The burst profile on a few instances, so it cannot rot: alisim and the relay in their own
processes (`bench/split_stack.py`), every settling event's hops joined by id."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_burst_profile_times_every_hop_of_every_settling_event(tmp_path: Path) -> None:
    dump = tmp_path / "hops.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "bench.burst_profile", "--instances", "3", "--dump", str(dump)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "alisim and the relay in their own processes" in out
    # The rule forwards no launch state changes: only what the waits need reaches the relay.
    assert "events pushed to the relay: 9 (" in out, out
    for part in ("prefect", "alisim", "relay", "flow"):
        assert f"  {part} " in out, out
    rows = [json.loads(line) for line in dump.read_text().splitlines()]
    assert sorted(r["wait"] for r in rows) == sorted(
        ["FirstHeartbeat", "TaskCompleted", "OutputDelivered"] * 3
    )
    for row in rows:
        assert row["source"] <= row["relay"] <= row["prefect"] <= row["flow"], row
