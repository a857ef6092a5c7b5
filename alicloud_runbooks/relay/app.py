"""Contract 2: `POST /eventbridge`, `POST /cloudmonitor`, `POST /ros-notification` (a ROS
stack's NotificationURLs; `region` and `account` in the query say whose stack, since the body
does not), `GET /healthz` (each also with a trailing slash, never a redirect: a redirect would
echo the token in its `Location`).

A 2xx means Prefect accepted every event of the push on its message broker (`POST /api/events`
answered 204). That is not yet its database: with the default in-memory broker a Prefect crash
can lose accepted events, and EventBridge never resends them (runbook waits recover them by
reconciliation); with the Redis broker accepted means durable.

A bad event costs only the push that carried it: 400 malformed, not strict JSON, or refused by
Prefect (with the reason, so EventBridge dead-letters it instead of retrying for a day); 401
unauthenticated, 403 not an allowed account or source, 408 the body did not arrive in time, 413
too large, 415 not JSON; 503 only when Prefect is unreachable, times out or fails (5xx). A
duplicate is a 2xx (its Prefect id is deterministic, and Prefect drops the second copy).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import statistics
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from alicloud_runbooks.events.mapping import (
    MappingError,
    from_cloud_event,
    from_cloudmonitor,
    from_ros_notification,
)
from alicloud_runbooks.relay import strict_json
from alicloud_runbooks.relay.prefect_sink import PrefectRefused, PrefectSink, PrefectUnavailable
from alicloud_runbooks.relay.runs import RunDirectory
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


class Relay:
    def __init__(self, settings: RelaySettings, sink: PrefectSink | None = None) -> None:
        self.settings = settings
        self.sink = sink or PrefectSink(settings)
        self.runs = (
            RunDirectory(self.sink.client, settings.prefect_api_url) if settings.link_runs else None
        )
        self.accepted = 0
        self.accepted_events = 0
        self.rejected = 0
        self.unavailable = 0
        self.disconnected = 0
        self.last_rejection: dict[str, Any] | None = None
        self.latencies_ms: deque[float] = deque(maxlen=10_000)

    def _authenticate(self, request: Request) -> None:
        supplied = request.query_params.get("token")
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            supplied = header[7:].strip()
        expected = self.settings.token.get_secret_value()
        if not supplied or not hmac.compare_digest(supplied.encode(), expected.encode()):
            raise Rejected(401, "missing or wrong token")

    async def _read(self, request: Request) -> bytearray:
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise Rejected(413, f"body larger than {limit} bytes")
        body = bytearray()
        seconds = self.settings.body_timeout_seconds
        try:
            async with asyncio.timeout(seconds):
                async for chunk in request.stream():
                    body.extend(chunk)
                    if len(body) > limit:
                        raise Rejected(413, f"body larger than {limit} bytes")
        except TimeoutError:
            raise Rejected(408, f"the body did not arrive within {seconds:g} s") from None
        return body

    async def _body(self, request: Request) -> Any:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in JSON_TYPES:
            raise Rejected(415, f"content type {content_type or 'none'!r} is not JSON")
        body = await self._read(request)
        try:
            return strict_json.loads(bytes(body), self.settings.max_json_depth)
        except strict_json.StrictJSONError as exc:
            raise Rejected(400, str(exc)) from None

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
        if self.runs is not None:
            await self.runs.link(events)
        try:
            await self.sink.store(events)
        except PrefectRefused as exc:
            raise Rejected(400, str(exc)) from None
        except PrefectUnavailable as exc:
            raise Rejected(503, str(exc)) from None
        self.accepted += 1
        self.accepted_events += len(events)
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

    async def ros_notification(self, request: Request) -> Response:
        region = request.query_params.get("region") or None
        account = request.query_params.get("account") or None
        return await self._guard(
            request,
            lambda item, received: from_ros_notification(
                item, received=received, region=region, account=account
            ),
        )

    def _scrub(self, text: str) -> str:
        """Bounded, encodable, and without the token even if a pusher echoed it into an event."""
        token = self.settings.token.get_secret_value()
        return strict_json.printable(text, 500).replace(token, "****")

    async def _guard(
        self, request: Request, mapper: Callable[[dict[str, Any], datetime], dict[str, Any]]
    ) -> Response:
        client = request.client.host if request.client else "?"
        try:
            return await self._ingest(request, mapper)
        except ClientDisconnect:
            self.disconnected += 1
            log.warning("%s from %s: the client disconnected mid-body", request.url.path, client)
            return Response(status_code=400)
        except Rejected as exc:
            reason = self._scrub(exc.reason)
            if exc.status == 503:
                self.unavailable += 1
            else:
                self.rejected += 1
                self.last_rejection = {
                    "status": exc.status,
                    "reason": reason,
                    "time": datetime.now(UTC).isoformat(),
                }
            log.warning("rejected %s from %s: %d %s", request.url.path, client, exc.status, reason)
            headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
            if exc.status == 503:
                headers = {"Retry-After": "5"}
            if exc.status == 408:
                headers = {"Connection": "close"}
            return JSONResponse({"error": reason}, status_code=exc.status, headers=headers)

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
                "pushes": {
                    "accepted": self.accepted,
                    "rejected": self.rejected,
                    "unavailable": self.unavailable,
                    "disconnected": self.disconnected,
                },
                "accepted_events": self.accepted_events,
                "last_rejection": self.last_rejection,
                "prefect_writes": self.sink.writes,
                "prefect_write_splits": self.sink.splits,
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

    routes = []
    for path, endpoint, methods in (
        ("/eventbridge", relay.eventbridge, ["POST"]),
        ("/cloudmonitor", relay.cloudmonitor, ["POST"]),
        ("/ros-notification", relay.ros_notification, ["POST"]),
        ("/healthz", relay.healthz, ["GET"]),
    ):
        routes += [
            Route(path, endpoint, methods=methods),
            Route(path + "/", endpoint, methods=methods),
        ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.router.redirect_slashes = False
    app.state.relay = relay
    return app
