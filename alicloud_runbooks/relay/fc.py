"""The relay as an Alibaba Cloud Function Compute (3.0) HTTP-trigger handler.

It runs the very same ASGI app for each invocation, so authentication, validation, mapping
and the acknowledged write to Prefect behave exactly as in the long-running service.
Configure it with the same environment variables (`RUNBOOKS_RELAY_TOKEN`, `PREFECT_API_URL`,
`PREFECT_API_KEY`, …). Handler: `alicloud_runbooks.relay.fc.handler`.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any
from urllib.parse import urlencode

import httpx

from alicloud_runbooks.relay.app import create_app


def _event_dict(event: Any) -> dict[str, Any]:
    if isinstance(event, bytes | bytearray):
        event = event.decode("utf-8")
    if isinstance(event, str):
        event = json.loads(event)
    if not isinstance(event, dict):
        raise ValueError("the Function Compute event is not a JSON object")
    return event


async def _call(event: dict[str, Any]) -> dict[str, Any]:
    # One app per invocation: its HTTP client belongs to this invocation's event loop.
    app = create_app()
    body = event.get("body") or ""
    raw = base64.b64decode(body) if event.get("isBase64Encoded") else str(body).encode()
    query = event.get("queryParameters") or {}
    path = event.get("rawPath") or "/eventbridge"
    method = (event.get("requestContext", {}).get("http", {}).get("method") or "POST").upper()
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://relay") as client:
            response = await client.request(
                method,
                f"{path}?{urlencode(query)}" if query else path,
                headers=event.get("headers") or {},
                content=raw,
            )
    finally:
        await app.state.relay.sink.close()
    return {
        "statusCode": response.status_code,
        "headers": {"Content-Type": response.headers.get("content-type", "application/json")},
        "isBase64Encoded": False,
        "body": response.text,
    }


def handler(event: Any, context: Any = None) -> dict[str, Any]:
    try:
        parsed = _event_dict(event)
    except ValueError as exc:
        return {
            "statusCode": 400,
            "headers": {"Content-Type": "application/json"},
            "body": json.dumps({"error": str(exc)}),
        }
    return asyncio.run(_call(parsed))
