"""Request bodies read with a size limit, so no client can make alisim buffer without bound.

A declared `Content-Length` over the limit is refused before a byte is read; a streamed
(chunked) body is refused as soon as it passes the limit, without reading the rest.
"""

from __future__ import annotations

from starlette.requests import Request


class BodyTooLarge(Exception):
    """The body exceeds `limit` bytes; each API answers it in its own error shape."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body exceeds {limit} bytes")
        self.limit = limit


def declared_length(request: Request) -> int | None:
    """The declared Content-Length, or None when the body is streamed or the header is odd."""
    text = request.headers.get("content-length", "")
    if text.isascii() and text.isdigit() and len(text) <= 19:
        return int(text)
    return None


async def read_bounded(request: Request, limit: int) -> bytes:
    declared = declared_length(request)
    if declared is not None and declared > limit:
        raise BodyTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)
