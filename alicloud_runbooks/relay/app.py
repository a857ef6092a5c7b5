"""Contract 2: `POST /eventbridge`, `POST /cloudmonitor`, `GET /healthz`.

A 2xx means Prefect stored every event of the request; anything else makes EventBridge
retry. 400 malformed (with the reason), 401 unauthenticated, 403 not an allowed account or
source, 413 too large, 415 not JSON, 503 Prefect unreachable. A duplicate is a 2xx (its
Prefect id is deterministic, and Prefect drops the second copy).
"""

from __future__ import annotations

import hmac
import json
import logging
import statistics
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from alicloud_runbooks.events.mapping import MappingError, from_cloud_event, from_cloudmonitor
from alicloud_runbooks.relay.prefect_sink import PrefectSink, PrefectUnavailable
from alicloud_runbooks.relay.settings import RelaySettings

log = logging.getLogger("alicloud_runbooks.relay")

JSON_TYPES = (
    "application/json",
    "application/cloudevents+json",
    "application/cloudevents-batch+json",
    "text/json",
)


class Rejected(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _depth(value: Any, limit: int) -> int:
    """Nesting depth, iteratively (a hostile body must not exhaust the stack)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if deepest > limit:
                return deepest
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children)
    return deepest


class Relay:
    def __init__(self, settings: RelaySettings, sink: PrefectSink | None = None) -> None:
        self.settings = settings
        self.sink = sink or PrefectSink(settings)
        self.accepted = 0
        self.rejected = 0
        self.latencies_ms: deque[float] = deque(maxlen=10_000)

    def _authenticate(self, request: Request) -> None:
        supplied = request.query_params.get("token")
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            supplied = header[7:].strip()
        expected = self.settings.token.get_secret_value()
        if not supplied or not hmac.compare_digest(supplied.encode(), expected.encode()):
            raise Rejected(401, "missing or wrong token")

    async def _body(self, request: Request) -> Any:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in JSON_TYPES:
            raise Rejected(415, f"content type {content_type or 'none'!r} is not JSON")
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise Rejected(413, f"body larger than {limit} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > limit:
                raise Rejected(413, f"body larger than {limit} bytes")
        try:
            parsed = json.loads(body)
        except (ValueError, RecursionError):
            raise Rejected(400, "body is not valid JSON") from None
        if _depth(parsed, self.settings.max_json_depth) > self.settings.max_json_depth:
            raise Rejected(400, f"JSON nested deeper than {self.settings.max_json_depth}")
        return parsed

    def _check_allowed(self, event: dict[str, Any]) -> None:
        acs = event["payload"]["acs"]
        accounts = self.settings.allowed_account_ids
        if accounts and acs.get("account_id") not in accounts:
            raise Rejected(403, f"account {acs.get('account_id')!r} is not allowed")
        sources = self.settings.allowed_sources
        if sources and acs.get("source") not in sources:
            raise Rejected(403, f"source {acs.get('source')!r} is not allowed")

    async def _ingest(
        self, request: Request, mapper: Callable[[dict[str, Any], datetime], dict[str, Any]]
    ) -> Response:
        started = time.perf_counter()
        self._authenticate(request)
        parsed = await self._body(request)
        items = parsed if isinstance(parsed, list) else [parsed]
        if not items:
            raise Rejected(400, "empty event list")
        if len(items) > self.settings.max_events_per_request:
            raise Rejected(413, f"more than {self.settings.max_events_per_request} events")
        received = datetime.now(UTC)
        events = []
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                raise Rejected(400, f"event {index} is not a JSON object")
            try:
                event = mapper(item, received)
            except MappingError as exc:
                raise Rejected(400, f"event {index}: {exc}") from None
            self._check_allowed(event)
            events.append(event)
        try:
            await self.sink.store(events)
        except PrefectUnavailable as exc:
            raise Rejected(503, str(exc)) from None
        self.accepted += len(events)
        self.latencies_ms.append((time.perf_counter() - started) * 1000)
        for event in events:
            log.info(
                "accepted %s %s (source id %s)",
                event["event"],
                event["resource"]["prefect.resource.id"],
                event["payload"]["acs"]["id"],
            )
        return JSONResponse({"accepted": len(events), "ids": [e["id"] for e in events]})

    async def eventbridge(self, request: Request) -> Response:
        return await self._guard(
            request,
            lambda item, received: from_cloud_event(
                item, received=received, output_delivered_type=self.settings.output_delivered_type
            ),
        )

    async def cloudmonitor(self, request: Request) -> Response:
        return await self._guard(
            request, lambda item, received: from_cloudmonitor(item, received=received)
        )

    async def _guard(
        self, request: Request, mapper: Callable[[dict[str, Any], datetime], dict[str, Any]]
    ) -> Response:
        try:
            return await self._ingest(request, mapper)
        except Rejected as exc:
            self.rejected += 1
            log.warning(
                "rejected %s from %s: %d %s",
                request.url.path,
                request.client.host if request.client else "?",
                exc.status,
                exc.reason,
            )
            headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
            if exc.status == 503:
                headers = {"Retry-After": "5"}
            return JSONResponse({"error": exc.reason}, status_code=exc.status, headers=headers)

    async def healthz(self, request: Request) -> Response:
        prefect_ok = await self.sink.healthy()
        latency = {}
        if len(self.latencies_ms) >= 2:
            cuts = statistics.quantiles(self.latencies_ms, n=100, method="inclusive")
            latency = {"p50_ms": round(cuts[49], 2), "p99_ms": round(cuts[98], 2)}
        return JSONResponse(
            {
                "status": "ok" if prefect_ok else "degraded",
                "prefect": prefect_ok,
                "accepted": self.accepted,
                "rejected": self.rejected,
                "prefect_writes": self.sink.writes,
                "latency": latency,
            },
            status_code=200 if prefect_ok else 503,
        )


def create_app(settings: RelaySettings | None = None) -> Starlette:
    relay = Relay(settings or RelaySettings())  # type: ignore[call-arg]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await relay.sink.close()

    app = Starlette(
        routes=[
            Route("/eventbridge", relay.eventbridge, methods=["POST"]),
            Route("/cloudmonitor", relay.cloudmonitor, methods=["POST"]),
            Route("/healthz", relay.healthz, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.relay = relay
    return app
