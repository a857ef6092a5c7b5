"""Access keys alisim accepts, STS tokens it issues, and the nonce replay cache.

The default key pair is published (in the README and the code). When alisim is opened to
other hosts it mints a fresh key pair, and the published one is refused for every request
that does not come from loopback: see `CredentialStore.open_to_remote` and `for_peer`.
"""

from __future__ import annotations

import secrets
import string
import threading
import time
from dataclasses import dataclass
from typing import Protocol

from alisim.config import DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET
from alisim.errors import ApiError


@dataclass(frozen=True)
class AccessKey:
    access_key_id: str
    access_key_secret: str
    security_token: str | None = None
    expires_at: float | None = None
    session_name: str | None = None

    def __repr__(self) -> str:
        return f"AccessKey({self.access_key_id!r}, secret and token hidden)"


class KeyLookup(Protocol):
    """What a signature check needs: the secret of an access key id, or the API's error."""

    def secret_for(self, access_key_id: str, security_token: str | None) -> str: ...


_ALNUM = string.ascii_letters + string.digits


class CredentialStore:
    """Looks up secrets by access key id; STS keys must come with their token and be unexpired."""

    def __init__(self) -> None:
        self._keys: dict[str, AccessKey] = {}
        self._lock = threading.Lock()
        self.remote_key: AccessKey | None = None
        self.add(DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET)

    def open_to_remote(self) -> AccessKey:
        """Mint the fresh key pair of an alisim open to other hosts (idempotent)."""
        if self.remote_key is None:
            self.remote_key = self.add(
                "LTAI5t" + "".join(secrets.choice(_ALNUM) for _ in range(18)),
                "".join(secrets.choice(_ALNUM) for _ in range(30)),
            )
        return self.remote_key

    def get(self, access_key_id: str) -> AccessKey | None:
        with self._lock:
            return self._keys.get(access_key_id)

    def for_peer(self, loopback: bool) -> KeyLookup:
        """The keys a request from this peer may use: all of them, unless it is remote
        while alisim is open to other hosts, when the published default key is refused."""
        if loopback or self.remote_key is None:
            return self
        return _RemotePeerKeys(self)

    def add(self, access_key_id: str, access_key_secret: str) -> AccessKey:
        key = AccessKey(access_key_id, access_key_secret)
        with self._lock:
            self._keys[access_key_id] = key
        return key

    def issue_sts(self, duration_seconds: int = 3600, session_name: str = "alisim") -> AccessKey:
        key = AccessKey(
            access_key_id=f"STS.{secrets.token_hex(12)}",
            access_key_secret=secrets.token_urlsafe(24),
            security_token=secrets.token_urlsafe(48),
            expires_at=time.time() + duration_seconds,
            session_name=session_name,
        )
        with self._lock:
            self._keys[key.access_key_id] = key
        return key

    def secret_for(self, access_key_id: str, security_token: str | None) -> str:
        """The secret to verify a signature with, or the error the real service gives."""
        with self._lock:
            key = self._keys.get(access_key_id)
        if key is None:
            raise ApiError("InvalidAccessKeyId.NotFound", "Specified access key is not found.", 404)
        if key.security_token is not None:
            if not security_token:
                raise ApiError(
                    "MissingSecurityToken", "The security token of the STS key is missing.", 400
                )
            if not secrets.compare_digest(security_token, key.security_token):
                raise ApiError(
                    "InvalidSecurityToken.Mismatch",
                    "Specified SecurityToken is not matched with the AccessKeyId.",
                    400,
                )
            if key.expires_at is not None and key.expires_at < time.time():
                raise ApiError(
                    "InvalidSecurityToken.Expired", "Specified SecurityToken is expired.", 400
                )
        return key.access_key_secret


class _RemotePeerKeys:
    def __init__(self, store: CredentialStore) -> None:
        self._store = store

    def secret_for(self, access_key_id: str, security_token: str | None) -> str:
        if access_key_id == DEFAULT_ACCESS_KEY_ID:
            raise ApiError(
                "InvalidAccessKeyId.Inactive",
                "The published alisim key pair is accepted from loopback clients only; "
                "use the key pair alisim printed when it started.",
                403,
            )
        return self._store.secret_for(access_key_id, security_token)


class NonceCache:
    """Rejects a signature nonce seen within the signature window (replay protection)."""

    def __init__(self, window_seconds: int = 900) -> None:
        self.window_seconds = window_seconds
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()
        self._next_sweep = 0.0

    def check_and_add(self, nonce: str) -> None:
        now = time.monotonic()
        with self._lock:
            if now >= self._next_sweep:
                horizon = now - self.window_seconds
                self._seen = {n: t for n, t in self._seen.items() if t > horizon}
                self._next_sweep = now + 60
            if nonce in self._seen:
                raise ApiError(
                    "SignatureNonceUsed", "Specified signature nonce was used already.", 400
                )
            self._seen[nonce] = now
