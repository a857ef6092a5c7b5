"""Developer endpoints under `/_alisim/`: health, call counts, the timed call log, events,
settings, faults, reset, sts, and those the services add (`Service.devapi`: EventBridge's
deliveries, dead letters, CloudMonitor subscriptions).

JSON in and out. Unknown paths and bad input get a JSON 4xx saying what is wrong, never a
500; bodies are bounded (`devapi_max_body_bytes`). When alisim is open to other hosts every
endpoint needs `Authorization: Bearer <AccessKeyId>:<AccessKeySecret>` of its fresh key.
"""

from __future__ import annotations

import hmac
import logging
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.types import Message

from alisim.bodies import BodyTooLarge, read_bounded
from alisim.config import Settings
from alisim.eventbridge.devroutes import read_json
from alisim.events import documents
from alisim.faults import FaultPlan
from alisim.service import DevRoute as Route

if TYPE_CHECKING:
    from alisim.cloud import Cloud

log = logging.getLogger("alisim.devapi")


class _BadRequest(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


async def _json_body(request: Request) -> Any:
    try:
        return await read_json(request)
    except ValueError as exc:
        raise _BadRequest(str(exc)) from None


def _validate(model: type[BaseModel], data: Any) -> BaseModel:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'body'}: {error['msg']}"
            for error in exc.errors(include_url=False)
        )
        raise _BadRequest(f"invalid {model.__name__}: {problems}") from None


async def _settings(cloud: Cloud, request: Request) -> Response:
    if request.method in ("PATCH", "PUT", "POST"):
        patch = await _json_body(request)
        if not isinstance(patch, dict):
            raise _BadRequest("settings must be a JSON object")
        unknown = sorted(set(patch) - set(Settings.model_fields))
        if unknown:
            raise _BadRequest(f"unknown settings {unknown}; known: {sorted(Settings.model_fields)}")
        merged = cloud.settings.model_dump() | patch
        updated = _validate(Settings, merged)
        for name in Settings.model_fields:
            setattr(cloud.settings, name, getattr(updated, name))
        cloud.nonces.window_seconds = cloud.settings.signature_window_seconds
    return JSONResponse(cloud.settings.model_dump())


class InjectedEvent(BaseModel):
    """An event to publish as if a cloud service had emitted it (EventBridge PutEvents-like)."""

    model_config = ConfigDict(extra="allow")
    type: str = Field(min_length=1)
    source: str = Field(min_length=1)
    subject: str = ""
    data: dict[str, Any] = Field(default_factory=dict)
    id: str | None = Field(default=None, min_length=1)
    time: str | None = Field(default=None, min_length=1)


async def _publish(cloud: Cloud, request: Request) -> None:
    body = await _json_body(request)
    items = body if isinstance(body, list) else [body]
    if len(items) > 10_000:
        raise _BadRequest("at most 10,000 events per request")
    events = [_validate(InjectedEvent, item) for item in items]
    for event in events:
        document = documents.cloud_event(
            type=event.type,
            source=event.source,
            region=cloud.settings.region,
            account_id=cloud.settings.account_id,
            subject=event.subject,
            data=event.data,
            precision=cloud.settings.event_time_precision,
        )
        document.update({k: getattr(event, k) for k in ("id", "time") if getattr(event, k)})
        cloud.events.publish(document)


async def _events(cloud: Cloud, request: Request) -> Response:
    if request.method == "POST":
        before = cloud.events.last_seq
        await _publish(cloud, request)
        return JSONResponse({"published": cloud.events.last_seq - before}, status_code=201)
    q = request.query_params
    try:
        after = int(q.get("after", "0"))
        limit = int(q.get("limit", "1000"))
    except ValueError:
        raise _BadRequest("after and limit must be integers") from None
    if not 1 <= limit <= 10_000:
        raise _BadRequest("limit must be between 1 and 10000")
    found = cloud.events.query(
        after=after, type=q.get("type"), subject_contains=q.get("contains"), limit=limit
    )
    return JSONResponse(
        {
            "events": [event for _, event in found],
            "next": found[-1][0] if found else after,
            "last": cloud.events.last_seq,
        }
    )


async def _faults(cloud: Cloud, request: Request) -> Response:
    if request.method in ("PUT", "POST"):
        cloud.faults.replace(_validate(FaultPlan, await _json_body(request)))  # type: ignore[arg-type]
    elif request.method == "DELETE":
        cloud.faults.replace(FaultPlan())
    return JSONResponse({"plan": cloud.faults.plan.model_dump(), "injected": cloud.faults.injected})


async def _calls(cloud: Cloud, request: Request) -> Response:
    if request.method == "DELETE":
        cloud.calls.clear()
    by_product = cloud.calls_by_product()
    return JSONResponse(
        {"calls": by_product, "total": sum(sum(v.values()) for v in by_product.values())}
    )


