"""Local servers the tools and tests start: an ASGI app on uvicorn in a thread, and a real
`prefect server start` in a subprocess (SQLite in its own home), both on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class PortTaken(RuntimeError):
    """A fixed port is in use; the message names the port and the flag that moves it."""

    def __init__(self, host: str, port: int, flag: str) -> None:
        self.port = port
        self.flag = flag
        super().__init__(
            f"port {port} on {host} is taken ({flag}): stop what listens there (another "
            f"`runbooks up`? see `runbooks status`) or pass {flag} <another port> "
            f"({flag} 0 picks a free one)"
        )


def bind(host: str, port: int, flag: str) -> socket.socket:
    """A listening-ready socket on `host:port` (0: a free port, read it back with
    `getsockname()`), bound here so the real port is known before the server starts."""
    # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on connections of a socket that says
    # so, and without it every small answer on a kept-alive connection waits about 40 ms for
    # a delayed ACK (Nagle's algorithm).
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise PortTaken(host, port, flag) from None
    return sock


def ensure_free(host: str, ports: dict[str, int | None]) -> None:
    """Each fixed port (by its flag) can be bound now; `PortTaken` for the first that cannot.
    Checked before anything starts, so a taken port costs nothing to undo."""
    for flag, port in ports.items():
        if port:
            bind(host, port, flag).close()


class ThreadedServer:
    """An ASGI app on uvicorn in its own thread and event loop; stopped by `stop()`."""

    def __init__(
        self, app: Any, host: str = "127.0.0.1", port: int | None = None, name: str = "server"
    ) -> None:
        self.host = host
        self.name = name
        self.port = port or free_port(host)
        self._server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=host,
                port=self.port,
                log_level="warning",
                access_log=False,
                lifespan="on",
                backlog=2048,
            )
        )
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> ThreadedServer:
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._server.serve()), name=self.name, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        # uvicorn exposes no start event; its `started` flag is the documented signal.
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start on {self.url}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=15)

    def __enter__(self) -> ThreadedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


_NOT_INHERITED = {"PREFECT_API_URL", "PREFECT_UI_API_URL"}

FAST_EVENT_STORE = {"PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL": "0.5"}
"""A Prefect server's environment for local stacks, tests and benches: its event persister
writes every 0.5 s (Prefect's default is 5 s), so a store read soon after an event finds it."""


class PrefectServer:
    """`prefect server start` with its own home and SQLite database, on a free port."""

    def __init__(
        self,
        port: int | None = None,
        home: Path | None = None,
        extra_env: dict[str, str] | None = None,
        database_url: str | None = None,
        server_args: list[str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.database_url = database_url
        self.server_args = server_args or []
        self._tmp = None if home else tempfile.TemporaryDirectory(prefix="prefect-home-")
        self.home = home or Path(self._tmp.name)  # type: ignore[union-attr]
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.home / "server.log"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """What a client process needs to talk to this server."""
        return {"PREFECT_API_URL": self.api_url, "PREFECT_HOME": str(self.home)}

    def start(self, timeout: float = 90.0) -> PrefectServer:
        self.launch()
        try:
            self.await_health(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def launch(self) -> None:
        """Start the process without waiting for it (`await_health` waits)."""
        database = self.database_url or f"sqlite+aiosqlite:///{self.home / 'prefect.db'}"
        # The caller's own server settings (its API, its UI's API) are not this server's.
        inherited = {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED}
        env = {
            **inherited,
            "PREFECT_HOME": str(self.home),
            "PREFECT_API_DATABASE_CONNECTION_URL": database,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_LOGGING_LEVEL": "WARNING",
            "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
            # `--port` alone leaves the UI calling :4200 (its /ui-settings): name this API.
            "PREFECT_SERVER_API_HOST": "127.0.0.1",
            "PREFECT_SERVER_API_PORT": str(self.port),
            "PREFECT_SERVER_UI_API_URL": self.api_url,
            **self.extra_env,
        }
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child process owns it
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "prefect",
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                *self.server_args,
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def await_health(self, timeout: float = 90.0) -> None:
        """Until `/api/health` answers 200; raises if the process exits or is late."""
        self._await_health(timeout)

    def _await_health(self, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"prefect server exited; see {self.log_path}:\n"
                    + self.log_path.read_text()[-2000:]
                )
            try:
                if httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"prefect server did not answer within {timeout}s")
            time.sleep(0.25)

    def kill(self, how: signal.Signals = signal.SIGKILL, timeout: float = 20) -> None:
        """Signal the server's process group and wait until it is gone; `start()` brings it
        back on the same port and database (crash and restart tests)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, how)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> PrefectServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
