"""The runbooks served as deployments in a process of their own (`python -m deployments.serve`)
on a stack's Prefect server: what the durable-wait tests and benchmarks run their flows on,
as a user's `runbooks up` or worker would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from local_stack.stack import LocalStack

ROOT = Path(__file__).resolve().parents[1]


class ServedDeployments:
    """Start with `start()` (or `with`): saves the credentials block, serves every deployment
    of prefect.yaml with it, and waits until they exist; `stop()` ends the process group."""

    def __init__(
        self,
        stack: LocalStack,
        block: str,
        poll_seconds: float = 1.0,
        enable_triggers: Sequence[str] = (),
        extra_env: dict[str, str] | None = None,
        start_method: str | None = None,
    ) -> None:
        """`enable_triggers`: the names of the prefect.yaml triggers to switch on;
        `start_method`: `deployments.serve --start-method` (default: its own)."""
        self.stack = stack
        self.block = block
        self.poll_seconds = poll_seconds
        self.enable_triggers = list(enable_triggers)
        self.extra_env = extra_env or {}
        self.start_method = start_method
        self.proc: subprocess.Popen[bytes] | None = None
        assert stack.prefect is not None
        self.log_path = stack.prefect.home / "serve.log"

    def start(self, timeout: float = 120.0) -> ServedDeployments:
        assert self.stack.prefect is not None
        with self.stack.prefect_client_settings():
            self.stack.credentials().save(self.block, overwrite=True)
        env = {
            **os.environ,
            **self.stack.prefect.env(),
            "PYTHONPATH": str(ROOT),
            **self.extra_env,
        }
        command = [sys.executable, "-m", "deployments.serve", "--credentials", self.block]
        command += ["--poll-seconds", str(self.poll_seconds)]
        for name in self.enable_triggers:
            command += ["--enable-trigger", name]
        if self.start_method:
            command += ["--start-method", self.start_method]
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child process owns it
        self.proc = subprocess.Popen(
            command,
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            self._await_deployments(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _await_deployments(self, timeout: float) -> None:
        """Until every deployment of prefect.yaml, and the automation of each trigger
        switched on, exists on the server."""
        from deployments.serve import load_project

        assert self.proc is not None
        wanted = {d["name"] for d in load_project()["deployments"]}
        deadline = time.monotonic() + timeout
        while not self._present(wanted):
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"deployments.serve exited; see {self.log_path}:\n"
                    + self.log_path.read_text()[-2000:]
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"the deployments did not appear within {timeout}s")
            time.sleep(0.5)

    def _present(self, wanted: set[str]) -> bool:
        api = self.stack.api_url
        deployments = httpx.post(f"{api}/deployments/filter", json={}, timeout=30)
        if deployments.status_code != 200:
            return False
        if not wanted <= {d["name"] for d in deployments.json()}:
            return False
        if not self.enable_triggers:
            return True
        automations = httpx.post(f"{api}/automations/filter", json={}, timeout=30)
        enabled = {a["name"] for a in automations.json() if a["enabled"]}
        return automations.status_code == 200 and set(self.enable_triggers) <= enabled

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)

    def __enter__(self) -> ServedDeployments:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
