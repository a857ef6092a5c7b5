"""Verification of OSS signatures V1 (HMAC-SHA1) and V4 (OSS4-HMAC-SHA256), header or URL.

The canonical forms follow the SDKs' own signers (oss2 `auth.py`, alibabacloud-oss-v2
`signer/`). The SDKs sign different V1 sub-resource lists, so V1 tries each list and
accepts a signature over any of them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from calendar import timegm
from collections.abc import Callable, Iterable
from email.utils import parsedate_to_datetime
from urllib.parse import quote

from alisim.credentials import KeyLookup
from alisim.errors import ApiError, OssError
from alisim.oss.request import OssRequest, as_count

V4 = "OSS4-HMAC-SHA256"
_V4_SCOPE_END = "aliyun_v4_request"

# oss2's list (a superset of most) and alibabacloud-oss-v2's list of signed sub-resources.
_SUBRESOURCES_OSS2 = frozenset(
    [
        "response-content-type",
        "response-content-language",
        "response-cache-control",
        "logging",
        "response-content-encoding",
        "acl",
        "uploadId",
        "uploads",
        "partNumber",
        "group",
        "link",
        "delete",
        "website",
        "location",
        "objectInfo",
        "objectMeta",
        "response-expires",
        "response-content-disposition",
        "cors",
        "lifecycle",
        "restore",
        "qos",
        "referer",
        "stat",
        "bucketInfo",
        "append",
        "position",
        "security-token",
        "live",
        "comp",
        "status",
        "vod",
        "startTime",
        "endTime",
        "x-oss-process",
        "symlink",
        "callback",
        "callback-var",
        "tagging",
        "encryption",
        "versions",
        "versioning",
        "versionId",
        "policy",
        "requestPayment",
        "x-oss-traffic-limit",
        "qosInfo",
        "asyncFetch",
        "x-oss-request-payer",
        "sequential",
        "inventory",
        "inventoryId",
        "continuation-token",
        "worm",
        "wormId",
        "wormExtend",
        "replication",
        "replicationLocation",
        "replicationProgress",
        "transferAcceleration",
        "cname",
        "metaQuery",
        "x-oss-ac-source-ip",
        "x-oss-ac-subnet-mask",
        "x-oss-ac-vpc-id",
        "x-oss-ac-forward-allow",
        "resourceGroup",
        "style",
        "styleName",
        "x-oss-async-process",
        "regionList",
        "x-oss-write-get-object-response",
        "bucketArchiveDirectRead",
        "httpsConfig",
        "redundancyTransition",
        "x-oss-target-redundancy-type",
        "x-oss-redundancy-transition-taskid",
        "accessPoint",
        "accessPointPolicy",
        "publicAccessBlock",
        "x-oss-access-point-name",
        "requesterQosInfo",
        "qosRequester",
        "resourcePoolInfo",
        "resourcePool",
        "resourcePoolBuckets",
    ]
)
_SUBRESOURCES_V2SDK = frozenset(
    [
        "acl",
        "bucketInfo",
        "location",
        "stat",
        "delete",
        "append",
        "tagging",
        "objectMeta",
        "uploads",
        "uploadId",
        "partNumber",
        "security-token",
        "position",
        "response-content-type",
        "response-content-language",
        "response-expires",
        "response-cache-control",
        "response-content-disposition",
        "response-content-encoding",
        "restore",
        "callback",
        "callback-var",
        "versions",
        "versioning",
        "versionId",
        "sequential",
        "continuation-token",
        "regionList",
        "cloudboxes",
        "symlink",
        "resourceGroup",
    ]
)
SUBRESOURCES = _SUBRESOURCES_OSS2 | _SUBRESOURCES_V2SDK

_V1_QUERY_AUTH = frozenset({"OSSAccessKeyId", "Expires", "Signature"})


def _denied(message: str) -> OssError:
    return OssError("AccessDenied", message, 403)


def _invalid_auth(message: str) -> OssError:
    return OssError("InvalidArgument", message, 400)


def _secret(keys: KeyLookup, access_key_id: str, token: str | None) -> str:
    try:
        return keys.secret_for(access_key_id, token or None)
    except ApiError as exc:
        if exc.code in ("InvalidAccessKeyId.NotFound", "MissingSecurityToken"):
            raise OssError(
                "InvalidAccessKeyId",
                "The OSS Access Key Id you provided does not exist in our records.",
                403,
                OSSAccessKeyId=access_key_id,
            ) from None
        if exc.code == "InvalidSecurityToken.Expired":
            raise OssError(
                "SecurityTokenExpired", "The security token you provided has expired.", 403
            ) from None
        if exc.code.startswith("InvalidSecurityToken"):
            raise OssError(
                "InvalidSecurityToken", "The security token you provided is invalid.", 403
            ) from None
        raise _denied(exc.message) from None


def _check_skew(signed_at: float, window: int, shown: str) -> None:
    now = time.time()
    if abs(now - signed_at) > window:
        raise OssError(
            "RequestTimeTooSkewed",
            "The difference between the request time and the current time is too large.",
            403,
            RequestTime=shown,
            ServerTime=time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(now)),
            MaxAllowedSkewMilliseconds=str(window * 1000),
        )


def _mismatch(
    access_key_id: str, provided: str, string_to_sign: bytes, canonical_request: bytes | None = None
) -> OssError:
    details = {
        "StringToSign": string_to_sign.decode("utf-8", "replace"),
        "SignatureProvided": provided,
        "StringToSignBytes": " ".join(f"{b:02x}" for b in string_to_sign),
        "OSSAccessKeyId": access_key_id,
    }
    if canonical_request is not None:
        details["CanonicalRequest"] = canonical_request.decode("utf-8", "replace")
    return OssError(
        "SignatureDoesNotMatch",
        "The request signature we calculated does not match the signature you provided. "
        "Check your key and signing method.",
        403,
        **details,
    )


def _matches_any(candidates: Iterable[bytes], sign: Callable[[bytes], str], provided: str) -> bool:
    return any(hmac.compare_digest(sign(c).encode(), provided.encode()) for c in candidates)


# --- V1 ---------------------------------------------------------------------------------


def _v1_headers(req: OssRequest) -> bytes:
    names = sorted(name for name in req.headers if name.startswith("x-oss-"))
    return b"".join(name.encode() + b":" + req.raw_header(name) + b"\n" for name in names)


def _v1_resource(req: OssRequest, subresources: frozenset[str]) -> bytes:
    signed = sorted((k, v) for k, v in req.query if k in subresources)
    query = "&".join(f"{k}={v}" if v else k for k, v in signed)
    return (req.resource + ("?" + query if query else "")).encode("utf-8")


def _v1_strings(req: OssRequest, date: bytes) -> list[bytes]:
    head = (
        b"\n".join(
            [
                req.method.encode(),
                req.raw_header("content-md5"),
                req.raw_header("content-type"),
                date,
            ]
        )
        + b"\n"
        + _v1_headers(req)
    )
    out: list[bytes] = []
    for subresources in (SUBRESOURCES, _SUBRESOURCES_OSS2, _SUBRESOURCES_V2SDK):
        candidate = head + _v1_resource(req, subresources)
        if candidate not in out:
            out.append(candidate)
    return out


def _v1_verify(
    req: OssRequest,
    keys: KeyLookup,
    access_key_id: str,
    provided: str,
    token: str | None,
    date: bytes,
) -> str:
    secret = _secret(keys, access_key_id, token).encode("utf-8")

    def sign(data: bytes) -> str:
        return base64.b64encode(hmac.new(secret, data, hashlib.sha1).digest()).decode()

    candidates = _v1_strings(req, date)
    if not _matches_any(candidates, sign, provided):
        raise _mismatch(access_key_id, provided, candidates[0])
    return access_key_id


def _parse_http_date(value: str) -> float:
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        raise _denied("The Date header is not a valid HTTP date.") from None
    if parsed.tzinfo is None:
        raise _denied("The Date header must be in GMT.")
    return parsed.timestamp()


def _v1_header(req: OssRequest, authorization: str, keys: KeyLookup, window: int) -> str:
    credential, sep, provided = authorization[4:].strip().rpartition(":")
    if not sep or not credential or not provided:
        raise _invalid_auth("Authorization header is invalid.")
    date = req.header("x-oss-date") or req.header("date")
    if not date:
        raise _denied("Missing the Date header.")
    _check_skew(_parse_http_date(date), window, date)
    token = req.header("x-oss-security-token") or req.header("security-token")
    return _v1_verify(req, keys, credential, provided, token, date.encode("latin-1"))


def _v1_query(req: OssRequest, keys: KeyLookup) -> str:
    expires = req.params.get("Expires", "")
    expires_at = as_count(expires)
    if expires_at is None:
        raise _invalid_auth("The Expires parameter is not a number of seconds.")
    if expires_at < time.time():
        raise _denied("Request has expired.")
    token = req.params.get("security-token")
    provided = req.params.get("Signature", "")
    return _v1_verify(req, keys, req.params["OSSAccessKeyId"], provided, token, expires.encode())


# --- V4 ---------------------------------------------------------------------------------


def _v4_uri(req: OssRequest) -> bytes:
    return quote(req.resource, safe="/").encode("ascii")


def _v4_query_string(req: OssRequest) -> bytes:
    """Every parameter, RFC 3986-encoded (`/` too) and sorted; a bare name for an empty value."""
    encoded = sorted(
        (quote(k, safe=""), quote(v, safe="")) for k, v in req.query if k != "x-oss-signature"
    )
    return "&".join(f"{k}={v}" if v else k for k, v in encoded).encode("ascii")


def _v4_headers(req: OssRequest, additional: list[str]) -> bytes:
    def signed(name: str) -> bool:
        return (
            name.startswith("x-oss-")
            or name in ("content-type", "content-md5")
            or (name in additional)
        )

    names = sorted(name for name in req.headers if signed(name))
    return b"".join(name.encode() + b":" + req.raw_header(name) + b"\n" for name in names)


def _signing_key(secret: str, date: str, region: str, product: str) -> bytes:
    key = ("aliyun_v4" + secret).encode("utf-8")
    for part in (date, region, product, _V4_SCOPE_END):
        key = hmac.new(key, part.encode("utf-8"), hashlib.sha256).digest()
    return key


def _parse_v4_time(value: str) -> float:
    try:
        return float(timegm(time.strptime(value, "%Y%m%dT%H%M%SZ")))
    except ValueError:
        raise _invalid_auth(
            f"The x-oss-date value {value!r} is not in yyyymmddThhmmssZ form."
        ) from None


def _v4_scope(credential: str, signed_date: str, region: str) -> tuple[str, str, str]:
    """`(access_key_id, scope, product)` after checking the credential's scope."""
    parts = credential.split("/")
    if len(parts) != 5 or parts[4] != _V4_SCOPE_END or not parts[0]:
        raise _invalid_auth("Invalid credential in the Authorization header.")
    access_key_id, date, signing_region, product, _ = parts
    if date != signed_date[:8]:
        raise _invalid_auth("Invalid signing date in the Authorization header.")
    if signing_region != region:
        raise _invalid_auth(
            f"Invalid signing region in the Authorization header: expected {region!r}."
        )
    if product != "oss":
        raise _invalid_auth("Invalid signing product in the Authorization header.")
    return access_key_id, "/".join(parts[1:]), product


