"""Object-level operations: put, copy, get (ranges, conditions), head, meta, delete."""

from __future__ import annotations

import mimetypes
import re
from email.utils import formatdate, parsedate_to_datetime
from typing import TYPE_CHECKING
from urllib.parse import unquote

from starlette.responses import Response

from alisim.errors import OssError
from alisim.oss import xml
from alisim.oss.request import OssRequest, check_content_md5
from alisim.oss.responses import respond, xml_response
from alisim.oss.store import OssObject

if TYPE_CHECKING:
    from alisim.cloud import Cloud

META_PREFIX = "x-oss-meta-"
_STORED_HEADERS = (
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
    "expires",
)
_OVERRIDES = {f"response-{name}": name for name in ("content-type", *_STORED_HEADERS)}
_RANGE = re.compile(r"bytes=(\d{0,19})-(\d{0,19})", re.ASCII | re.IGNORECASE)


def _check_key(key: str) -> None:
    if len(key.encode("utf-8")) > 1023:
        raise OssError(
            "InvalidObjectName", "The length of the object name must be less than 1024 bytes.", 400
        )
    if key.startswith(("/", "\\")):
        raise OssError("InvalidObjectName", "The object name must not start with '/' or '\\'.", 400)


def _no_such_key(key: str) -> OssError:
    return OssError("NoSuchKey", "The specified key does not exist.", 404, Key=key)


def _get(cloud: Cloud, req: OssRequest) -> OssObject:
    bucket = cloud.oss.bucket(req.bucket)
    obj = bucket.objects.get(req.key)
    if obj is None:
        raise _no_such_key(req.key)
    return obj


def _http_date(timestamp: float) -> str:
    return formatdate(timestamp, usegmt=True)


def object_headers(obj: OssObject) -> dict[str, str]:
    headers = {
        "content-type": obj.content_type,
        "etag": obj.etag,
        "last-modified": _http_date(obj.last_modified),
        "accept-ranges": "bytes",
        "x-oss-object-type": "Normal",
        "x-oss-storage-class": "Standard",
        "x-oss-hash-crc64ecma": str(obj.crc64),
        "content-md5": obj.content_md5,
    }
    headers.update(obj.http_headers)
    headers.update({META_PREFIX + name: value for name, value in obj.metadata.items()})
    return headers


def _written(obj: OssObject) -> dict[str, str]:
    return {
        "etag": obj.etag,
        "content-md5": obj.content_md5,
        "x-oss-hash-crc64ecma": str(obj.crc64),
    }


def _request_metadata(req: OssRequest) -> dict[str, str]:
    return {
        name[len(META_PREFIX) :]: value
        for name, value in req.headers.items()
        if name.startswith(META_PREFIX) and len(name) > len(META_PREFIX)
    }


def _check_overwrite(cloud: Cloud, req: OssRequest) -> None:
    if req.header("x-oss-forbid-overwrite").lower() == "true" and (
        req.key in cloud.oss.bucket(req.bucket).objects
    ):
        raise OssError(
            "FileAlreadyExists",
            "The object you specified already exists and can not be overwritten.",
            409,
        )


async def put_object(cloud: Cloud, req: OssRequest) -> Response:
    cloud.oss.bucket(req.bucket)
    _check_key(req.key)
    if req.header("x-oss-copy-source"):
        return await _copy_object(cloud, req)
    _check_overwrite(cloud, req)
    content_type = (
        req.header("content-type") or mimetypes.guess_type(req.key)[0] or "application/octet-stream"
    )
    obj = OssObject(
        req.key,
        req.body,
        content_type,
        _request_metadata(req),
        http_headers={name: req.headers[name] for name in _STORED_HEADERS if name in req.headers},
    )
    await obj.hash()
    check_content_md5(req, required=False, actual=obj.md5_digest)
    # Checked again: another request may have written the key while this one was hashed.
    _check_overwrite(cloud, req)
    cloud.oss.store_object(req.bucket, obj)
    return respond(req, headers=_written(obj))


def _copy_source(req: OssRequest) -> tuple[str, str]:
    source = req.header("x-oss-copy-source")
    try:
        decoded = unquote(source, errors="strict")
    except UnicodeDecodeError:
        decoded = ""
    bucket, _, key = decoded.removeprefix("/").partition("/")
    if not bucket or not key:
        raise OssError(
            "InvalidArgument",
            "The x-oss-copy-source header is not /bucket/key.",
            400,
            ArgumentName="x-oss-copy-source",
            ArgumentValue=source,
        )
    return bucket, key