async def _call_log(cloud: Cloud, request: Request) -> Response:
    """Each API call (product, action, time) and published event (type, subject, time), in
    order, from `since` (epoch seconds); DELETE clears it. Times are alisim's clock."""
    if request.method == "DELETE":
        cloud.call_log.clear()
    try:
        since = float(request.query_params.get("since", "0"))
    except ValueError:
        raise _BadRequest("since must be a number of seconds since the epoch") from None
    return JSONResponse(cloud.call_log.since(since))


async def _reset(cloud: Cloud, request: Request) -> Response:
    if request.method != "POST":
        raise _BadRequest("use POST", 405)
    await cloud.reset()
    return JSONResponse({"reset": True})


async def _health(cloud: Cloud, request: Request) -> Response:
    return JSONResponse(
        {
            "status": "ok",
            "region": cloud.settings.region,
            "services": [s.name for s in cloud.services],
            **cloud.summary(),
            "events": cloud.events.last_seq,
            "deliveries_pending": cloud.eventbridge.deliveries.pending,
        }
    )


class StsRequest(BaseModel):
    """Body of `POST /_alisim/sts`. A negative duration mints an already expired token,
    for tests of expiry; the longest is AssumeRole's 12 hours."""

    model_config = ConfigDict(extra="forbid")
    DurationSeconds: int = Field(default=3600, ge=-86_400, le=43_200)
    RoleSessionName: str = Field(default="alisim", pattern=r"^[A-Za-z0-9.@_-]{2,64}$")


async def _sts(cloud: Cloud, request: Request) -> Response:
    """Mint a temporary key triple, as AssumeRole would, for STS-token tests and users."""
    if request.method != "POST":
        raise _BadRequest("use POST", 405)
    wanted = _validate(StsRequest, await _json_body(request))
    assert isinstance(wanted, StsRequest)
    key = cloud.credentials.issue_sts(wanted.DurationSeconds, wanted.RoleSessionName)
    assert key.expires_at is not None
    return JSONResponse(
        {
            "AccessKeyId": key.access_key_id,
            "AccessKeySecret": key.access_key_secret,
            "SecurityToken": key.security_token,
            "Expiration": documents.iso_utc(key.expires_at),
        }
    )


_ROUTES: dict[str, Route] = {
    "health": _health,
    "settings": _settings,
    "events": _events,
    "faults": _faults,
    "calls": _calls,
    "call-log": _call_log,
    "reset": _reset,
    "sts": _sts,
}


def routes(cloud: Cloud) -> dict[str, Route]:
    """alisim's own endpoints and those its services declare; a clash is refused."""
    clash = sorted(set(_ROUTES) & set(cloud.dev_routes))
    if clash:
        raise ValueError(f"services declare developer endpoints alisim has: {clash}")
    return {**_ROUTES, **cloud.dev_routes}


def _authorized(cloud: Cloud, request: Request) -> bool:
    """Open on a loopback-only alisim; otherwise the fresh key, compared in constant time."""
    key = cloud.credentials.remote_key
    if key is None:
        return True
    given = request.headers.get("authorization", "")
    expected = f"Bearer {key.access_key_id}:{key.access_key_secret}"
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8"))


def _unauthorized() -> Response:
    return JSONResponse(
        {
            "error": "alisim is open to other hosts, so its developer API needs the key pair it "
            "printed at start: send 'Authorization: Bearer <AccessKeyId>:<AccessKeySecret>'"
        },
        status_code=401,
        headers={"www-authenticate": 'Bearer realm="alisim"'},
    )


async def _buffered(request: Request, limit: int) -> Request:
    """The request with its body read (bounded) up front, so routes may `await body()`."""
    body = await read_bounded(request, limit)
    replayed = False

    async def receive() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await request.receive()

    return Request(request.scope, receive)


async def handle(cloud: Cloud, request: Request, table: dict[str, Route]) -> Response:
    if not _authorized(cloud, request):
        return _unauthorized()
    name = request.url.path.removeprefix("/_alisim").strip("/")
    route = table.get(name)
    if route is None:
        return JSONResponse(
            {"error": f"unknown developer endpoint {name!r}", "endpoints": sorted(table)},
            status_code=404,
        )
    limit = cloud.settings.devapi_max_body_bytes
    try:
        return await route(cloud, await _buffered(request, limit))
    except _BadRequest as exc:
        return JSONResponse({"error": str(exc)}, status_code=exc.status)
    except BodyTooLarge:
        return JSONResponse(
            {"error": f"the body exceeds {limit} bytes (setting devapi_max_body_bytes)"},
            status_code=413,
        )
    except ClientDisconnect:
        log.info("%s %s: the client left before sending its body", request.method, name)
        return Response(status_code=400)
    except Exception as exc:
        log.exception("developer endpoint %s failed", name)
        return JSONResponse({"error": f"alisim failed: {type(exc).__name__}"}, status_code=500)
