"""ClientToken idempotency: the same token and parameters give the same answer; a changed
request under a used token is `IdempotentParameterMismatch`, as the docs say."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from alisim.errors import ApiError
from alisim.openapi.params import Params

# Signing and transport parameters that differ between retries of the same request.
_VOLATILE = {
    "Signature",
    "SignatureNonce",
    "Timestamp",
    "AccessKeyId",
    "SignatureMethod",
    "SignatureVersion",
    "SignatureType",
    "Format",
    "Version",
    "SecurityToken",
    "ClientToken",
}


def fingerprint(params: Params) -> str:
    stable = sorted((k, v) for k, v in params.values.items() if k not in _VOLATILE)
    return hashlib.sha256(json.dumps(stable).encode()).hexdigest()


class IdempotencyCache:
    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}

    def lookup(
        self, action: str, params: Params, mismatch: ApiError | None = None
    ) -> dict[str, Any] | None:
        """The answer given before to this token and these parameters; `mismatch` is the
        product's error for a reused token with other parameters (ECS's by default)."""
        token = params.get("ClientToken")
        if token is None:
            return None
        if len(token) > 64 or not token.isascii():
            raise ApiError(
                "InvalidClientToken.Malformed",
                "The ClientToken must be at most 64 ASCII characters.",
                400,
            )
        entry = self._entries.get((action, token))
        if entry is None:
            return None
        stored_fingerprint, response = entry
        if stored_fingerprint != fingerprint(params):
            if mismatch is not None:
                raise mismatch
            raise ApiError(
                "IdempotentParameterMismatch",
                "The specified parameter has changed while using an already used clientToken.",
                400,
            )
        return response

    def store(self, action: str, params: Params, response: dict[str, Any]) -> None:
        token = params.get("ClientToken")
        if token is not None:
            self._entries[(action, token)] = (fingerprint(params), response)
