"""Developer endpoints under `/_alisim/`: health, call counts, events, settings, faults, reset,
and (from `alisim.eventbridge.devroutes`) deliveries, dead letters, CloudMonitor subscriptions.

JSON in and out. Unknown paths and bad bodies get a JSON error, never a 500.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from alisim.config import Settings
from alisim.eventbridge import devroutes as eventbridge_routes
from alisim.events import documents
from alisim.faults import FaultPlan

if TYPE_CHECKING:
    from alisim.cloud import Cloud


class _BadRequest(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


async def _json_body(request: Request) -> Any:
    try:
        return await eventbridge_routes.read_json(request)
    except ValueError as exc:
        raise _BadRequest(str(exc)) from None


def _validate(model: type[BaseModel], data: Any) -> BaseModel:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _BadRequest(exc.errors(include_url=False).__repr__()) from None


async def _settings(cloud: Cloud, request: Request) -> Response:
    if request.method in ("PATCH", "PUT", "POST"):
        patch = await _json_body(request)
        if not isinstance(patch, dict):
            raise _BadRequest("settings must be a JSON object")
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


async def _publish(cloud: Cloud, request: Request) -> None:
    body = await _json_body(request)
    items = body if isinstance(body, list) else [body]
    if len(items) > 10_000:
        raise _BadRequest("at most 10,000 events per request")
    events = [_validate(InjectedEvent, item) for item in items]
    for event in events:
        extra = event.model_extra or {}
        document = documents.cloud_event(
            type=event.type,
            source=event.source,
            region=cloud.settings.region,
            account_id=cloud.settings.account_id,
            subject=event.subject,
            data=event.data,
        )
        document.update({k: v for k, v in extra.items() if k in ("id", "time")})
        cloud.events.publish(document)


async def _events(cloud: Cloud, request: Request) -> Response:
    if request.method == "POST":
        before = cloud.events.last_seq
        await _publish(cloud, request)
        return JSONResponse({"published": cloud.events.last_seq - before}, status_code=201)
    q = request.query_params
    try:
        after = int(q.get("after", "0"))
        limit = min(int(q.get("limit", "1000")), 10_000)
    except ValueError:
        raise _BadRequest("after and limit must be integers") from None
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
            "instances": len(cloud.instances.instances),
            "invocations": len(cloud.assistant.invocations),
            "events": cloud.events.last_seq,
        }
    )


async def _sts(cloud: Cloud, request: Request) -> Response:
    """Mint a temporary key triple, as AssumeRole would, for STS-token tests and users."""
    if request.method != "POST":
        raise _BadRequest("use POST", 405)
    body = await _json_body(request)
    duration = int(body.get("DurationSeconds", 3600)) if isinstance(body, dict) else 3600
    key = cloud.credentials.issue_sts(duration)
    return JSONResponse(
        {
            "AccessKeyId": key.access_key_id,
            "AccessKeySecret": key.access_key_secret,
            "SecurityToken": key.security_token,
            "Expiration": key.expires_at,
        }
    )


_ROUTES = {
    "health": _health,
    "settings": _settings,
    "events": _events,
    "faults": _faults,
    "calls": _calls,
    "reset": _reset,
    "sts": _sts,
    **eventbridge_routes.ROUTES,
}


async def handle(cloud: Cloud, request: Request) -> Response:
    name = request.url.path.removeprefix("/_alisim").strip("/")
    route = _ROUTES.get(name)
    if route is None:
        return JSONResponse(
            {"error": f"unknown developer endpoint {name!r}", "endpoints": sorted(_ROUTES)},
            status_code=404,
        )
    try:
        return await route(cloud, request)
    except _BadRequest as exc:
        return JSONResponse({"error": str(exc)}, status_code=exc.status)
