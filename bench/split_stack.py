"""The local stack with alisim and the relay in processes of their own, as in production (the
cloud and a deployed relay are never in the flow's process).

In one process, alisim's pushes, the relay and the flow's event stream share one GIL: a flow
busy in one thread slows alisim's pushes in another, which no real deployment sees. The
benches that time the event path start `runbooks sim` and `runbooks relay` instead, apply
the bench's alisim settings through `PATCH /_alisim/settings`, and subscribe the rules to the
relay's URL as a user would.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import httpx

from local_stack.servers import FAST_EVENT_STORE, PrefectServer, free_port
from local_stack.stack import LocalStack


class ServerProcess:
    """`runbooks <command>` on a free port, up once `health` answers; stopped by its pid."""

    def __init__(self, args: list[str], env: dict[str, str], health: str) -> None:
        self.host = "127.0.0.1"
        self.port = free_port()
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - the child writes to it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "local_stack.cli", *args, "--port", str(self.port)],
            env={**os.environ, **env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{self.url}{health}", timeout=1).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.log.seek(0)
                said = self.log.read()[-2000:].decode("utf-8", "replace")
                self.stop()
                raise RuntimeError(f"runbooks {args[0]} did not start on {self.url}: {said}")
            time.sleep(0.1)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.log.close()


def start_split(stack: LocalStack) -> LocalStack:
    """Start `stack` with its own Prefect server, alisim and the relay each in a process."""
    try:
        stack.prefect = PrefectServer(extra_env=FAST_EVENT_STORE).start()
        stack.sim = ServerProcess(["sim"], {}, "/_alisim/health")  # type: ignore[assignment]
        settings = stack.sim_settings.model_dump(mode="json")
        httpx.patch(f"{stack.sim_url}/_alisim/settings", json=settings).raise_for_status()
        relay_env = {
            "PREFECT_API_URL": stack.api_url,
            "RUNBOOKS_RELAY_ALLOWED_ACCOUNT_IDS": stack.sim_settings.account_id,
        }
        stack.relay = ServerProcess(  # type: ignore[assignment]
            ["relay", "--token", stack.token], relay_env, "/healthz"
        )
        stack.subscribe()
    except BaseException:
        stack.stop()
        raise
    return stack
