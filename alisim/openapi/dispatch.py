"""Turns an HTTP request into a verified OpenAPI call and its JSON answer.

The ACS3 style carries the action in `x-acs-action`/`x-acs-version` headers; the RPC style
carries `Action`/`Version` among the parameters. Parameters come from the query and from a
form body. The route (from the services' tables, `cloud.router`) says how `RegionId` is
checked; the check runs here, before the handler. Every failure becomes Alibaba's error JSON,
never a 500.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from alisim import exposure, ids
from alisim.bodies import BodyTooLarge, read_bounded
from alisim.errors import ApiError, missing_parameter
from alisim.openapi import signing
from alisim.openapi.params import Params

if TYPE_CHECKING:
    from alisim.cloud import Cloud

log = logging.getLogger("alisim.openapi")


# Marks of an OpenAPI call that no OSS request carries (OSS's own query names are lower-case
# or `OSSAccessKeyId`, `Signature`, `Expires`; its headers `x-oss-*`).
_OPENAPI_HEADERS = (
    "x-acs-action",
    "x-acs-version",
    "x-acs-signature-nonce",
    "x-acs-content-sha256",
)
_OPENAPI_QUERY = ("Action", "Version", "SignatureMethod", "SignatureNonce", "SignatureVersion")


def is_openapi_request(request: Request) -> bool:
    """An OpenAPI call, with or without its action: a call that names none is answered
    `MissingParameter` in OpenAPI's JSON, not handed to OSS to fail in OSS's XML."""
    headers = request.headers
    if any(name in headers for name in _OPENAPI_HEADERS):
        return True
    if headers.get("authorization", "").startswith(signing.ACS3):
        return True
    if any(name in request.query_params for name in _OPENAPI_QUERY):
        return True
    # OSS has no POST on the service root; the RPC style posts its form there.
    return (
        request.method == "POST"
        and request.url.path == "/"
        and headers.get("content-type", "").startswith("application/x-www-form-urlencoded")
    )


def error_response(error: ApiError, request_id: str) -> Response:
    body = {
        "Code": error.code,
        "Message": error.message,
        "RequestId": request_id,
        "HostId": "alisim",
        "Recommend": "https://api.aliyun.com/troubleshoot?q=" + error.code,
    }
    headers = {"x-acs-request-id": request_id}
    if error.retry_after_ms:
        headers["x-acs-retry-after"] = str(error.retry_after_ms)
    return Response(
        json.dumps(body), status_code=error.status, headers=headers, media_type="application/json"
    )


def _peer(request: Request) -> str | None:
    return request.client.host if request.client else None


async def _signed_request(request: Request, limit: int) -> signing.SignedRequest:
    try:
        body = await read_bounded(request, limit)
    except BodyTooLarge:
        raise ApiError(
            "InvalidParameter.BodyTooLarge",
            f"The request body exceeds {limit} bytes (alisim setting openapi_max_body_bytes).",
            413,
        ) from None
    form: list[tuple[str, str]] = []
    content_type = request.headers.get("content-type", "")
    if body and content_type.startswith("application/x-www-form-urlencoded"):
        try:
            form = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            raise ApiError("InvalidParameter", "The form body is not UTF-8.") from None
    headers: dict[str, list[str]] = {}
    for name, value in request.headers.raw:
        headers.setdefault(name.decode("latin-1").lower(), []).append(value.decode("latin-1"))
    query = parse_qsl(request.url.query, keep_blank_values=True)
    return signing.SignedRequest(
        method=request.method,
        path=request.url.path,
        query=query,
        headers=headers,
        body=body,
        form=form,
    )


async def handle(cloud: Cloud, request: Request) -> Response:
    request_id = ids.request_id()
    try:
        signed = await _signed_request(request, cloud.settings.openapi_max_body_bytes)
        params = dict(signed.query)
        params.update(signed.form)
        authorization = request.headers.get("authorization", "")
        action = request.headers.get("x-acs-action") or params.get("Action", "")
        version = request.headers.get("x-acs-version") or params.get("Version", "")
        if not action:
            raise missing_parameter("Action")
        keys = cloud.credentials.for_peer(exposure.is_loopback_address(_peer(request)))
        if authorization.startswith(signing.ACS3):
            caller = signing.verify_acs3(signed, authorization, keys, cloud.nonces)
        elif "Signature" in params:
            caller = signing.verify_rpc(signed, params, keys, cloud.nonces)
            # The RPC signature covers the parameters, not the x-acs-* headers the SDK adds.
            action = params.get("Action") or action
            version = params.get("Version") or version
        else:
            raise ApiError(
                "IncompleteSignature",
                "The request is not signed: send an ACS3-HMAC-SHA256 Authorization header or "
                "the RPC Signature parameters.",
                400,
            )
        product = cloud.router.product(version)
        if product is None:
            raise ApiError(
                "InvalidVersion", f"Specified API version {version!r} is not valid.", 400
            )
        cloud.count_call(product.name, action)
        route = cloud.router.lookup(version, action)
        if route is None:
            raise ApiError(
                "InvalidAction.NotFound",
                f"Specified api {action!r} is not found for {product.name} {version}.",
                404,
            )
        cloud.faults.check_api(product.name, action)
        call = Params(
            params, caller=caller, request_id=request_id, host=request.headers.get("host", "")
        )
        route.check_region(call, cloud.settings.region)
        result = await route.handler(cloud, call)
    except ApiError as error:
        log.info("%s %s -> %s", request.method, request.url.path, error.code)
        return error_response(error, request_id)
    except ClientDisconnect:
        log.info(
            "%s %s -> the client left before sending its body", request.method, request.url.path
        )
        return Response(status_code=400)
    except Exception:
        log.exception("unexpected error serving an OpenAPI request")
        return error_response(
            ApiError("InternalError", "alisim failed to serve the request; see its log.", 500),
            request_id,
        )
    result = {"RequestId": request_id, **result}
    return Response(
        json.dumps(result),
        media_type="application/json",
        headers={"x-acs-request-id": request_id},
    )
