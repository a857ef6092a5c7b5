"""Pushes events to HTTP endpoints with EventBridge's retry strategies and a dead-letter file.

One task per delivery: it waits for a slot (bounded concurrency), POSTs the body, and on a
5xx, 408 or 429 answer, a connection error or a timeout sleeps the strategy's next delay
(scaled by `time_scale`) and tries again. Any other non-2xx answer is the target refusing the
event, which no retry changes: it is dead-lettered at once. After the last try the event goes
to the dead-letter JSONL file, never silently away. Every attempt is recorded for
`/_alisim/deliveries`, with the status and the reason the target gave.

Delivery faults (drop, duplicate, delay, reorder) are applied when a delivery is submitted,
reading the fault plan afresh each time so `/_alisim/faults` takes effect at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiohttp

from alisim.eventbridge.models import RetryStrategy, retry_delays
from alisim.events.documents import iso_utc_ms
from alisim.faults import DeliveryFault

if TYPE_CHECKING:
    from alisim.cloud import Cloud

log = logging.getLogger("alisim.eventbridge")

Channel = Literal["eventbridge", "cloudmonitor", "notification"]
Outcome = Literal["delivered", "failed", "dropped", "dead-lettered", "skipped"]
HEADERS = {"Content-Type": "application/json", "User-Agent": "alisim-eventbridge/1.0"}


def mask_url(url: str) -> str:
    """The URL with `token` query values and any password replaced by `***`."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid url>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            netloc = f"{userinfo.split(':', 1)[0]}:***@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "***" if "token" in k.lower() else v) for k, v in pairs], safe="*")
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _jsonl(entry: dict[str, Any]) -> str:
    """One strict-JSON line: an event that is not strict JSON (NaN, a lone surrogate) is kept
    only as the text of `body`, so the file and `/_alisim/dead-letters` stay readable."""
    try:
        line = json.dumps(entry, ensure_ascii=False, allow_nan=False)
        line.encode("utf-8")
    except ValueError:
        return json.dumps({**entry, "event": None}, ensure_ascii=True, allow_nan=False)
    return line


@dataclass
class Delivery:
    """One event on its way to one endpoint."""

    channel: Channel
    rule: str
    target: str
    url: str
    body: str
    event: dict[str, Any]
    event_id: str
    event_type: str
    strategy: RetryStrategy
    errors_tolerance: str | None = None
    dead_letter_arn: str | None = None
    duplicate: bool = False
    id: str = field(default_factory=lambda: uuid.uuid4().hex)


Held = tuple[Delivery, float]

# A 4xx is final (the event itself is refused) except these, which say "not now".
RETRIED_CLIENT_ERRORS = frozenset({408, 429})
_MAX_REASON = 300


def retried(status: int | None) -> bool:
    """Whether a failed attempt is tried again: no answer, 3xx, 5xx, 408 or 429."""
    return status is None or not 400 <= status < 500 or status in RETRIED_CLIENT_ERRORS


def reason(body: bytes) -> str:
    """The reason a target gave: a JSON `error`/`message` if there is one, else the text."""
    text = body[:4096].decode("utf-8", "replace").strip()
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        for key in ("error", "message", "Message", "detail"):
            if isinstance(parsed.get(key), str):
                text = parsed[key]
                break
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 1] + "…"