async def _copy_object(cloud: Cloud, req: OssRequest) -> Response:
    bucket, key = _copy_source(req)
    source = cloud.oss.bucket(bucket).objects.get(key)
    if source is None:
        raise _no_such_key(key)
    directive = req.header("x-oss-metadata-directive", "COPY").upper()
    if directive not in ("COPY", "REPLACE"):
        raise OssError(
            "InvalidArgument",
            "x-oss-metadata-directive must be COPY or REPLACE.",
            400,
            ArgumentName="x-oss-metadata-directive",
            ArgumentValue=directive,
        )
    _check_overwrite(cloud, req)
    if directive == "COPY":
        copy = OssObject(
            req.key,
            source.data,
            source.content_type,
            dict(source.metadata),
            http_headers=dict(source.http_headers),
        )
    else:
        copy = OssObject(
            req.key,
            source.data,
            req.header("content-type") or source.content_type,
            _request_metadata(req),
            http_headers={n: req.headers[n] for n in _STORED_HEADERS if n in req.headers},
        )
    copy.share_hashes(source)
    await copy.hash()
    _check_overwrite(cloud, req)
    cloud.oss.store_object(req.bucket, copy)
    body = xml.document(
        "CopyObjectResult", [("ETag", copy.etag), ("LastModified", xml.iso8601(copy.last_modified))]
    )
    return xml_response(req, body, headers={"x-oss-hash-crc64ecma": str(copy.crc64)})


def _unsatisfiable(size: int) -> OssError:
    return OssError(
        "InvalidRange",
        "The requested range cannot be satisfied.",
        416,
        ActualObjectSize=str(size),
        ContentRange=f"bytes */{size}",
    )


def byte_range(header: str, size: int, standard: bool) -> tuple[int, int] | None:
    """Inclusive `(first, last)`, or None for the whole object.

    One `bytes=` range only. By default OSS answers any range outside the object with the
    whole object (200); with `x-oss-range-behavior: standard` it clamps the end and answers
    a start past the end with 416, like RFC 9110.
    """
    match = _RANGE.fullmatch(header.strip().replace(" ", ""))
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first_text, last_text = match.groups()
    if first_text == "":
        suffix = int(last_text)
        if suffix == 0 or size == 0 or (suffix > size and not standard):
            if standard:
                raise _unsatisfiable(size)
            return None
        return max(0, size - suffix), size - 1
    first = int(first_text)
    last = int(last_text) if last_text else size - 1
    if last < first:
        return None
    if first >= size:
        if standard:
            raise _unsatisfiable(size)
        return None
    if last >= size and not standard:
        return None
    return first, min(last, size - 1)


def _parse_time(value: str) -> float | None:
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


def _etag_matches(header: str, obj: OssObject) -> bool:
    tags = {t.strip().strip('"').upper() for t in header.split(",")}
    return "*" in tags or obj.etag.strip('"') in tags


def _preconditions(req: OssRequest, obj: OssObject) -> Response | None:
    """A 304 response, a raised 412, or None when the object should be sent."""
    modified = int(obj.last_modified)
    if_match = req.header("if-match")
    if if_match and not _etag_matches(if_match, obj):
        raise OssError(
            "PreconditionFailed",
            "At least one of the pre-conditions you specified did not hold.",
            412,
            Condition="If-Match",
        )
    unmodified_since = _parse_time(req.header("if-unmodified-since"))
    if not if_match and unmodified_since is not None and modified > unmodified_since:
        raise OssError(
            "PreconditionFailed",
            "At least one of the pre-conditions you specified did not hold.",
            412,
            Condition="If-Unmodified-Since",
        )
    if_none_match = req.header("if-none-match")
    modified_since = _parse_time(req.header("if-modified-since"))
    not_modified = (
        _etag_matches(if_none_match, obj)
        if if_none_match
        else modified_since is not None and modified <= modified_since
    )
    if not_modified:
        return Response(
            status_code=304,
            headers={
                "x-oss-request-id": req.request_id,
                "etag": obj.etag,
                "last-modified": _http_date(obj.last_modified),
            },
        )
    return None


async def get_object(cloud: Cloud, req: OssRequest) -> Response:
    obj = _get(cloud, req)
    not_modified = _preconditions(req, obj)
    if not_modified is not None:
        return not_modified
    headers = object_headers(obj)
    for param, header in _OVERRIDES.items():
        if param in req.params:
            headers[header] = req.params[param]
    standard = req.header("x-oss-range-behavior").lower() == "standard"
    span = byte_range(req.header("range"), obj.size, standard)
    if span is None:
        return respond(req, 200, obj.data, headers)
    first, last = span
    headers["content-range"] = f"bytes {first}-{last}/{obj.size}"
    return respond(req, 206, obj.data[first : last + 1], headers)


async def head_object(cloud: Cloud, req: OssRequest) -> Response:
    obj = _get(cloud, req)
    not_modified = _preconditions(req, obj)
    if not_modified is not None:
        return not_modified
    headers = object_headers(obj)
    headers["content-length"] = str(obj.size)
    return respond(req, 200, b"", headers)


async def get_object_meta(cloud: Cloud, req: OssRequest) -> Response:
    obj = _get(cloud, req)
    headers = {
        "etag": obj.etag,
        "last-modified": _http_date(obj.last_modified),
        "x-oss-last-access-time": _http_date(obj.last_modified),
        "x-oss-hash-crc64ecma": str(obj.crc64),
    }
    if req.method == "HEAD":
        headers["content-length"] = str(obj.size)
    return respond(req, 200, b"", headers)


async def delete_object(cloud: Cloud, req: OssRequest) -> Response:
    cloud.oss.delete_object(req.bucket, req.key)
    return respond(req, 204)
