"""Prefect's own scale-out on one machine: PostgreSQL, Redis, two `prefect server start
--no-services` API servers and one `prefect server services start` process, with Redis for
messaging, the messaging cache, causal ordering, concurrency leases and the Docket.

`ScaleOutPrefect` stands in for `PrefectServer` in `LocalStack(...).start(prefect=...)`: the
stack then runs one relay replica per API server behind a round-robin front
(`local_stack.relay_front`), so the same runbooks and tests run on it. PostgreSQL and Redis are
the system's (Debian's `postgresql` and `redis-server`; CI installs them with apt): they are
servers with their own data directories, not Python packages, and nothing is downloaded at run
time. Every process is started here and stopped by its own pid.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx

from local_stack.servers import FAST_EVENT_STORE, PrefectServer, free_port

# Redis ≥ 6.2: prefect-redis claims stalled messages with XAUTOCLAIM.
REDIS_INSTALL = "apt-get install -y redis-server (Redis ≥ 6.2)"
POSTGRES_INSTALL = "apt-get install -y postgresql (PostgreSQL ≥ 14.9)"


class MissingServer(RuntimeError):
    """A server binary the scale-out stack needs is not installed; says how to install it."""


def postgres_bin(name: str) -> str:
    """A PostgreSQL program: on PATH, else in Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if candidates:
        return candidates[-1]
    raise MissingServer(
        f"PostgreSQL's {name} is not installed (not on PATH, not in "
        f"/usr/lib/postgresql/*/bin): the scale-out stack needs it. Install it: {POSTGRES_INSTALL}"
    )


def redis_bin() -> str:
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )
    if not found:
        raise MissingServer(
            f"redis-server is not installed: the scale-out stack needs it. "
            f"Install it: {REDIS_INSTALL}"
        )
    return found