def _v4_verify(
    req: OssRequest,
    keys: KeyLookup,
    region: str,
    credential: str,
    signed_date: str,
    additional: list[str],
    provided: str,
    token: str | None,
    payload_hash: bytes,
) -> str:
    access_key_id, scope, product = _v4_scope(credential, signed_date, region)
    secret = _secret(keys, access_key_id, token)
    signing_key = _signing_key(secret, signed_date[:8], region, product)
    additional = sorted({name.strip().lower() for name in additional if name.strip()})
    canonical = b"\n".join(
        [
            req.method.encode(),
            _v4_uri(req),
            _v4_query_string(req),
            _v4_headers(req, additional),
            ";".join(additional).encode(),
            payload_hash,
        ]
    )
    digest = hashlib.sha256(canonical).hexdigest()
    string_to_sign = f"{V4}\n{signed_date}\n{scope}\n{digest}".encode()
    expected = hmac.new(signing_key, string_to_sign, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), provided.lower().encode()):
        raise _mismatch(access_key_id, provided, string_to_sign, canonical)
    return access_key_id


def _v4_fields(authorization: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for item in authorization[len(V4) :].split(","):
        name, sep, value = item.strip().partition("=")
        if sep:
            fields[name.strip()] = value.strip()
    return fields


def _v4_header(
    req: OssRequest, authorization: str, keys: KeyLookup, region: str, window: int
) -> str:
    fields = _v4_fields(authorization)
    if "Credential" not in fields or "Signature" not in fields:
        raise _invalid_auth("Authorization header is invalid.")
    signed_date = req.header("x-oss-date")
    if not signed_date:
        raise _denied("Missing the x-oss-date header.")
    _check_skew(_parse_v4_time(signed_date), window, signed_date)
    payload = req.header("x-oss-content-sha256", "UNSIGNED-PAYLOAD")
    if payload != "UNSIGNED-PAYLOAD" and payload.lower() != hashlib.sha256(req.body).hexdigest():
        raise OssError(
            "InvalidArgument", "The x-oss-content-sha256 header does not match the body.", 400
        )
    return _v4_verify(
        req,
        keys,
        region,
        fields["Credential"],
        signed_date,
        fields.get("AdditionalHeaders", "").split(";"),
        fields["Signature"],
        req.header("x-oss-security-token"),
        req.raw_header("x-oss-content-sha256") or b"UNSIGNED-PAYLOAD",
    )


def _v4_query(req: OssRequest, keys: KeyLookup, region: str) -> str:
    params = req.params
    signed_date = params.get("x-oss-date", "")
    expires = as_count(params.get("x-oss-expires", ""))
    if expires is None:
        raise _invalid_auth("The x-oss-expires parameter is not a number of seconds.")
    if _parse_v4_time(signed_date) + expires < time.time():
        raise _denied("Request has expired.")
    return _v4_verify(
        req,
        keys,
        region,
        params.get("x-oss-credential", ""),
        signed_date,
        params.get("x-oss-additional-headers", "").split(";"),
        params.get("x-oss-signature", ""),
        params.get("x-oss-security-token"),
        b"UNSIGNED-PAYLOAD",
    )


# --- entry ------------------------------------------------------------------------------


def is_anonymous(req: OssRequest) -> bool:
    """No signature of any kind: no Authorization header, no V1 or V4 query signature."""
    return not (
        req.header("authorization").strip()
        or req.params.get("x-oss-signature-version") == V4
        or req.params.keys() >= _V1_QUERY_AUTH
    )


def authenticate(req: OssRequest, keys: KeyLookup, region: str, window: int) -> str:
    """The caller's access key id, or the OssError the real service gives for this request."""
    authorization = req.header("authorization").strip()
    if authorization:
        if authorization.startswith(V4 + " "):
            return _v4_header(req, authorization, keys, region, window)
        if authorization.startswith("OSS "):
            return _v1_header(req, authorization, keys, window)
        raise _invalid_auth(
            "Authorization header is invalid: alisim accepts OSS (V1) and OSS4-HMAC-SHA256 (V4)."
        )
    if req.params.get("x-oss-signature-version") == V4:
        return _v4_query(req, keys, region)
    if req.params.keys() >= _V1_QUERY_AUTH:
        return _v1_query(req, keys)
    raise _denied("Anonymous access is forbidden for this operation.")
