"""Developer endpoints for pushes: `deliveries`, `dead-letters`, `cloudmonitor/subscriptions`.

Registered into `alisim.devapi`'s route table; each answers JSON, errors included.
"""

from __future__ import annotations

import json
import logging
import math
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


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text[:20]} is too large for a number")
    return value


async def read_json(request: Request) -> Any:
    """The request's JSON body (`{}` when empty); ValueError saying why when it is not strict
    JSON (NaN, Infinity, numbers beyond a double, lone surrogates, nesting too deep), since
    such values would only fail later, when alisim writes them out."""
    raw = await request.body()
    if not raw:
        return {}
    try:
        value = json.loads(raw, parse_constant=_no_constant, parse_float=_finite)
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeError:
        raise ValueError("the body is not UTF-8 or holds a lone surrogate escape") from None
    except RecursionError:
        raise ValueError("the body's JSON is nested too deeply") from None
    except ValueError as exc:
        raise ValueError(f"the body is not valid JSON: {exc}") from None
    return value


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
