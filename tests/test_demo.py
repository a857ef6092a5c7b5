"""`runbooks demo` and `runbooks up` end to end, each as the user runs it: a process of its
own that starts its own Prefect server, alisim and relay, and stops them."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

from tests import samples
from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parent.parent
INSTANCE_ROW = re.compile(r"^(i-[a-z0-9]+)\s+\S+\s+(\w+)\s+(-?\d+|-)\s")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _runbooks(*args: str) -> list[str]:
    return [sys.executable, "-m", "local_stack.cli", *args]


def _refuses(url: str) -> bool:
    host, port = httpx.URL(url).host, httpx.URL(url).port
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) != 0


def _interrupt(proc: subprocess.Popen[str]) -> None:
    """Stop a command the test left running as a user would (Ctrl-C), so it stops the
    servers it started in sessions of their own."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _ui_api_url(ui: str) -> str:
    """The API address the Prefect UI served at `ui` calls, as its own app reads it."""
    response = httpx.get(f"{ui}/ui-settings", timeout=10)
    response.raise_for_status()
    return response.json()["api_url"]


def test_demo_runs_three_instances_with_zero_describe_calls() -> None:
    proc = subprocess.Popen(
        _runbooks("demo"),
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines, errors = _Lines(proc), _Lines(proc, proc.stderr)
        ui = lines.wait_for(r"^\s+Prefect UI\s+(http://127\.0\.0\.1:\d+)$", timeout=120)[1]
        api = lines.find(r"^\s+Prefect API\s+(http://\S+)$")[1]  # type: ignore[index]
        # Read while the demo's run goes on: the UI must call this stack's API, not :4200.
        assert api == f"{ui}/api"
        assert _ui_api_url(ui) == api
        assert proc.wait(timeout=240) == 0, lines.text()[-4000:] + errors.text()[-4000:]
    finally:
        _interrupt(proc)
    out, err = lines.text(), errors.text()
    rows = {m[1]: (m[2], m[3]) for line in out.splitlines() if (m := INSTANCE_ROW.match(line))}
    assert len(rows) == 3, out
    assert set(rows.values()) == {("Success", "0")}, out
    assert "Describe* calls: 0 (target: 0)" in out
    assert "A 5 s polling loop would have spent" in out
    assert "an ESTIMATE computed from this run's waits, not a polling run" in out
    assert out.count("oss://runbooks-demo/runbooks/") == 3
    assert "700 checks passed" in out
    assert "token=****" in out
    assert "Stopped the Prefect server, alisim and the relay." in out
    assert f"in the Prefect UI at {ui} " in out
    assert "Error logging to API" not in err
    assert "Traceback" not in err + out


class _Lines:
    """A child's output (stdout unless told), read by a thread, so the test can wait on a
    line while the pipe keeps draining."""

    def __init__(self, proc: subprocess.Popen[str], stream: IO[str] | None = None) -> None:
        self.lines: list[str] = []
        self._proc = proc
        self._stream = stream or proc.stdout
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._stream is not None
        for line in self._stream:
            self.lines.append(line.rstrip("\n"))

    def find(self, pattern: str) -> re.Match[str] | None:
        for line in list(self.lines):
            if m := re.search(pattern, line):
                return m
        return None

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        def found() -> re.Match[str] | None:
            if self._proc.poll() is not None and not self._thread.is_alive():
                raise AssertionError("the command exited:\n" + "\n".join(self.lines[-60:]))
            return self.find(pattern)

        return wait_until(found, timeout=timeout, interval=0.1)

    def text(self) -> str:
        self._thread.join(timeout=10)
        return "\n".join(self.lines)


@pytest.fixture
def runbooks_up(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], _Lines]]:
    # A home of its own and free ports: the defaults (~/.runbooks/local, 4210/9800/9810) are
    # the user's.
    free = ("--prefect-port", "0", "--sim-port", "0", "--relay-port", "0")
    proc = subprocess.Popen(
        _runbooks("up", "--time-scale", "0.02", "--home", str(tmp_path / "home"), *free),
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield proc, _Lines(proc)
    finally:
        _interrupt(proc)


def test_up_serves_the_runbooks_until_sigint(runbooks_up) -> None:
    proc, lines = runbooks_up
    lines.wait_for(r"Ctrl-C stops everything", timeout=120)
    ui = lines.find(r"^Prefect UI:\s+(http://127\.0\.0\.1:\d+)$")[1]  # type: ignore[index]
    api = lines.find(r"^Prefect API:\s+PREFECT_API_URL=(http://\S+)$")[1]  # type: ignore[index]
    endpoint = lines.find(r"^alisim endpoint: (127\.0\.0\.1:\d+)$")[1]  # type: ignore[index]
    relay = lines.find(r"^relay:\s+(http://\S+)\?token=\*\*\*\*$")[1]  # type: ignore[index]
    token = lines.find(r"^RUNBOOKS_RELAY_TOKEN=(\S+)$")[1]  # type: ignore[index]
    account = lines.find(r"RUNBOOKS_RELAY_ALLOWED_ACCOUNT_IDS=(\d+)$")[1]  # type: ignore[index]
    assert lines.find(r"^ALIBABA_CLOUD_ACCESS_KEY_ID=LTAI")
    assert lines.find(r"^ALIBABA_CLOUD_ACCESS_KEY_SECRET=\S+")
    sim = f"http://{endpoint}"

    with httpx.Client(timeout=10) as http:
        assert http.get(ui).status_code == 200
        assert _ui_api_url(ui) == api
        assert http.get(f"{api}/health").json() is True
        assert http.get(f"{sim}/_alisim/health").status_code == 200
        assert http.get(relay.replace("/eventbridge", "/healthz")).status_code == 200
        event = {**samples.INSTANCE_STATE_CHANGE_EB, "id": str(uuid.uuid4())}
        assert http.post(relay, json=event).status_code == 401
        bearer = {"Authorization": f"Bearer {token}"}
        foreign = http.post(relay, headers=bearer, json=event)
        assert foreign.status_code == 403, "the allow-list is on by default"
        pushed = http.post(relay, headers=bearer, json={**event, "aliyunaccountid": account})
        assert pushed.status_code < 300, pushed.text
        block = http.get(
            f"{api}/block_types/slug/alibaba-cloud-credentials/block_documents/name/alisim"
        )
        assert block.status_code == 200
        assert block.json()["data"]["openapi_endpoint"] == endpoint

        def deployment(name: str) -> dict | None:
            found = http.get(f"{api}/deployments/name/{name}/{name}")
            return found.json() if found.status_code == 200 else None

        provision = wait_until(lambda: deployment("provision-and-run"), timeout=60, interval=0.2)
        assert wait_until(lambda: deployment("run-command"), timeout=60, interval=0.2)
        fleet = wait_until(lambda: deployment("fleet-run"), timeout=60, interval=0.2)
        assert [(s["schedule"]["cron"], s["active"]) for s in fleet["schedules"]] == [
            ("0 2 * * *", False)
        ]

        # A run of the served deployment: the runner starts it, the block reference resolves.
        # Prefect's own client, which retries the 503 a busy SQLite server sometimes answers.
        with (
            temporary_settings(updates={PREFECT_API_URL: api}),
            get_client(sync_client=True) as client,
        ):
            created = client.create_flow_run_from_deployment(
                provision["id"],
                parameters={
                    "count": 1,
                    "command": {"script": "echo ok", "output_bucket": "runbooks-outputs"},
                },
            )
        run_id = str(created.id)

        def finished() -> dict | None:
            run = http.get(f"{api}/flow_runs/{run_id}").json()
            return run if run["state_type"] in {"COMPLETED", "FAILED", "CRASHED"} else None

        run = wait_until(finished, timeout=120, interval=0.5)
        assert run["state_type"] == "COMPLETED", "\n".join(lines.lines[-60:])
        calls = http.get(f"{sim}/_alisim/calls").json()["calls"]
        assert not [a for p in calls.values() for a in p if a.startswith("Describe")], calls

    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 0
    out = lines.text()
    assert "Stopped the Prefect server, alisim and the relay." in out
    assert "Error logging to API" not in out
    assert "Traceback" not in out
    # `up` returns only after stopping each server and waiting for it.
    assert all(_refuses(url) for url in (ui, sim, relay))
