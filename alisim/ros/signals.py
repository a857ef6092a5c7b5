"""The wait-condition signal URL: `POST /_ros/waitcondition?stackname=&stackid=&resource=
&signature=` with a JSON body `{"status": "SUCCESS"}` (and optionally `id`, `data`,
`reason`; keys in any case, as Alibaba's own example sends `"Data"`), as a handle's `CurlCli`
sends it. The signature is the handle's own random token,
compared in constant time; bodies are bounded (64 KiB).
"""

from __future__ import annotations

import hmac
import json
from typing import TYPE_CHECKING

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from alisim.bodies import BodyTooLarge, read_bounded
from alisim.ros.resources.wait import SIGNAL_PATH, BadSignal, Handle

if TYPE_CHECKING:
    from alisim.cloud import Cloud

MAX_SIGNAL_BYTES = 64 * 1024


def _error(code: str, message: str, status: int) -> Response:
    return JSONResponse({"Code": code, "Message": message}, status_code=status)


async def signal(cloud: Cloud, request: Request) -> Response:
    if request.url.path.rstrip("/") != SIGNAL_PATH:
        return _error("NotFound", f"No such path; signals go to {SIGNAL_PATH}.", 404)
    if request.method != "POST":
        return _error("MethodNotAllowed", "Send the signal with POST.", 405)
    query = request.query_params
    stack = cloud.ros.stacks.get(query.get("stackid", ""))
    resource = stack.resources.get(query.get("resource", "")) if stack else None
    handle = resource.state if resource is not None else None
    if stack is None or not isinstance(handle, Handle):
        return _error("ResourceNotFound", "No wait condition handle answers this URL.", 404)
    given = query.get("signature", "")
    if not hmac.compare_digest(given.encode("utf-8", "replace"), handle.token.encode()):
        return _error("SignatureDoesNotMatch", "The signature of the URL is not valid.", 403)
    try:
        raw = await read_bounded(request, MAX_SIGNAL_BYTES)
        body = json.loads(raw or b"null")
    except BodyTooLarge:
        return _error("InvalidParameter", f"A signal is at most {MAX_SIGNAL_BYTES} bytes.", 413)
    except ClientDisconnect:
        return Response(status_code=400)
    except ValueError:
        return _error("InvalidParameter", 'The body must be JSON, e.g. {"status": "SUCCESS"}.', 400)
    if not isinstance(body, dict):
        return _error(
            "InvalidParameter", 'The body must be a JSON object: {"status": "SUCCESS"}.', 400
        )
    fields = {str(k).lower(): v for k, v in body.items()}
    try:
        handle.signal(
            fields.get("status"), fields.get("id"), fields.get("data", ""), fields.get("reason", "")
        )
    except BadSignal as exc:
        return _error("InvalidParameter", f"The signal is not valid: {exc}.", 400)
    return JSONResponse({})


ROUTES = {SIGNAL_PATH: signal}
