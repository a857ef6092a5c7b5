"""Writes events to Prefect through `POST /api/events` and waits for its answer.

Prefect answers 204 once the events are on its message broker, not in its database: with the
default in-memory broker a Prefect crash can lose events it has accepted (runbook waits recover
them by reconciliation); with the Redis broker accepted means durable.

Concurrent pushes are coalesced: events that arrive while a write is in flight go out together
in the next write, so one Prefect call serves many pushes under load. A push must not pay for
its neighbours, so each push is encoded on its own (what cannot be encoded is refused at once),
and a write Prefect refuses as invalid is split in halves until the pushes it refuses are
found: those are refused with Prefect's reason, the others accepted.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import httpx

from alicloud_runbooks.relay.settings import RelaySettings
from alicloud_runbooks.relay.strict_json import printable

log = logging.getLogger("alicloud_runbooks.relay")

# Statuses with which Prefect refuses what it was sent; any other 4xx (401, 403, 404, 429 …)
# is about the relay's configuration or Prefect's state, and the pusher should retry.
REFUSALS = frozenset({400, 413, 422})
_MAX_REASON = 300


class PrefectUnavailable(Exception):
    """Prefect did not accept the events (unreachable, timed out, 5xx); retry later."""


class PrefectRefused(Exception):
    """Prefect will never accept these events; the message says why (no secrets)."""


def encode(events: list[dict[str, Any]]) -> bytes:
    """The events as strict JSON (no brackets), or PrefectRefused saying why not."""
    try:
        return ",".join(
            json.dumps(event, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
            for event in events
        ).encode("utf-8")
    except (ValueError, TypeError) as exc:
        raise PrefectRefused(
            f"the events cannot be encoded as JSON: {printable(str(exc))}"
        ) from None


def refusal_reason(response: httpx.Response) -> str:
    """Prefect's validation messages with the event index, never the input it echoes back."""
    prefix = f"Prefect refused the events ({response.status_code})"
    try:
        body = response.json()
    except ValueError:
        return printable(f"{prefix}: {response.text}", _MAX_REASON)
    detail = None
    if isinstance(body, dict):
        detail = body.get("exception_detail") or body.get("detail")
    problems = []
    if isinstance(detail, str):
        problems.append(detail)
    for error in detail if isinstance(detail, list) else []:
        if isinstance(error, dict):
            loc = [str(p) for p in error.get("loc", []) if p != "body"]
            where = f"event {loc[0]} {'.'.join(loc[1:])}".strip() if loc else "body"
            problems.append(f"{where}: {error.get('msg', '')}")
    text = "; ".join(problems)
    return printable(f"{prefix}: {text}" if text else prefix, _MAX_REASON)


@dataclass
class _Pending:
    events: list[dict[str, Any]]
    body: bytes
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class PrefectSink:
    def __init__(self, settings: RelaySettings, max_batch: int = 500) -> None:
        self._url = settings.prefect_api_url.rstrip("/") + "/events"
        headers = {"Content-Type": "application/json"}
        if settings.prefect_api_key is not None:
            headers["Authorization"] = f"Bearer {settings.prefect_api_key.get_secret_value()}"
        elif settings.prefect_api_auth_string is not None:
            encoded = base64.b64encode(
                settings.prefect_api_auth_string.get_secret_value().encode()
            ).decode()
            headers["Authorization"] = f"Basic {encoded}"
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=settings.prefect_timeout_seconds,
            limits=httpx.Limits(max_connections=8, max_keepalive_connections=8),
        )
        self._max_batch = max_batch
        self._queue: list[_Pending] = []
        self._wakeup = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self.accepted = 0
        self.writes = 0
        self.splits = 0

    @property
    def client(self) -> httpx.AsyncClient:
        """The authenticated client to Prefect's API, for the relay's other lookups."""
        return self._client

    async def store(self, events: list[dict[str, Any]]) -> None:
        """Returns once Prefect has accepted `events`; raises PrefectRefused if it never will,
        PrefectUnavailable if it cannot now."""
        if not events:
            return
        pending = _Pending(events, encode(events))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._run())
        self._queue.append(pending)
        self._wakeup.set()
        await pending.done

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                batch: list[_Pending] = []
                count = 0
                while self._queue and (
                    not batch or count + len(self._queue[0].events) <= self._max_batch
                ):
                    item = self._queue.pop(0)
                    batch.append(item)
                    count += len(item.events)
                await self._write(batch)

    async def _write(self, batch: list[_Pending]) -> None:
        try:
            error = await self._post(batch)
        except Exception as exc:  # the waiting pushes must get an answer whatever happens
            log.exception("storing events in Prefect failed")
            error = PrefectUnavailable(f"storing events failed: {type(exc).__name__}")
        if isinstance(error, PrefectRefused) and len(batch) > 1:
            self.splits += 1
            middle = len(batch) // 2
            await asyncio.gather(self._write(batch[:middle]), self._write(batch[middle:]))
            return
        for item in batch:
            if item.done.done():
                continue
            if error is None:
                item.done.set_result(None)
            else:
                item.done.set_exception(error)

    async def _post(self, batch: list[_Pending]) -> Exception | None:
        content = b"[" + b",".join(item.body for item in batch) + b"]"
        try:
            response = await self._client.post(self._url, content=content)
        except httpx.HTTPError as exc:
            return PrefectUnavailable(
                f"Prefect is unreachable at {self._url}: {type(exc).__name__}"
            )
        if response.status_code < 300:
            self.accepted += sum(len(item.events) for item in batch)
            self.writes += 1
            return None
        if response.status_code in REFUSALS:
            return PrefectRefused(refusal_reason(response))
        return PrefectUnavailable(
            f"Prefect answered {response.status_code} to POST /events: "
            f"{printable(response.text, 200)}"
        )

    async def healthy(self) -> bool:
        try:
            response = await self._client.get(self._url.removesuffix("/events") + "/health")
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        await self._client.aclose()