def _wait(
    check: Callable[[], bool], proc: subprocess.Popen[bytes], what: str, log: Path, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited; see {log}:\n" + log.read_text()[-2000:])
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not come up within {timeout}s; see {log}")
        time.sleep(0.1)


def _stop_process(proc: subprocess.Popen[bytes] | None, how: signal.Signals) -> None:
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, how)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Postgres:
    """A PostgreSQL cluster of its own (initdb into `data_dir`, trust auth for local use only),
    on 127.0.0.1:`port` with its unix socket in the same directory. As root it runs as the
    `postgres` user, since PostgreSQL refuses to run as root."""

    def __init__(self, data_dir: Path, port: int | None = None, database: str = "prefect") -> None:
        self.root = data_dir
        self.port = port or free_port()
        self.database = database
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.root / "postgres.log"
        self._user = pwd.getpwnam("postgres") if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://prefect@127.0.0.1:{self.port}/{self.database}"

    def _run_as(self) -> dict[str, object]:
        if self._user is None:
            return {}
        return {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}

    def _prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if self._user is not None:
            # The postgres user must reach the directory: every parent must be traversable.
            for parent in [self.root, *self.root.parents]:
                if parent == Path("/"):
                    break
                mode = parent.stat().st_mode
                if not mode & 0o001:
                    if parent in (self.root, self.root.parent):
                        parent.chmod(mode | 0o711)
                    else:
                        raise RuntimeError(
                            f"{parent} is not traversable by the postgres user; put the "
                            "scale-out data under a reachable directory (e.g. /tmp)"
                        )
            os.chown(self.root, self._user.pw_uid, self._user.pw_gid)
        data = self.root / "data"
        if not (data / "PG_VERSION").exists():
            subprocess.run(
                [
                    postgres_bin("initdb"),
                    "-D",
                    str(data),
                    "-U",
                    "prefect",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ],
                check=True,
                capture_output=True,
                **self._run_as(),  # type: ignore[arg-type]
            )

    def start(self, timeout: float = 60) -> Postgres:
        self._prepare()
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child process owns it
        if self._user is not None:
            os.chown(self.log_path, self._user.pw_uid, self._user.pw_gid)
        self.proc = subprocess.Popen(
            [
                postgres_bin("postgres"),
                "-D",
                str(self.root / "data"),
                "-p",
                str(self.port),
                "-k",
                str(self.root),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "max_connections=200",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **self._run_as(),  # type: ignore[arg-type]
        )
        _wait(self._ready, self.proc, "postgres", self.log_path, timeout)
        self._create_database()
        return self

    def _ready(self) -> bool:
        return (
            subprocess.run(
                [postgres_bin("pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
                check=False,
            ).returncode
            == 0
        )

    def _create_database(self) -> None:
        found = subprocess.run(
            [
                postgres_bin("psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "prefect",
                "-d",
                "postgres",
                "-tAc",
                f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'",
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        if found != "1":
            subprocess.run(
                [
                    postgres_bin("createdb"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-U",
                    "prefect",
                    self.database,
                ],
                check=True,
                capture_output=True,
            )

    def stop(self) -> None:
        _stop_process(self.proc, signal.SIGINT)  # PostgreSQL's "fast" shutdown


class Redis:
    """`redis-server` on 127.0.0.1:`port`, with an append-only file in `data_dir` (fsync every
    second), so what Redis acknowledged survives a Redis restart too."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.root = data_dir
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.root / "redis.log"

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self, timeout: float = 30) -> Redis:
        self.root.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child process owns it
        self.proc = subprocess.Popen(
            [
                redis_bin(),
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                str(self.root),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--protected-mode",
                "yes",
                "--daemonize",
                "no",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _wait(self._ready, self.proc, "redis-server", self.log_path, timeout)
        return self

    def _ready(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        _stop_process(self.proc, signal.SIGTERM)


def prefect_env(database_url: str, redis: Redis) -> dict[str, str]:
    """The settings every Prefect server process of the stack shares (README, "Scale out")."""
    return {
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": database_url,
        "PREFECT_API_DATABASE_CONNECTION_URL": database_url,
        "PREFECT_MESSAGING_BROKER": "prefect_redis.messaging",
        "PREFECT_MESSAGING_CACHE": "prefect_redis.messaging",
        "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "prefect_redis.ordering",
        "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect_redis.lease_storage",
        "PREFECT_REDIS_MESSAGING_URL": redis.url(0),
        "PREFECT_SERVER_DOCKET_URL": redis.url(1),
        # Without it, events from websockets (`emit_event`) wait up to 10 s in a batch of 5.
        "PREFECT_REDIS_MESSAGING_PUBLISHER_BATCH_SIZE": "1",
        # The persister acknowledges a Redis message once it is in its in-memory batch: with
        # the default batch of 20, a SIGKILL of the services loses up to 19 acknowledged
        # events. A batch of 1 writes each event to PostgreSQL before it is acknowledged.
        "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_BATCH_SIZE": "1",
        **FAST_EVENT_STORE,
    }


class PrefectServices:
    """`prefect server services start`: the background services (scheduler, triggers, event
    persister, …) in one process, apart from the API servers."""

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.home = home
        self.extra_env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = home / "services.log"

    def start(self) -> PrefectServices:
        import sys

        self.home.mkdir(parents=True, exist_ok=True)
        inherited = {
            k: v
            for k, v in os.environ.items()
            if k not in ("PREFECT_API_URL", "PREFECT_UI_API_URL")
        }
        env = {
            **inherited,
            "PREFECT_HOME": str(self.home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_LOGGING_LEVEL": "WARNING",
            "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
            **self.extra_env,
        }
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child process owns it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "services", "start"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def kill(self, how: signal.Signals = signal.SIGKILL) -> None:
        _stop_process(self.proc, how)

    def stop(self) -> None:
        _stop_process(self.proc, signal.SIGTERM)


class ScaleOutPrefect:
    """PostgreSQL + Redis + API servers (`api_ports`) + a services process. `api_url` is the
    first API server's (flows and the UI), `api_urls` all of them (one relay replica each).

    The first API server alone migrates the fresh database and registers the block types;
    the others start after it is healthy with both turned off: two servers on a fresh database
    race on the block registration (`uq_block_type__slug`) and one dies."""

    def __init__(
        self,
        root: Path | None = None,
        api_ports: list[int | None] | None = None,
        postgres_port: int | None = None,
        redis_port: int | None = None,
    ) -> None:
        self._tmp = None if root else tempfile.TemporaryDirectory(prefix="runbooks-scale-out-")
        self.home = root or Path(self._tmp.name)  # type: ignore[union-attr]
        self.home.mkdir(parents=True, exist_ok=True)
        self.postgres = Postgres(self.home / "postgres", postgres_port)
        self.redis = Redis(self.home / "redis", redis_port)
        ports = api_ports or [None, None]
        self.apis: list[PrefectServer] = []
        for index, port in enumerate(ports, start=1):
            home = self.home / f"api-{index}"
            home.mkdir(exist_ok=True)
            self.apis.append(PrefectServer(port=port, home=home, server_args=["--no-services"]))
        self.services = PrefectServices(self.home / "services", {})
        self.log_path = self.apis[0].log_path

    # What LocalStack and ServedDeployments read of a PrefectServer.
    @property
    def api_url(self) -> str:
        return self.apis[0].api_url

    @property
    def api_urls(self) -> list[str]:
        return [api.api_url for api in self.apis]

    @property
    def ui_url(self) -> str:
        return self.apis[0].ui_url

    @property
    def port(self) -> int:
        return self.apis[0].port

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self.apis[0].proc

    def env(self) -> dict[str, str]:
        return {"PREFECT_API_URL": self.api_url, "PREFECT_HOME": str(self.home / "client")}

    def pids(self) -> dict[str, int]:
        """Every process of the stack by name (what `runbooks up` prints)."""
        named = {"postgres": self.postgres.proc, "redis": self.redis.proc}
        named |= {f"api-{i}": a.proc for i, a in enumerate(self.apis, start=1)}
        named["services"] = self.services.proc
        return {name: p.pid for name, p in named.items() if p is not None}

    def describe(self) -> list[str]:
        """What runs where, one line a process (printed by `runbooks up --backend scale-out`)."""
        pids = self.pids()
        lines = [
            f"  PostgreSQL       127.0.0.1:{self.postgres.port} (pid {pids.get('postgres')}, "
            f"data {self.postgres.root / 'data'})",
            f"  Redis            {self.redis.url()} messaging, cache, ordering, leases; "
            f"{self.redis.url(1)} Docket (pid {pids.get('redis')})",
        ]
        for index, api in enumerate(self.apis, start=1):
            pid = pids.get(f"api-{index}")
            lines.append(f"  Prefect API {index}    {api.api_url} --no-services (pid {pid})")
        lines.append(
            f"  Prefect services `prefect server services start` (pid {pids.get('services')}, "
            f"log {self.services.log_path})"
        )
        return lines

    def start(self, timeout: float = 120) -> ScaleOutPrefect:
        try:
            self.postgres.start()
            self.redis.start()
            shared = prefect_env(self.postgres.url, self.redis)
            self.services.extra_env = {
                **shared,
                "PREFECT_SERVER_DATABASE_MIGRATE_ON_START": "false",
            }
            for index, api in enumerate(self.apis):
                api.extra_env = {**shared}
                if index > 0:
                    api.extra_env |= {
                        "PREFECT_SERVER_DATABASE_MIGRATE_ON_START": "false",
                        "PREFECT_SERVER_REGISTER_BLOCKS_ON_START": "false",
                    }
            self.start_prefect(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def start_prefect(self, timeout: float = 120) -> None:
        """The Prefect processes (again, after `kill_prefect`): the first API server, then the
        others and the services together; returns once an event posted to one API server is
        stored through Redis and the services' persister."""
        first, *others = self.apis
        first.launch()
        first.await_health(timeout)
        for api in others:
            api.launch()
        self.services.start()
        for api in others:
            api.await_health(timeout)
        self.await_pipeline(timeout)

    def await_pipeline(self, timeout: float) -> None:
        """A probe event through the last API server, Redis and the services' persister."""
        event_id = str(uuid.uuid4())
        probe = {
            "id": event_id,
            "occurred": datetime.now(UTC).isoformat(),
            "event": "runbooks.scale-out.probe",
            "resource": {"prefect.resource.id": "runbooks.scale-out"},
        }
        api = self.apis[-1].api_url
        httpx.post(f"{api}/events", json=[probe], timeout=10).raise_for_status()
        deadline = time.monotonic() + timeout
        body = {"filter": {"id": {"id": [event_id]}}, "limit": 1}
        while True:
            if self.services.proc is not None and self.services.proc.poll() is not None:
                raise RuntimeError(
                    f"prefect server services exited; see {self.services.log_path}:\n"
                    + self.services.log_path.read_text()[-2000:]
                )
            with contextlib.suppress(httpx.HTTPError):
                found = httpx.post(f"{self.api_url}/events/filter", json=body, timeout=10)
                if found.status_code == 200 and found.json()["events"]:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"a probe event was not stored within {timeout}s: are the services "
                    f"running? see {self.services.log_path}"
                )
            time.sleep(0.2)

    def kill_prefect(self, how: signal.Signals = signal.SIGKILL) -> None:
        """Every Prefect process; PostgreSQL and Redis stay up. The services first, while the
        API servers still take events, so the persister dies with events in hand."""
        self.services.kill(how)
        for api in self.apis:
            api.kill(how)

    def stop(self) -> None:
        self.services.stop()
        for api in self.apis:
            api.stop()
        self.redis.stop()
        self.postgres.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> ScaleOutPrefect:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
