"""The home of a local stack kept between starts (`runbooks up --home`): Prefect's home and
SQLite database, alisim's data directory, the relay token, and `stack.json`, which says what
is running where while `runbooks up` runs (`runbooks status` reads it); and the fixed ports a
kept stack listens on by default."""

from __future__ import annotations

import os
import secrets
import shutil
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ValidationError

DEFAULT_HOME = "~/.runbooks/local"
HOME_ENV = "RUNBOOKS_HOME"

DEFAULT_PREFECT_PORT = 4210  # not Prefect's own 4200, so a `prefect server start` can run beside
DEFAULT_SIM_PORT = 9800  # as `runbooks sim`
DEFAULT_RELAY_PORT = 9810  # as `runbooks relay`


def default_home() -> Path:
    """`$RUNBOOKS_HOME`, else `~/.runbooks/local`: one stack per user, wherever it is started."""
    return Path(os.environ.get(HOME_ENV) or DEFAULT_HOME).expanduser()


class Piece(BaseModel):
    """One server of the stack: the process that serves it, where, and its health URL."""

    pid: int
    address: str
    health_url: str


class StackState(BaseModel):
    """What `runbooks up` writes into `stack.json` once everything is up."""

    pid: int
    started_at: datetime
    prefect: Piece
    alisim: Piece
    relay: Piece

    def pieces(self) -> dict[str, Piece]:
        return {"Prefect": self.prefect, "alisim": self.alisim, "relay": self.relay}


class HomeInUse(RuntimeError):
    """Another `runbooks up` runs on this home: two would share one SQLite database."""


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class StackHome:
    """The files of one kept stack, under `path`."""

    def __init__(self, path: Path) -> None:
        self.path = path.expanduser().resolve()

    @property
    def prefect(self) -> Path:
        return self.path / "prefect"

    @property
    def alisim(self) -> Path:
        return self.path / "alisim"

    @property
    def state_file(self) -> Path:
        return self.path / "stack.json"

    @property
    def token_file(self) -> Path:
        return self.path / "relay.token"

    def ensure_idle(self) -> None:
        """`HomeInUse` if another `runbooks up` runs on this home; `NotADirectoryError` if
        the path is a file."""
        if self.path.exists() and not self.path.is_dir():
            raise NotADirectoryError(f"--home {self.path} is a file, not a directory")
        running = self.running_pid()
        if running is not None:
            raise HomeInUse(
                f"a stack already runs on {self.path} (pid {running}): stop it (Ctrl-C in its "
                f"terminal, or kill {running}) or pass another --home"
            )

    def prepare(self, fresh: bool = False) -> None:
        """Create the home (private to this user); with `fresh`, forget what earlier starts
        kept. Only the stack's own entries are removed, never anything else in `path`."""
        self.ensure_idle()
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        if fresh:
            for directory in (self.prefect, self.alisim):
                shutil.rmtree(directory, ignore_errors=True)
            for file in (self.token_file, self.state_file):
                file.unlink(missing_ok=True)
        # alisim keeps instances in memory: the working directories of the last start's
        # instances belong to instances that no longer exist.
        shutil.rmtree(self.alisim / "instances", ignore_errors=True)
        self.prefect.mkdir(exist_ok=True, mode=0o700)
        self.alisim.mkdir(exist_ok=True, mode=0o700)

    def token(self) -> str:
        """The relay token of this home, made on its first start and kept, so a shell's
        `RUNBOOKS_RELAY_TOKEN` stays valid across restarts (`--fresh` makes a new one)."""
        if self.token_file.exists():
            kept = self.token_file.read_text().strip()
            if kept:
                return kept
        token = secrets.token_urlsafe(24)
        fd = os.open(self.token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(token + "\n")
        return token

    def write_state(self, state: StackState) -> None:
        temporary = self.state_file.with_suffix(".tmp")
        temporary.write_text(state.model_dump_json(indent=2) + "\n")
        temporary.replace(self.state_file)

    def read_state(self) -> StackState | None:
        try:
            return StackState.model_validate_json(self.state_file.read_text())
        except (FileNotFoundError, ValidationError, ValueError):
            return None

    def clear_state(self) -> None:
        self.state_file.unlink(missing_ok=True)

    def running_pid(self) -> int | None:
        """The pid of the `runbooks up` that runs on this home, if one does."""
        state = self.read_state()
        if state is None or state.pid == os.getpid() or not pid_alive(state.pid):
            return None
        return state.pid


def now() -> datetime:
    return datetime.now(UTC)
