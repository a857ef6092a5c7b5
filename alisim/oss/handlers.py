"""The OSS entry point: parse, route, count, authenticate, run; every failure is OSS's XML error.

Routing is path-style: `/` is the service, `/bucket` or `/bucket/` the bucket, `/bucket/key`
an object; the method and the sub-resource in the query pick the operation.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from alisim import exposure
from alisim.errors import ApiError, OssError
from alisim.oss import buckets, objects
from alisim.oss.request import OssRequest, parse, read_body
from alisim.oss.responses import error_response
from alisim.oss.signing import SUBRESOURCES, authenticate, is_anonymous

if TYPE_CHECKING:
    from alisim.cloud import Cloud

log = logging.getLogger("alisim.oss")

Operation = Callable[["Cloud", OssRequest], Awaitable[Response]]

# Sub-resources that qualify a request rather than name another operation.
_QUALIFIERS = frozenset(
    {"security-token", "continuation-token", "x-oss-traffic-limit", "x-oss-request-payer"}
    | {name for name in SUBRESOURCES if name.startswith("response-")}
)

_SERVICE: dict[tuple[str, str], tuple[str, Operation]] = {
    ("GET", ""): ("ListBuckets", buckets.list_buckets),
}
_BUCKET: dict[tuple[str, str], tuple[str, Operation]] = {
    ("PUT", ""): ("PutBucket", buckets.put_bucket),
    ("DELETE", ""): ("DeleteBucket", buckets.delete_bucket),
    ("GET", ""): ("ListObjects", buckets.list_objects),
    ("GET", "bucketInfo"): ("GetBucketInfo", buckets.get_bucket_info),
    ("GET", "location"): ("GetBucketLocation", buckets.get_bucket_location),
    ("GET", "acl"): ("GetBucketAcl", buckets.get_bucket_acl),
    ("GET", "stat"): ("GetBucketStat", buckets.get_bucket_stat),
    ("POST", "delete"): ("DeleteMultipleObjects", buckets.delete_multiple_objects),
}
_OBJECT: dict[tuple[str, str], tuple[str, Operation]] = {
    ("PUT", ""): ("PutObject", objects.put_object),
    ("GET", ""): ("GetObject", objects.get_object),
    ("HEAD", ""): ("HeadObject", objects.head_object),
    ("DELETE", ""): ("DeleteObject", objects.delete_object),
    ("GET", "objectMeta"): ("GetObjectMeta", objects.get_object_meta),
    ("HEAD", "objectMeta"): ("GetObjectMeta", objects.get_object_meta),
}
_LIST_V2: tuple[str, Operation] = ("ListObjectsV2", buckets.list_objects_v2)


def _new_request_id() -> str:
    return secrets.token_hex(12).upper()


def route(req: OssRequest) -> tuple[str, Operation]:
    """The action name and the operation; NotImplemented/MethodNotAllowed otherwise."""
    if not req.bucket:
        table, kind = _SERVICE, "Service"
    elif not req.key:
        table, kind = _BUCKET, "Bucket"
    else:
        table, kind = _OBJECT, "Object"
    sub = "&".join(sorted(name for name in req.params if name in SUBRESOURCES - _QUALIFIERS))
    found = table.get((req.method, sub))
    if found is None:
        if any(sub_name == sub for _, sub_name in table):
            raise OssError(
                "MethodNotAllowed",
                "The specified method is not allowed against this resource.",
                405,
                Method=req.method,
                ResourceType=kind,
            )
        raise OssError(
            "NotImplemented",
            f"alisim does not implement {req.method} {kind} with sub-resource {sub!r}.",
            501,
        )
    if found[0] == "ListObjects" and req.params.get("list-type") == "2":
        return _LIST_V2
    return found


async def _serve(cloud: Cloud, request: Request, req: OssRequest) -> Response:
    try:
        action, operation = route(req)
    except OssError:
        cloud.count_call("Oss", "Unknown")
        raise
    cloud.count_call("Oss", action)
    req.body = await read_body(request, cloud.settings.oss_max_object_bytes)
    if (
        req.bucket
        and action != "PutBucket"
        and is_anonymous(req)
        and req.bucket not in cloud.oss.buckets
    ):
        # OSS looks the bucket up before it refuses an anonymous caller.
        cloud.oss.bucket(req.bucket)
    peer = request.client.host if request.client else None
    authenticate(
        req,
        cloud.credentials.for_peer(exposure.is_loopback_address(peer)),
        cloud.settings.region,
        cloud.settings.signature_window_seconds,
    )
    try:
        cloud.faults.check_api("Oss", action)
    except ApiError as fault:
        raise OssError(fault.code, fault.message, fault.status) from None
    return await operation(cloud, req)


async def handle(cloud: Cloud, request: Request) -> Response:
    req = OssRequest(request.method.upper(), "", "", [], {}, _new_request_id())
    try:
        req = parse(request, req.request_id)
        return await _serve(cloud, request, req)
    except OssError as error:
        log.info("%s %s -> %s", request.method, request.url.path, error.code)
        return error_response(req, error, cloud.settings.region)
    except ClientDisconnect:
        log.info(
            "%s %s -> the client left before sending its body", request.method, request.url.path
        )
        return Response(status_code=400)
    except Exception:
        log.exception("unexpected error serving an OSS request")
        error = OssError("InternalError", "alisim failed to serve the request; see its log.", 500)
        return error_response(req, error, cloud.settings.region)
