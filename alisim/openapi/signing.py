"""Verification of the two OpenAPI signatures the official SDKs send.

ACS3-HMAC-SHA256 (the default) signs a canonical request over the method, path, query,
the headers named in `SignedHeaders` and the body hash. The older RPC signature (HMAC-SHA1)
signs every parameter but `Signature`. Both carry a timestamp and a nonce: alisim rejects
requests outside the window and replayed nonces, like the real gateway.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from calendar import timegm
from dataclasses import dataclass
from urllib.parse import quote

from alisim.credentials import KeyLookup, NonceCache
from alisim.errors import ApiError

ACS3 = "ACS3-HMAC-SHA256"


@dataclass(frozen=True)
class SignedRequest:
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, list[str]]
    body: bytes
    form: list[tuple[str, str]]


def _encode(value: str) -> str:
    return quote(value, safe="~", encoding="utf-8")


def _parse_iso_time(value: str, field: str) -> float:
    try:
        return float(timegm(time.strptime(value, "%Y-%m-%dT%H:%M:%SZ")))
    except ValueError:
        raise ApiError(
            "InvalidTimeStamp.Format", f"Specified {field} is not valid: {value!r}.", 400
        ) from None


def _check_window(signed_at: float, window: int) -> None:
    if abs(time.time() - signed_at) > window:
        raise ApiError(
            "InvalidTimeStamp.Expired",
            "Specified time stamp or date value is expired; check your system clock.",
            400,
        )


def _signature_mismatch(string_to_sign: str) -> ApiError:
    return ApiError(
        "SignatureDoesNotMatch",
        "Specified signature is not matched with our calculation. server string to sign "
        f"is:{string_to_sign}",
        400,
    )


def _header(req: SignedRequest, name: str) -> str | None:
    values = req.headers.get(name)
    return values[0] if values else None


def verify_acs3(req: SignedRequest, authorization: str, keys: KeyLookup, nonces: NonceCache) -> str:
    """Verify an ACS3-HMAC-SHA256 request; returns the access key id."""
    parts: dict[str, str] = {}
    for item in authorization[len(ACS3) :].strip().split(","):
        name, _, value = item.strip().partition("=")
        parts[name] = value
    access_key_id = parts.get("Credential", "")
    signed_headers = [h for h in parts.get("SignedHeaders", "").split(";") if h]
    signature = parts.get("Signature", "")
    if not access_key_id or not signed_headers or not signature:
        raise ApiError("IncompleteSignature", "The Authorization header is incomplete.", 400)

    date = _header(req, "x-acs-date")
    nonce = _header(req, "x-acs-signature-nonce")
    if not date:
        raise ApiError("MissingParameter", "The x-acs-date header is missing.", 400)
    if not nonce:
        raise ApiError("MissingParameter", "The x-acs-signature-nonce header is missing.", 400)
    for required in ("x-acs-date", "x-acs-signature-nonce", "x-acs-content-sha256", "host"):
        if required not in signed_headers:
            raise ApiError("IncompleteSignature", f"The header {required} must be signed.", 400)
    # As documented for V3: host, content-type and every x-acs-* header are signed, so
    # none of them (x-acs-action above all) can be changed in transit.
    for name in req.headers:
        if (name.startswith("x-acs-") or name == "content-type") and name not in signed_headers:
            raise ApiError("IncompleteSignature", f"The header {name} must be signed.", 400)
    secret = keys.secret_for(access_key_id, _header(req, "x-acs-security-token"))
    _check_window(_parse_iso_time(date, "x-acs-date"), nonces.window_seconds)

    body_hash = hashlib.sha256(req.body).hexdigest()
    if _header(req, "x-acs-content-sha256") != body_hash:
        raise ApiError(
            "SignatureDoesNotMatch",
            "The x-acs-content-sha256 header does not match the body.",
            400,
        )
    canonical_query = "&".join(
        f"{k}={_encode(v)}" for k, v in sorted(req.query, key=lambda kv: kv[0])
    )
    canonical_headers = "".join(
        f"{name}:{','.join(sorted(v.strip() for v in req.headers.get(name, [])))}\n"
        for name in sorted(signed_headers)
    )
    canonical_request = "\n".join(
        [
            req.method,
            req.path or "/",
            canonical_query,
            canonical_headers,
            ";".join(sorted(signed_headers)),
            body_hash,
        ]
    )
    string_to_sign = f"{ACS3}\n{hashlib.sha256(canonical_request.encode()).hexdigest()}"
    expected = hmac.new(secret.encode(), string_to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature.lower()):
        raise _signature_mismatch(string_to_sign)
    nonces.check_and_add(nonce)
    return access_key_id


def verify_rpc(
    req: SignedRequest, params: dict[str, str], keys: KeyLookup, nonces: NonceCache
) -> str:
    """Verify an RPC (HMAC-SHA1) request whose parameters include `Signature`."""
    for required in ("AccessKeyId", "Signature", "SignatureNonce", "Timestamp"):
        if not params.get(required):
            raise ApiError(
                "MissingParameter", f'The input parameter "{required}" is not supplied.', 400
            )
    method = params.get("SignatureMethod", "HMAC-SHA1")
    if method != "HMAC-SHA1":
        raise ApiError("InvalidSignatureMethod", f"Signature method {method} is not supported.")
    access_key_id = params["AccessKeyId"]
    secret = keys.secret_for(access_key_id, params.get("SecurityToken"))
    _check_window(_parse_iso_time(params["Timestamp"], "Timestamp"), nonces.window_seconds)
    signed = sorted((k, v) for k, v in params.items() if k != "Signature")
    canonical = "&".join(f"{_encode(k)}={_encode(v)}" for k, v in signed)
    string_to_sign = f"{req.method}&%2F&{_encode(canonical)}"
    digest = hmac.new(f"{secret}&".encode(), string_to_sign.encode(), hashlib.sha1).digest()
    if not hmac.compare_digest(base64.b64encode(digest).decode(), params["Signature"]):
        raise _signature_mismatch(string_to_sign)
    nonces.check_and_add(params["SignatureNonce"])
    return access_key_id