class DeliveryEngine:
    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud
        self.log: deque[dict[str, Any]] = deque(maxlen=cloud.settings.delivery_log_limit)
        self._seq = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: aiohttp.ClientSession | None = None
        self._slots: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._held: Held | None = None
        self._held_timer: asyncio.TimerHandle | None = None

    # ----- state
    @property
    def pending(self) -> int:
        """Deliveries not yet delivered or dead-lettered (including one held for reordering)."""
        return len(self._tasks) + (self._held is not None)

    @property
    def dead_letter_path(self) -> Path:
        configured = self.cloud.settings.dead_letter_path
        return Path(configured) if configured else self.cloud.data_dir / "dead-letters.jsonl"

    # ----- submission and faults
    def submit(self, delivery: Delivery) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self.submit, delivery)
            else:
                self._dead_letter(delivery, 0, None, "alisim's event loop is not running")
            return
        self._loop = loop
        faults = self.cloud.faults
        plan = faults.plan.delivery
        if not plan.applies_to(delivery.event_type, delivery.body):
            plan = DeliveryFault()
        if plan.drop_rate and random.random() < plan.drop_rate:
            faults.injected += 1
            self._record(delivery, 0, "dropped", error="dropped by fault injection")
            return
        copies = [delivery]
        if plan.duplicate_rate and random.random() < plan.duplicate_rate:
            faults.injected += 1
            copies.append(replace(delivery, id=uuid.uuid4().hex, duplicate=True))
        delay = 0.0
        if plan.delay_ms and random.random() < plan.delay_rate:
            faults.injected += 1
            delay = plan.delay_ms / 1000
        for copy in copies:
            self._schedule(copy, delay, plan)

    def submit_unsupported(self, delivery: Delivery, reason: str) -> None:
        """Log an event for a target alisim cannot reach (MNS, FC …), so it is visible."""
        self._record(delivery, 0, "skipped", error=reason)

    def _schedule(self, delivery: Delivery, delay: float, plan: DeliveryFault) -> None:
        held = self._take_held()
        if held is not None:
            self._start(delivery, delay, then=held)
        elif plan.reorder_rate and random.random() < plan.reorder_rate:
            self.cloud.faults.injected += 1
            self._held = (delivery, delay)
            assert self._loop is not None
            self._held_timer = self._loop.call_later(
                plan.reorder_hold_ms / 1000, self._release_held
            )
        else:
            self._start(delivery, delay)

    def _take_held(self) -> Held | None:
        held, self._held = self._held, None
        if self._held_timer is not None:
            self._held_timer.cancel()
            self._held_timer = None
        return held

    def _release_held(self) -> None:
        held = self._take_held()
        if held is not None:
            self._start(*held)

    def _start(self, delivery: Delivery, delay: float, then: Held | None = None) -> None:
        assert self._loop is not None
        task = self._loop.create_task(self._run(delivery, delay, then))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ----- attempts
    async def _run(self, delivery: Delivery, delay: float, then: Held | None) -> None:
        if delay:
            await asyncio.sleep(delay)
        delays = retry_delays(delivery.strategy)
        attempt = 0
        while True:
            attempt += 1
            status, error = await self._attempt(delivery, attempt)
            if then is not None:
                self._start(*then)
                then = None
            if error is None:
                return
            if attempt > len(delays) or not retried(status):
                break
            await asyncio.sleep(self.cloud.settings.scaled(delays[attempt - 1]))
        self._dead_letter(delivery, attempt, status, error)

    def _http(self) -> tuple[aiohttp.ClientSession, asyncio.Semaphore]:
        """aiohttp rather than httpx here: at hundreds of pushes a second, httpx's connection
        pool cost most of alisim's CPU (measured with py-spy in bench/relay_bench.py)."""
        if self._client is None or self._slots is None:
            concurrency = self.cloud.settings.delivery_concurrency
            self._client = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=concurrency),
                trust_env=False,
                timeout=aiohttp.ClientTimeout(total=None),
            )
            self._slots = asyncio.Semaphore(concurrency)
        return self._client, self._slots

    async def _attempt(self, delivery: Delivery, attempt: int) -> tuple[int | None, str | None]:
        client, slots = self._http()
        timeout = self.cloud.settings.delivery_timeout_seconds
        status: int | None = None
        error: str | None = None
        async with slots:
            started = time.monotonic()
            try:
                async with (
                    asyncio.timeout(timeout),
                    client.post(
                        delivery.url,
                        data=delivery.body.encode("utf-8"),
                        headers=HEADERS,
                        allow_redirects=False,
                    ) as response,
                ):
                    answer = await response.read()
                status = response.status
                if not 200 <= status < 300:
                    said = reason(answer)
                    error = f"HTTP {status}: {said}" if said else f"HTTP {status}"
            except TimeoutError:
                error = f"no answer within {timeout:g} s"
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}".rstrip(": ")
            elapsed_ms = round((time.monotonic() - started) * 1000, 1)
        outcome: Outcome = "delivered" if error is None else "failed"
        self._record(delivery, attempt, outcome, status, error, elapsed_ms)
        return status, error

    # ----- records
    def _record(
        self,
        delivery: Delivery,
        attempt: int,
        outcome: Outcome,
        status_code: int | None = None,
        error: str | None = None,
        elapsed_ms: float | None = None,
    ) -> None:
        self._seq += 1
        self.log.append(
            {
                "seq": self._seq,
                "delivery_id": delivery.id,
                "channel": delivery.channel,
                "event_id": delivery.event_id,
                "event_type": delivery.event_type,
                "rule": delivery.rule,
                "target": delivery.target,
                "url": mask_url(delivery.url),
                "attempt": attempt,
                "outcome": outcome,
                "status_code": status_code,
                "error": error,
                "duplicate": delivery.duplicate,
                "elapsed_ms": elapsed_ms,
                "time": iso_utc_ms(time.time()),
            }
        )

    def query(
        self,
        *,
        after: int = 0,
        event_id: str | None = None,
        rule: str | None = None,
        outcome: str | None = None,
        channel: str | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        found = []
        for record in self.log:
            if record["seq"] <= after:
                continue
            if event_id is not None and record["event_id"] != event_id:
                continue
            if rule is not None and record["rule"] != rule:
                continue
            if outcome is not None and record["outcome"] != outcome:
                continue
            if channel is not None and record["channel"] != channel:
                continue
            found.append(record)
            if len(found) >= limit:
                break
        return found

    def clear_log(self) -> None:
        self.log.clear()

    # ----- dead letters
    def _dead_letter(
        self, delivery: Delivery, attempts: int, status: int | None, error: str | None
    ) -> None:
        entry = {
            "time": iso_utc_ms(time.time()),
            "delivery_id": delivery.id,
            "channel": delivery.channel,
            "rule": delivery.rule,
            "target": delivery.target,
            "url": mask_url(delivery.url),
            "attempts": attempts,
            "last_status_code": status,
            "last_error": error,
            "errors_tolerance": delivery.errors_tolerance,
            "dead_letter_arn": delivery.dead_letter_arn,
            "event_id": delivery.event_id,
            "event_type": delivery.event_type,
            "event": delivery.event,
            "body": delivery.body,
        }
        path = self.dead_letter_path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as sink:
                sink.write(_jsonl(entry) + "\n")
        except OSError:
            log.exception("could not write dead letter %s to %s: %s", delivery.id, path, entry)
        self._record(delivery, attempts, "dead-lettered", status, error)

    def dead_letters(self) -> Iterator[dict[str, Any]]:
        path = self.dead_letter_path
        if not path.exists():
            return
        with path.open(encoding="utf-8") as source:
            for line in source:
                try:
                    yield json.loads(line)
                except ValueError:
                    continue

    def clear_dead_letters(self) -> None:
        path = self.dead_letter_path
        if path.exists():
            path.write_text("", encoding="utf-8")

    # ----- lifecycle
    async def shutdown(self) -> None:
        self._take_held()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.close()
            self._client = None
