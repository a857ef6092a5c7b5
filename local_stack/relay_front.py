"""A round-robin front for relay replicas: what a load balancer (or Function Compute's own
routing) does in production, so EventBridge keeps one target URL while replicas come and go.
A replica that refuses the connection is skipped for the next one; the relay's event ids are
derived from the source event, so a push retried on another replica is not stored twice."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

# Hop-by-hop headers, and the length httpx sets itself.
_DROPPED = {"host", "connection", "keep-alive", "transfer-encoding", "content-length"}


def create_front(replicas: list[str], timeout: float = 30.0) -> Starlette:
    """`replicas`: base URLs (`http://127.0.0.1:PORT`); every path is forwarded as is."""
    turn = itertools.cycle(range(len(replicas)))
    client = httpx.AsyncClient(timeout=timeout, limits=httpx.Limits(max_connections=256))

    async def forward(request: Request) -> Response:
        body = await request.body()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROPPED}
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        first = next(turn)
        for offset in range(len(replicas)):
            base = replicas[(first + offset) % len(replicas)]
            try:
                answer = await client.request(
                    request.method, base + path, content=body, headers=headers
                )
            except (httpx.ConnectError, httpx.RemoteProtocolError):
                continue  # this replica is down (or went down mid-request): the next one
            kept = {k: v for k, v in answer.headers.items() if k.lower() not in _DROPPED}
            kept.pop("content-encoding", None)
            return Response(answer.content, status_code=answer.status_code, headers=kept)
        return JSONResponse({"error": "no relay replica is reachable"}, status_code=502)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await client.aclose()

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
    return Starlette(routes=[Route("/{path:path}", forward, methods=methods)], lifespan=lifespan)
