"""Developer endpoints for pushes: `deliveries`, `dead-letters`, `cloudmonitor/subscriptions`.

Registered into `alisim.devapi`'s route table; each answers JSON, errors included.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from alisim.eventbridge.cloudmonitor import SubscriptionRequest

if TYPE_CHECKING:
    from alisim.cloud import Cloud

log = logging.getLogger("alisim.eventbridge")

Route = Callable[["Cloud", Request], Awaitable[Response]]


def _error(message: str, status: int = 400) -> Response:
    return JSONResponse({"error": message}, status_code=status)


def _int(request: Request, name: str, default: int) -> int:
    try:
        return int(request.query_params.get(name, default))
    except ValueError:
        raise ValueError(f"{name} must be an integer") from None


async def deliveries(cloud: Cloud, request: Request) -> Response:
    engine = cloud.eventbridge.deliveries
    if request.method == "DELETE":
        engine.clear_log()
    q = request.query_params
    try:
        after = _int(request, "after", 0)
        limit = min(_int(request, "limit", 1000), 10_000)
    except ValueError as exc:
        return _error(str(exc))
    found = engine.query(
        after=after,
        event_id=q.get("event_id"),
        rule=q.get("rule"),
        outcome=q.get("outcome"),
        channel=q.get("channel"),
        limit=limit,
    )
    return JSONResponse(
        {
            "deliveries": found,
            "next": found[-1]["seq"] if found else after,
            "pending": engine.pending,
        }
    )


async def dead_letters(cloud: Cloud, request: Request) -> Response:
    engine = cloud.eventbridge.deliveries
    if request.method == "DELETE":
        engine.clear_dead_letters()
    letters = list(engine.dead_letters())
    return JSONResponse(
        {"dead_letters": letters, "count": len(letters), "path": str(engine.dead_letter_path)}
    )


async def read_json(request: Request) -> Any:
    """The request's JSON body (`{}` when empty); ValueError when it is not JSON."""
    raw = await request.body()
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except ValueError:
        raise ValueError("the body is not valid JSON") from None


async def subscriptions(cloud: Cloud, request: Request) -> Response:
    monitor = cloud.eventbridge.cloudmonitor
    if request.method == "POST":
        try:
            wanted = SubscriptionRequest.model_validate(await read_json(request))
        except ValidationError as exc:
            return JSONResponse(
                {"error": exc.errors(include_url=False, include_context=False)}, status_code=400
            )
        except ValueError as exc:
            return _error(str(exc))
        return JSONResponse(monitor.subscribe(wanted).model_dump(), status_code=201)
    if request.method == "DELETE":
        subscription_id = request.query_params.get("id")
        if subscription_id is None:
            try:
                body = await read_json(request)
            except ValueError as exc:
                return _error(str(exc))
            if isinstance(body, dict) and isinstance(body.get("id"), str):
                subscription_id = body["id"]
        removed = monitor.unsubscribe(subscription_id)
        if subscription_id is not None and not removed:
            return _error(f"no subscription {subscription_id!r}", 404)
        return JSONResponse({"removed": removed})
    return JSONResponse({"subscriptions": [s.model_dump() for s in monitor.subscriptions.values()]})


def _guarded(route: Route) -> Route:
    """Answer an unexpected failure as JSON too, like the rest of the developer API."""

    async def guarded(cloud: Cloud, request: Request) -> Response:
        try:
            return await route(cloud, request)
        except Exception as exc:
            log.exception("developer endpoint %s failed", request.url.path)
            return _error(f"{type(exc).__name__}: {exc}", 500)

    return guarded


ROUTES: dict[str, Route] = {
    "deliveries": _guarded(deliveries),
    "dead-letters": _guarded(dead_letters),
    "cloudmonitor/subscriptions": _guarded(subscriptions),
}
