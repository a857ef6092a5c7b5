"""Placeholder: replaced by the OSS implementation."""

from starlette.requests import Request
from starlette.responses import Response


async def handle(cloud, request: Request) -> Response:  # type: ignore[no-untyped-def]
    return Response("not implemented", status_code=501)
