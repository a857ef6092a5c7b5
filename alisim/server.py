"""Running alisim: in the foreground (`runbooks sim`) or in a background thread (tests, demo)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import uvicorn

from alisim.app import create_app
from alisim.cloud import Cloud
from alisim.config import Settings
from alisim.credentials import AccessKey
from alisim.exposure import TRUSTED_PROXIES, check_bind
from alisim.service import Service


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class AlisimServer:
    """alisim on a uvicorn server in its own thread and event loop.

    A host that is not loopback is refused (`RemoteBindRefused`) unless `allow_remote`;
    with it, `remote_key` is a fresh key pair that remote clients and `/_alisim/*` must use.
    `services` replaces `alisim.services.SERVICES` (tests of the wiring).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        data_dir: Path | None = None,
        log_level: str = "warning",
        allow_remote: bool = False,
        services: Sequence[Service] | None = None,
    ) -> None:
        check_bind(host, allow_remote)
        self.host = host
        self.port = port or free_port(host)
        self.cloud = Cloud(settings, data_dir, services)
        self.remote_key: AccessKey | None = (
            self.cloud.credentials.open_to_remote() if allow_remote else None
        )
        self.app = create_app(self.cloud)
        config = uvicorn.Config(
            self.app,
            host=self.host,
            port=self.port,
            log_level=log_level,
            access_log=False,
            lifespan="on",
            timeout_keep_alive=30,
            limit_concurrency=2048,
            backlog=2048,
            proxy_headers=True,
            forwarded_allow_ips=TRUSTED_PROXIES,
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    @property
    def endpoint(self) -> str:
        """`host:port`, the form the OpenAPI SDKs take (no scheme)."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._server.serve())

    def start(self, timeout: float = 15.0) -> AlisimServer:
        self._thread = threading.Thread(target=self._run, name="alisim", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        # uvicorn exposes no start event; its `started` flag is the documented signal.
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"alisim did not start on {self.endpoint}")
            time.sleep(0.01)
        return self

    def call(self, coro_factory, timeout: float = 30.0):  # type: ignore[no-untyped-def]
        """Run a coroutine in alisim's loop from another thread (tests and developer tools)."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro_factory(), self.loop).result(timeout)

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=15)

    def __enter__(self) -> AlisimServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
