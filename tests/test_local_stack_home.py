"""A local stack you keep: `runbooks up` on fixed ports and a kept home, `runbooks status`,
and the real port printed for `--port 0`. Each command runs as the user runs it, in a process
of its own."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
from pathlib import Path

import httpx
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

from local_stack.home import StackHome
from local_stack.servers import free_port
from tests.helpers import wait_until
from tests.test_demo import ROOT, _env, _interrupt, _Lines, _runbooks


def _up(home: Path, *ports: int, fresh: bool = False) -> subprocess.Popen[str]:
    prefect, sim, relay = ports
    args = ["up", "--time-scale", "0.02", "--home", str(home)]
    args += ["--prefect-port", str(prefect), "--sim-port", str(sim), "--relay-port", str(relay)]
    return subprocess.Popen(
        _runbooks(*args, *(["--fresh"] if fresh else [])),
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _status(home: Path) -> tuple[int, str]:
    done = subprocess.run(
        _runbooks("status", "--home", str(home)),
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, done.stdout + done.stderr


def _line(text: str, piece: str) -> str:
    found = [line for line in text.splitlines() if re.match(rf"^[✓✗] {piece}\b", line)]
    assert len(found) == 1, text
    return found[0]


def _prefect_down(home: Path) -> tuple[int, str] | None:
    code, text = _status(home)
    return (code, text) if code == 1 and "✗ Prefect" in text else None


def _stop(proc: subprocess.Popen[str], lines: _Lines) -> str:
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=90) == 0, "\n".join(lines.lines[-60:])
    return lines.text()


def test_up_keeps_a_runs_history_across_restarts_and_status_says_what_runs(tmp_path) -> None:
    home = tmp_path / "stack-home"
    ports = (free_port(), free_port(), free_port())
    api = f"http://127.0.0.1:{ports[0]}/api"

    assert _status(home)[0] == 1
    proc = _up(home, *ports)
    try:
        lines = _Lines(proc)
        lines.wait_for(r"Ctrl-C stops everything", timeout=120)
        assert lines.find(rf"^Prefect API:\s+PREFECT_API_URL={re.escape(api)}$")
        assert lines.find(rf"^alisim endpoint: 127\.0\.0\.1:{ports[1]}$")
        assert lines.find(rf"^relay:\s+http://127\.0\.0\.1:{ports[2]}/eventbridge\?token=")
        token = lines.find(r"^RUNBOOKS_RELAY_TOKEN=(\S+)$")[1]  # type: ignore[index]

        code, text = _status(home)
        assert code == 0, text
        assert _line(text, "Prefect").startswith(f"✓ Prefect  http://127.0.0.1:{ports[0]}")
        assert _line(text, "alisim").startswith("✓")
        assert _line(text, "relay").startswith("✓")

        with httpx.Client(timeout=10) as http:

            def deployment() -> dict | None:
                found = http.get(f"{api}/deployments/name/provision-and-run/provision-and-run")
                return found.json() if found.status_code == 200 else None

            served = wait_until(deployment, timeout=60, interval=0.2)
            # Prefect's own client, which retries the 503 a busy SQLite server sometimes answers.
            with (
                temporary_settings(updates={PREFECT_API_URL: api}),
                get_client(sync_client=True) as c,
            ):
                run_id = str(
                    c.create_flow_run_from_deployment(
                        served["id"],
                        parameters={
                            "count": 1,
                            "command": {"script": "echo ok", "output_bucket": "runbooks-outputs"},
                        },
                    ).id
                )

            def finished() -> dict | None:
                run = http.get(f"{api}/flow_runs/{run_id}").json()
                return run if run["state_type"] in {"COMPLETED", "FAILED", "CRASHED"} else None

            first = wait_until(finished, timeout=120, interval=0.5)
            assert first["state_type"] == "COMPLETED", "\n".join(lines.lines[-60:])
        _stop(proc, lines)
    finally:
        _interrupt(proc)
    assert not (home / "stack.json").exists(), "a stopped stack leaves no state behind"
    code, text = _status(home)
    assert code == 1 and "no local stack" in text, text

    proc = _up(home, *ports)
    try:
        lines = _Lines(proc)
        lines.wait_for(r"Ctrl-C stops everything", timeout=120)
        assert lines.find(rf"^RUNBOOKS_RELAY_TOKEN={re.escape(token)}$"), "the token is kept"
        run = httpx.get(f"{api}/flow_runs/{run_id}", timeout=10)
        assert run.status_code == 200, "the run's history survived the restart"
        assert run.json()["state_type"] == first["state_type"]
        assert run.json()["deployment_id"] == served["id"]

        # A piece down: Prefect's server alive but not answering (stopped, as a hung one).
        prefect_pid = json.loads((home / "stack.json").read_text())["prefect"]["pid"]
        os.killpg(prefect_pid, signal.SIGSTOP)
        try:
            code, text = wait_until(lambda: _prefect_down(home), timeout=60)
        finally:
            os.killpg(prefect_pid, signal.SIGCONT)
        assert f"pid {prefect_pid}" in _line(text, "Prefect"), text
        assert _line(text, "alisim").startswith("✓"), text
        assert _line(text, "relay").startswith("✗"), "the relay cannot reach Prefect"
        assert "down: Prefect, relay" in text
        assert wait_until(lambda: _status(home)[0] == 0, timeout=60)
        _stop(proc, lines)
    finally:
        _interrupt(proc)


def test_up_names_a_taken_port_and_its_flag_and_starts_nothing(tmp_path) -> None:
    home = tmp_path / "untouched"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            _runbooks("up", "--home", str(home), "--sim-port", str(port)),
            cwd=ROOT,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2
    assert f"port {port} on 127.0.0.1 is taken (--sim-port)" in done.stderr
    assert "Traceback" not in done.stderr
    assert not home.exists()


def test_fresh_forgets_only_what_the_stack_kept(tmp_path) -> None:
    home = StackHome(tmp_path)
    home.prepare()
    token = home.token()
    (home.prefect / "prefect.db").write_text("runs")
    (home.alisim / "dead-letters.jsonl").write_text("{}\n")
    (home.alisim / "instances" / "i-old").mkdir(parents=True)
    (tmp_path / "notes.txt").write_text("mine")

    home.prepare()
    assert home.token() == token
    assert (home.prefect / "prefect.db").exists()
    assert (home.alisim / "dead-letters.jsonl").exists()
    assert not (home.alisim / "instances").exists(), "instances do not outlive alisim"

    home.prepare(fresh=True)
    assert not (home.prefect / "prefect.db").exists()
    assert not (home.alisim / "dead-letters.jsonl").exists()
    assert home.token() != token
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert oct(home.token_file.stat().st_mode & 0o777) == "0o600"


def _first_line(proc: subprocess.Popen[str], pattern: str) -> re.Match[str]:
    return _Lines(proc).wait_for(pattern, timeout=60)


def test_port_zero_prints_the_real_port_for_sim_and_relay() -> None:
    env = {**_env(), "PREFECT_API_URL": "http://127.0.0.1:9/api"}
    sim = subprocess.Popen(
        _runbooks("sim", "--port", "0", "--log-level", "warning"),
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    relay = subprocess.Popen(
        _runbooks("relay", "--port", "0", "--token", "t" * 24),
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        sim_port = int(_first_line(sim, r"^alisim endpoint: 127\.0\.0\.1:(\d+)$")[1])
        relay_port = int(_first_line(relay, r"^relay listening on http://127\.0\.0\.1:(\d+) ")[1])
        assert sim_port and relay_port
        health = wait_until(
            lambda: _answers(f"http://127.0.0.1:{sim_port}/_alisim/health"), timeout=30
        )
        assert health.status_code == 200
        # The relay answers on the printed port (503: no Prefect behind it here).
        assert wait_until(
            lambda: _answers(f"http://127.0.0.1:{relay_port}/healthz"), timeout=30
        ).status_code in (200, 503)
    finally:
        _interrupt(sim)
        _interrupt(relay)


def _answers(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=5)
    except httpx.HTTPError:
        return None
