"""The one ASGI app behind alisim's one port.

`/_alisim/*` is the developer API; a service's own HTTP endpoints (`Service.http`, e.g.
`/_ros/waitcondition`) come next; an OpenAPI call (`dispatch.is_openapi_request`) goes to
the actions the services register (`alisim/services.py`); everything else is OSS path-style.
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
    dev_routes = devapi.routes(cloud)

    async def entry(request: Request) -> Response:
        path = request.url.path
        if path.startswith("/_alisim/") or path == "/_alisim":
            return await devapi.handle(cloud, request, dev_routes)
        for prefix, route in cloud.http_routes.items():
            if path.startswith(prefix):
                return await route(cloud, request)
        if dispatch.is_openapi_request(request):
            return await dispatch.handle(cloud, request)
        return await oss_handlers.handle(cloud, request)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await cloud.shutdown()

    app = Starlette(
        routes=[Route("/{path:path}", entry, methods=_METHODS)],
        lifespan=lifespan,
    )
    app.state.cloud = cloud
    return app
