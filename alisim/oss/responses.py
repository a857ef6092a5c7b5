"""Responses in OSS's shape: a request id on every answer, XML errors, HEAD errors in a header."""

from __future__ import annotations

import base64
from collections.abc import Mapping

from starlette.responses import Response

from alisim.errors import OssError
from alisim.oss import xml
from alisim.oss.request import OssRequest

XML_TYPE = "application/xml"


def host_id(req: OssRequest, region: str) -> str:
    suffix = f"oss-{region}.aliyuncs.com"
    return f"{req.bucket}.{suffix}" if req.bucket else suffix


def respond(
    req: OssRequest,
    status: int = 200,
    body: bytes = b"",
    headers: Mapping[str, str] | None = None,
    media_type: str | None = None,
) -> Response:
    out = {"x-oss-request-id": req.request_id}
    if headers:
        out.update(headers)
    if req.method == "HEAD":
        # No body on HEAD, but the length the GET would have had.
        out.setdefault("content-length", str(len(body)))
        body = b""
    return Response(body, status_code=status, headers=out, media_type=media_type)


def xml_response(
    req: OssRequest, body: bytes, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return respond(req, status, body, headers, XML_TYPE)


def error_response(req: OssRequest, error: OssError, region: str) -> Response:
    body = xml.error(error.code, error.message, req.request_id, host_id(req, region), error.details)
    headers = {"content-type": XML_TYPE}
    if req.method == "HEAD":
        # The SDKs read the code from here when a HEAD error has no body.
        headers["x-oss-err"] = base64.b64encode(body).decode("ascii")
        headers["content-length"] = "0"
        return Response(
            b"", status_code=error.status, headers={"x-oss-request-id": req.request_id, **headers}
        )
    return Response(
        body, status_code=error.status, headers={"x-oss-request-id": req.request_id, **headers}
    )
