"""What a wait says while it waits, so a long wait is never silent.

- A progress line at a steady, modest cadence (`every` seconds, default 10) while keys are
  open: "TaskCompleted: 37 of 100 settled; 63 open; 4s since the last event; stream
  connected". A wait shorter than `every` logs none.
- A progress artifact per wait, made at the first line (so short waits make none) and written
  at most once per `every` seconds (`alicloud_runbooks.progress.Progress`, the fleet run's
  bounded helper), plus once at the end.
- A warning, once per silence, when keys are open, no event has come for `stall_after` seconds,
  and the event path looks broken: the Prefect event stream is disconnected, the relay's
  `/healthz` fails (when `relay_url` is known), or reconciliation has already found final
  answers that no event brought. A silence alone is no warning: a long command sends nothing
  until it ends.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from alicloud_runbooks.progress import Progress
from alicloud_runbooks.text import plural
from alicloud_runbooks.times import seconds_from_env

RELAY_PATHS = ("/eventbridge", "/cloudmonitor", "/healthz")
WHAT_TO_CHECK = (
    "check that the relay is up and reachable (`runbooks relay`; for the local stack "
    "`runbooks status`) and that the EventBridge rules push to it with the right token "
    "(`runbooks doctor`)"
)


def relay_base(url: str | None) -> str | None:
    """The relay's base URL, without the token a target URL may carry (`?token=`), user
    info, or the push path: what `/healthz` hangs off, and safe to log."""
    if not url:
        return None
    parts = urlsplit(url.strip())
    if not parts.scheme or not parts.hostname:
        raise ValueError(
            f"the relay URL must be absolute, like http://127.0.0.1:9810 (got {url!r})"
        )
    path = parts.path.rstrip("/")
    for suffix in RELAY_PATHS:
        path = path.removesuffix(suffix)
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, host, path, "", ""))


@dataclass(frozen=True)
class WatchPolicy:
    """How often a wait reports, when a silence is a stall, and where the relay is."""

    every: float = 10.0
    stall_after: float = 30.0
    lines: bool = True
    artifact: bool = True
    relay_url: str | None = None
    """The relay's URL (its base or its push URL); its `/healthz` is asked during a stall."""

    @classmethod
    def from_environment(cls, **changes: Any) -> WatchPolicy:
        """`RUNBOOKS_PROGRESS_SECONDS`, `RUNBOOKS_STALL_SECONDS`, `RUNBOOKS_RELAY_URL`."""
        values: dict[str, Any] = {
            "every": seconds_from_env("RUNBOOKS_PROGRESS_SECONDS", cls.every),
            "stall_after": seconds_from_env("RUNBOOKS_STALL_SECONDS", cls.stall_after),
            "relay_url": relay_base(os.environ.get("RUNBOOKS_RELAY_URL")),
        }
        return cls(**{**values, **changes})


async def relay_problem(base: str, timeout: float = 3.0) -> str | None:
    """Why the relay looks unhealthy (its `/healthz` fails or does not answer), or None."""
    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            response = await client.get(f"{base}/healthz")
    except httpx.HTTPError as exc:
        return f"the relay at {base} does not answer ({type(exc).__name__})"
    if response.status_code == 503:
        return f"the relay at {base} answers 503: it cannot reach Prefect"
    if response.status_code != 200:
        return f"the relay at {base} answers {response.status_code} on /healthz"
    return None


def artifact_key(name: str) -> str:
    """A progress artifact key (lowercase letters, digits, dashes) for the wait `name`."""
    return "wait-" + (re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "events")


def _ago(seconds: float) -> str:
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.1f} min"


class Watch:
    """The reporting side of one wait; the waiter calls `saw_event`, `lost` and `tick`."""

    def __init__(
        self,
        name: str,
        total: int,
        policy: WatchPolicy,
        log: logging.Logger | logging.LoggerAdapter,
        connected: Callable[[], bool],
        in_run: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.total = total
        self.policy = policy
        self.log = log
        self.connected = connected
        self.in_run = in_run
        self.clock = clock
        self.started = clock()
        self.next_at = self.started + policy.every
        self.last_event_at: float | None = None
        self.unsent = 0
        """Keys reconciliation settled with a final answer that no event brought."""
        self.lines = 0
        self.stall_warnings = 0
        self.progress: Progress | None = None
        self._warned = False

    def saw_event(self) -> None:
        """An event for one of the wait's keys arrived: any silence is over."""
        self.last_event_at = self.clock()
        self._warned = False

    def lost(self, keys: int) -> None:
        self.unsent += keys

    def describe(self, settled: int, open_keys: int, now: float) -> str:
        if self.last_event_at is None:
            since = f"no event yet in {_ago(now - self.started)}"
        else:
            since = f"{_ago(now - self.last_event_at)} since the last event"
        stream = "stream connected" if self.connected() else "stream disconnected"
        return (
            f"{self.name}: {settled} of {self.total} settled; {open_keys} open; {since}; {stream}"
        )

    async def tick(self, settled: int, open_keys: int) -> None:
        """One report: the line, the artifact, and the stall check; then the next one is due
        `every` seconds later."""
        now = self.clock()
        self.next_at = now + self.policy.every
        line = self.describe(settled, open_keys, now)
        if self.policy.lines:
            self.log.info("%s", line)
            self.lines += 1
        if self.policy.artifact and self.in_run:
            await self._write(settled, line)
        quiet = now - (self.last_event_at or self.started)
        if open_keys and quiet >= self.policy.stall_after and not self._warned:
            problems = await self._problems()
            if problems:
                self._warned = True
                self.stall_warnings += 1
                self.log.warning(
                    "%s: no event for %s while %d of %s open, and %s. Events may not "
                    "be reaching Prefect: %s. The wait goes on; its deadline reconciles what "
                    "stays open.",
                    self.name,
                    _ago(quiet),
                    open_keys,
                    plural(self.total, "key") + (" is" if open_keys == 1 else " are"),
                    "; ".join(problems),
                    WHAT_TO_CHECK,
                )

    async def _problems(self) -> list[str]:
        problems = []
        if not self.connected():
            problems.append("the Prefect event stream is disconnected")
        if self.policy.relay_url:
            problem = await relay_problem(self.policy.relay_url)
            if problem:
                problems.append(problem)
        if self.unsent:
            problems.append(
                f"reconciliation found {self.unsent} final answer"
                f"{'' if self.unsent == 1 else 's'} that no event brought"
            )
        return problems

    async def _write(self, settled: int, line: str) -> None:
        if self.progress is None:
            self.progress = Progress(
                self.total, artifact_key(self.name), self.log, interval=self.policy.every
            )
            self.progress.mark(settled)
            await self.progress.start(line)
            return
        self.progress.mark(settled, line)
        await self.progress.flush()

    def abandon(self) -> None:
        """The wait ended by an exception (a cancellation, say): one last write without
        awaiting, as `Progress.abandon` does."""
        if self.progress is not None:
            self.progress.abandon(f"{self.name}: ended early")

    async def close(self, settled: int, open_keys: int) -> None:
        """The artifact's last write, if the wait made one."""
        if self.progress is None:
            return
        self.progress.mark(settled)
        ended = f"{self.name}: done, {settled} of {self.total} settled"
        await self.progress.close(ended + (f", {open_keys} unsettled" if open_keys else ""))
