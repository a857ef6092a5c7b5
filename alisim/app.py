"""The one ASGI app behind alisim's one port.

`/_alisim/*` is the developer API; a request naming an OpenAPI action (`x-acs-action`
header or `Action` parameter) goes to ECS/ROS/EventBridge/STS; everything else is OSS path-style.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from alisim import devapi
from alisim.cloud import Cloud
from alisim.openapi import dispatch
from alisim.oss import handlers as oss_handlers

log = logging.getLogger("alisim")

_METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]


def create_app(cloud: Cloud) -> Starlette:
    async def entry(request: Request) -> Response:
        if request.url.path.startswith("/_alisim/") or request.url.path == "/_alisim":
            return await devapi.handle(cloud, request)
        if dispatch.is_openapi_request(request):
            return await dispatch.handle(cloud, request)
        return await oss_handlers.handle(cloud, request)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await cloud.shutdown()

    # Importing the service modules registers their actions.
    import alisim.ecs.actions  # noqa: F401
    from alisim.eventbridge import actions as _eventbridge_actions  # noqa: F401
    from alisim.sts import actions as _sts_actions  # noqa: F401

    app = Starlette(
        routes=[Route("/{path:path}", entry, methods=_METHODS)],
        lifespan=lifespan,
    )
    app.state.cloud = cloud
    return app
