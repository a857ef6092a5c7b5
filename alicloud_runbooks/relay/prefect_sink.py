"""Stores events in Prefect through `POST /api/events`, acknowledged, not fire-and-forget.

Concurrent requests are coalesced: events that arrive while a write is in flight go out
together in the next write, so one Prefect call serves many pushes under load.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from dataclasses import dataclass, field
from typing import Any

import httpx

from alicloud_runbooks.relay.settings import RelaySettings

log = logging.getLogger("alicloud_runbooks.relay")


class PrefectUnavailable(Exception):
    """Prefect did not store the events; the pusher should retry later."""


@dataclass
class _Pending:
    events: list[dict[str, Any]]
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
        self.stored = 0
        self.writes = 0

    async def store(self, events: list[dict[str, Any]]) -> None:
        """Returns once Prefect has stored `events`; raises PrefectUnavailable otherwise."""
        if not events:
            return
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._run())
        pending = _Pending(events)
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
        events = [e for item in batch for e in item.events]
        error: Exception | None = None
        try:
            response = await self._client.post(self._url, json=events)
            if response.status_code >= 300:
                error = PrefectUnavailable(
                    f"Prefect answered {response.status_code} to POST /events: "
                    f"{response.text[:300]}"
                )
        except httpx.HTTPError as exc:
            error = PrefectUnavailable(
                f"Prefect is unreachable at {self._url}: {type(exc).__name__}"
            )
        except Exception as exc:  # the waiting pushes must get an answer whatever happens
            log.exception("storing events in Prefect failed")
            error = PrefectUnavailable(f"storing events failed: {type(exc).__name__}")
        if error is None:
            self.stored += len(events)
            self.writes += 1
        for item in batch:
            if item.done.done():
                continue
            if error is None:
                item.done.set_result(None)
            else:
                item.done.set_exception(error)

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
