"""An OSS request as the signature and the operations see it: bucket, key, query, headers, body.

Path-style only. oss2 percent-encodes the whole key (`/` too) and oss-v2 leaves `/` alone, so
the key is taken from the raw path after one percent-decoding, never from a decoded path that
a framework may have normalised.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field
from urllib.parse import unquote_plus, unquote_to_bytes

from starlette.requests import Request

from alisim.bodies import BodyTooLarge, read_bounded
from alisim.errors import OssError


@dataclass
class OssRequest:
    method: str
    bucket: str
    key: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    """Lower-case names; values as latin-1 text so their raw bytes survive (`raw_header`)."""
    request_id: str
    body: bytes = b""
    params: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, value in self.query:
            self.params.setdefault(name, value)

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name, default)

    def raw_header(self, name: str) -> bytes:
        return self.headers.get(name, "").encode("latin-1")

    @property
    def resource(self) -> str:
        if not self.bucket:
            return "/"
        return f"/{self.bucket}/{self.key}"


def _bad_uri(detail: str) -> OssError:
    return OssError("InvalidURI", f"Could not parse the specified URI: {detail}", 400)


def parse_path(raw_path: bytes) -> tuple[str, str]:
    """`(bucket, key)` from a path-style request path; both empty for the service."""
    try:
        path = unquote_to_bytes(raw_path).decode("utf-8")
    except UnicodeDecodeError:
        raise _bad_uri("the path is not UTF-8 after percent-decoding.") from None
    if not path.startswith("/"):
        raise _bad_uri("the path must start with '/'.")
    bucket, _, key = path[1:].partition("/")
    if key and not bucket:
        raise OssError(
            "InvalidBucketName", "The specified bucket is not valid.", 400, BucketName=""
        )
    return bucket, key


def parse_query(raw_query: bytes) -> list[tuple[str, str]]:
    """Decoded `(name, value)` pairs in order; a bare name has the value `""`."""
    try:
        text = raw_query.decode("ascii")
    except UnicodeDecodeError:
        raise _bad_uri("the query string is not percent-encoded ASCII.") from None
    pairs = []
    for part in text.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        try:
            pairs.append(
                (unquote_plus(name, errors="strict"), unquote_plus(value, errors="strict"))
            )
        except UnicodeDecodeError:
            raise _bad_uri("a query parameter is not UTF-8 after percent-decoding.") from None
    return pairs


def as_count(text: str) -> int | None:
    """A non-negative decimal that fits 64 bits, or None: `isdigit` alone admits `²`."""
    if text.isascii() and text.isdigit() and len(text) <= 19:
        return int(text)
    return None


def parse_headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in raw:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]},{text}" if key in headers else text
    return headers


def entity_too_large(limit: int) -> OssError:
    return OssError(
        "EntityTooLarge",
        "Your proposed upload exceeds the maximum allowed size "
        "(alisim setting oss_max_object_bytes).",
        400,
        MaxSizeAllowed=str(limit),
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused as soon as it is known to exceed `limit` (objects live in memory)."""
    try:
        return await read_bounded(request, limit)
    except BodyTooLarge:
        raise entity_too_large(limit) from None


def parse(request: Request, request_id: str) -> OssRequest:
    raw_path = request.scope.get("raw_path") or request.scope["path"].encode("utf-8")
    bucket, key = parse_path(raw_path)
    headers = parse_headers(request.headers.raw)
    return OssRequest(
        method=request.method.upper(),
        bucket=bucket,
        key=key,
        query=parse_query(request.scope.get("query_string", b"")),
        headers=headers,
        request_id=request_id,
    )


def check_content_md5(req: OssRequest, required: bool, actual: bytes | None = None) -> None:
    """`actual`: the body's MD5 when the caller has it already (computed off the loop)."""
    given = req.header("content-md5")
    if not given:
        if required:
            raise OssError(
                "InvalidRequest", "Missing required header for this request: Content-MD5.", 400
            )
        return
    try:
        digest = base64.b64decode(given, validate=True)
    except (binascii.Error, ValueError):
        digest = b""
    if len(digest) != 16:
        raise OssError(
            "InvalidDigest",
            "The Content-MD5 you specified was invalid.",
            400,
            **{"Content-MD5": given},
        )
    if digest != (actual if actual is not None else hashlib.md5(req.body).digest()):
        raise OssError(
            "InvalidDigest",
            "The Content-MD5 you specified did not match what was received.",
            400,
            **{"Content-MD5": given},
        )
