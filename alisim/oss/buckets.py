"""Service- and bucket-level operations: buckets themselves, listings, batch delete."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote
from xml.etree import ElementTree

from starlette.responses import Response

from alisim.errors import OssError
from alisim.oss import xml
from alisim.oss.listing import list_page
from alisim.oss.request import OssRequest, as_count, check_content_md5
from alisim.oss.responses import xml_response
from alisim.oss.store import Bucket, OssObject

if TYPE_CHECKING:
    from alisim.cloud import Cloud

_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
_MAX_DELETE = 1000


def invalid_argument(message: str, name: str, value: str) -> OssError:
    return OssError("InvalidArgument", message, 400, ArgumentName=name, ArgumentValue=value)


def _owner(cloud: Cloud) -> list[xml.Node]:
    account = cloud.settings.account_id
    return [("ID", account), ("DisplayName", account)]


def _endpoints(region: str) -> list[xml.Node]:
    return [
        ("ExtranetEndpoint", f"oss-{region}.aliyuncs.com"),
        ("IntranetEndpoint", f"oss-{region}-internal.aliyuncs.com"),
    ]


def _max_keys(req: OssRequest, default: int = 100) -> int:
    raw = req.params.get("max-keys", "")
    if raw == "":
        return default
    value = as_count(raw)
    if value is None or not 0 < value <= 1000:
        raise invalid_argument("max-keys must be an integer between 1 and 1000.", "max-keys", raw)
    return value


def _url_encoded(req: OssRequest) -> bool:
    encoding = req.params.get("encoding-type", "")
    if encoding not in ("", "url"):
        raise invalid_argument("The encoding-type must be url.", "encoding-type", encoding)
    return encoding == "url"


# --- service ----------------------------------------------------------------------------


async def list_buckets(cloud: Cloud, req: OssRequest) -> Response:
    prefix = req.params.get("prefix", "")
    marker = req.params.get("marker", "")
    max_keys = _max_keys(req)
    names = sorted(n for n in cloud.oss.buckets if n.startswith(prefix) and n > marker)
    page, truncated = names[:max_keys], len(names) > max_keys
    paged = any(name in req.params for name in ("prefix", "marker", "max-keys"))
    buckets: list[xml.Node] = []
    for name in page:
        bucket = cloud.oss.buckets[name]
        buckets.append(
            (
                "Bucket",
                [
                    ("CreationDate", xml.iso8601(bucket.created)),
                    *_endpoints(bucket.region),
                    ("Location", f"oss-{bucket.region}"),
                    ("Name", name),
                    ("Region", bucket.region),
                    ("StorageClass", "Standard"),
                ],
            )
        )
    body = xml.document(
        "ListAllMyBucketsResult",
        [
            ("Prefix", prefix if paged else None),
            ("Marker", marker if paged else None),
            ("MaxKeys", max_keys if paged else None),
            ("IsTruncated", truncated if paged else None),
            ("NextMarker", page[-1] if truncated else None),
            ("Owner", _owner(cloud)),
            ("Buckets", buckets),
        ],
    )
    return xml_response(req, body)


# --- bucket -----------------------------------------------------------------------------


async def put_bucket(cloud: Cloud, req: OssRequest) -> Response:
    if not _BUCKET_NAME.match(req.bucket):
        raise OssError(
            "InvalidBucketName", "The specified bucket is not valid.", 400, BucketName=req.bucket
        )
    if req.body.strip():
        try:
            ElementTree.fromstring(req.body)
        except ElementTree.ParseError:
            raise OssError(
                "MalformedXML", "The XML you provided was not well-formed.", 400
            ) from None
    cloud.oss.create_bucket(req.bucket)
    return xml_response(req, b"", headers={"location": f"/{req.bucket}"})


async def delete_bucket(cloud: Cloud, req: OssRequest) -> Response:
    cloud.oss.delete_bucket(req.bucket)
    return xml_response(req, b"", 204)


async def get_bucket_info(cloud: Cloud, req: OssRequest) -> Response:
    bucket = cloud.oss.bucket(req.bucket)
    body = xml.document(
        "BucketInfo",
        [
            (
                "Bucket",
                [
                    ("AccessMonitor", "Disabled"),
                    ("CreationDate", xml.iso8601(bucket.created)),
                    *_endpoints(bucket.region),
                    ("Location", f"oss-{bucket.region}"),
                    ("StorageClass", "Standard"),
                    ("TransferAcceleration", "Disabled"),
                    ("CrossRegionReplication", "Disabled"),
                    ("Name", bucket.name),
                    (
                        "Owner",
                        [
                            ("DisplayName", cloud.settings.account_id),
                            ("ID", cloud.settings.account_id),
                        ],
                    ),
                    ("AccessControlList", [("Grant", "private")]),
                    ("DataRedundancyType", "LRS"),
                    ("Comment", ""),
                    ("ServerSideEncryptionRule", [("SSEAlgorithm", "None")]),
                    ("BucketPolicy", [("LogBucket", ""), ("LogPrefix", "")]),
                ],
            )
        ],
    )
    return xml_response(req, body)


async def get_bucket_location(cloud: Cloud, req: OssRequest) -> Response:
    bucket = cloud.oss.bucket(req.bucket)
    return xml_response(req, xml.document("LocationConstraint", f"oss-{bucket.region}"))


async def get_bucket_acl(cloud: Cloud, req: OssRequest) -> Response:
    cloud.oss.bucket(req.bucket)
    body = xml.document(
        "AccessControlPolicy",
        [
            ("Owner", _owner(cloud)),
            ("AccessControlList", [("Grant", "private")]),
        ],
    )
    return xml_response(req, body)


async def get_bucket_stat(cloud: Cloud, req: OssRequest) -> Response:
    bucket = cloud.oss.bucket(req.bucket)
    size = sum(obj.size for obj in bucket.objects.values())
    body = xml.document(
        "BucketStat",
        [
            ("Storage", size),
            ("ObjectCount", len(bucket.objects)),
            ("MultipartUploadCount", 0),
            ("LiveChannelCount", 0),
            ("StandardStorage", size),
            ("StandardObjectCount", len(bucket.objects)),
        ],
    )
    return xml_response(req, body)


# --- listings ---------------------------------------------------------------------------


def _encoder(url: bool) -> Callable[[str], str]:
    def encode(value: str) -> str:
        return quote(value, safe="") if url else value

    return encode


def _contents(
    cloud: Cloud, obj: OssObject, encode: Callable[[str], str], with_owner: bool
) -> xml.Node:
    return (
        "Contents",
        [
            ("Key", encode(obj.key)),
            ("LastModified", xml.iso8601(obj.last_modified)),
            ("ETag", obj.etag),
            ("Type", "Normal"),
            ("Size", obj.size),
            ("StorageClass", "Standard"),
            ("Owner", _owner(cloud) if with_owner else None),
        ],
    )


def _listing_args(req: OssRequest) -> tuple[str, str, int, bool]:
    delimiter = req.params.get("delimiter", "")
    if len(delimiter.encode("utf-8")) > 1:
        raise invalid_argument("The delimiter must be one character.", "delimiter", delimiter)
    return req.params.get("prefix", ""), delimiter, _max_keys(req), _url_encoded(req)


async def list_objects(cloud: Cloud, req: OssRequest) -> Response:
    bucket = cloud.oss.bucket(req.bucket)
    prefix, delimiter, max_keys, url = _listing_args(req)
    marker = req.params.get("marker", "")
    page = list_page(bucket, prefix, delimiter, marker, max_keys)
    encode = _encoder(url)
    body = xml.document(
        "ListBucketResult",
        [
            ("Name", bucket.name),
            ("Prefix", encode(prefix)),
            ("Marker", encode(marker)),
            ("MaxKeys", max_keys),
            ("Delimiter", encode(delimiter)),
            ("EncodingType", "url" if url else None),
            ("IsTruncated", page.truncated),
            ("NextMarker", encode(page.next_marker) if page.truncated else None),
            *(_contents(cloud, obj, encode, True) for obj in page.objects),
            *(("CommonPrefixes", [("Prefix", encode(p))]) for p in page.prefixes),
        ],
    )
    return xml_response(req, body)


def _token(marker: str) -> str:
    return base64.urlsafe_b64encode(marker.encode("utf-8")).decode("ascii").rstrip("=")


def _untoken(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("utf-8")
    except (binascii.Error, ValueError):
        raise invalid_argument(
            "The continuation token is not valid.", "continuation-token", token
        ) from None


async def list_objects_v2(cloud: Cloud, req: OssRequest) -> Response:
    bucket = cloud.oss.bucket(req.bucket)
    prefix, delimiter, max_keys, url = _listing_args(req)
    start_after = req.params.get("start-after", "")
    token = req.params.get("continuation-token", "")
    marker = _untoken(token) if token else start_after
    fetch_owner = req.params.get("fetch-owner", "false").lower() == "true"
    page = list_page(bucket, prefix, delimiter, max(marker, start_after), max_keys)
    encode = _encoder(url)
    body = xml.document(
        "ListBucketResult",
        [
            ("Name", bucket.name),
            ("Prefix", encode(prefix)),
            ("StartAfter", encode(start_after) if start_after else None),
            ("ContinuationToken", token or None),
            ("MaxKeys", max_keys),
            ("Delimiter", encode(delimiter)),
            ("EncodingType", "url" if url else None),
            ("IsTruncated", page.truncated),
            ("NextContinuationToken", _token(page.next_marker) if page.truncated else None),
            *(_contents(cloud, obj, encode, fetch_owner) for obj in page.objects),
            *(("CommonPrefixes", [("Prefix", encode(p))]) for p in page.prefixes),
            ("KeyCount", page.count),
        ],
    )
    return xml_response(req, body)


# --- batch delete -----------------------------------------------------------------------


def _malformed() -> OssError:
    return OssError(
        "MalformedXML",
        "The XML you provided was not well-formed or did not "
        "validate against our published schema.",
        400,
    )


def _delete_keys(req: OssRequest, url: bool) -> tuple[list[str], bool]:
    try:
        root = ElementTree.fromstring(req.body)
    except ElementTree.ParseError:
        raise _malformed() from None
    if root.tag != "Delete":
        raise _malformed()
    quiet = (root.findtext("Quiet") or "false").strip().lower() == "true"
    keys = []
    for node in root.findall("Object"):
        key = node.findtext("Key")
        if not key:
            raise _malformed()
        keys.append(unquote(key, errors="strict") if url else key)
    if not keys or len(keys) > _MAX_DELETE:
        raise _malformed()
    return keys, quiet


async def delete_multiple_objects(cloud: Cloud, req: OssRequest) -> Response:
    bucket: Bucket = cloud.oss.bucket(req.bucket)
    check_content_md5(req, required=True)
    url = _url_encoded(req)
    try:
        keys, quiet = _delete_keys(req, url)
    except UnicodeDecodeError:
        raise _malformed() from None
    encode = _encoder(url)
    for key in keys:
        cloud.oss.delete_object(bucket.name, key)
    deleted: list[xml.Node] = [] if quiet else [("Deleted", [("Key", encode(key))]) for key in keys]
    body = xml.document("DeleteResult", [("EncodingType", "url" if url else None), *deleted])
    return xml_response(req, body)
