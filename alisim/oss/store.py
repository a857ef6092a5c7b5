"""In-memory buckets and objects; Cloud Assistant's output delivery writes here too.

An object's MD5 and CRC-64 are computed once, when it is stored: inline for a small body,
in a worker thread for a large one, so a 100 MiB PUT does not stall every other request.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import hashlib
import time
from dataclasses import dataclass, field

from alisim.errors import OssError
from alisim.oss.crc64 import crc64_ecma

HASH_IN_THREAD_BYTES = 256 * 1024
"""Above this size the hashes are computed off the event loop (below it they take < 1 ms)."""


@dataclass
class OssObject:
    key: str
    data: bytes
    content_type: str = "application/octet-stream"
    metadata: dict[str, str] = field(default_factory=dict)
    last_modified: float = field(default_factory=time.time)
    http_headers: dict[str, str] = field(default_factory=dict)
    """Stored response headers such as Cache-Control and Content-Disposition."""
    _digests: tuple[bytes, bytes, int] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def _hashes(self) -> tuple[bytes, int]:
        cached = self._digests
        if cached is None or cached[0] is not self.data:
            cached = _digest(self.data)
            self._digests = cached
        return cached[1], cached[2]

    async def hash(self) -> None:
        """Compute the hashes now, off the event loop when the body is large."""
        cached = self._digests
        if cached is not None and cached[0] is self.data:
            return
        if len(self.data) <= HASH_IN_THREAD_BYTES:
            self._digests = _digest(self.data)
        else:
            self._digests = await asyncio.to_thread(_digest, self.data)

    def share_hashes(self, source: OssObject) -> None:
        """A copy of `source`'s bytes reuses its hashes instead of computing them again."""
        if source._digests is not None and source._digests[0] is self.data:
            self._digests = source._digests

    @property
    def etag(self) -> str:
        return '"' + self._hashes()[0].hex().upper() + '"'

    @property
    def md5_digest(self) -> bytes:
        return self._hashes()[0]

    @property
    def content_md5(self) -> str:
        return base64.b64encode(self._hashes()[0]).decode("ascii")

    @property
    def crc64(self) -> int:
        return self._hashes()[1]

    @property
    def size(self) -> int:
        return len(self.data)


def _digest(data: bytes) -> tuple[bytes, bytes, int]:
    return data, hashlib.md5(data).digest(), crc64_ecma(data)


class ObjectMap(dict[str, OssObject]):
    """A dict of objects that keeps its keys sorted for listings as it changes."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._sorted: list[str] | None = None

    def sorted_keys(self) -> list[str]:
        """Keys in OSS listing order (UTF-8 byte order equals code point order)."""
        if self._sorted is None:
            self._sorted = sorted(self)
        return self._sorted

    def __setitem__(self, key: str, value: OssObject) -> None:
        if self._sorted is not None and key not in self:
            bisect.insort(self._sorted, key)
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        if self._sorted is not None:
            del self._sorted[bisect.bisect_left(self._sorted, key)]

    def pop(self, key: str, *default: object) -> object:  # type: ignore[override]
        if key in self:
            value = self[key]
            del self[key]
            return value
        return super().pop(key, *default)

    def _forget(self) -> None:
        self._sorted = None

    def clear(self) -> None:
        super().clear()
        self._forget()

    def update(self, *args: object, **kwargs: object) -> None:  # type: ignore[override]
        super().update(*args, **kwargs)  # type: ignore[arg-type]
        self._forget()

    def setdefault(self, key: str, default: OssObject) -> OssObject:  # type: ignore[override]
        if key not in self:
            self[key] = default
        return self[key]

    def popitem(self) -> tuple[str, OssObject]:
        item = super().popitem()
        self._forget()
        return item

    def __ior__(self, other: object) -> ObjectMap:  # type: ignore[override]
        self.update(other)
        return self


@dataclass
class Bucket:
    name: str
    region: str
    created: float = field(default_factory=time.time)
    objects: dict[str, OssObject] = field(default_factory=ObjectMap)

    def __post_init__(self) -> None:
        if not isinstance(self.objects, ObjectMap):
            self.objects = ObjectMap(self.objects)

    def sorted_keys(self) -> list[str]:
        assert isinstance(self.objects, ObjectMap)
        return self.objects.sorted_keys()


class OssStore:
    def __init__(self, region: str) -> None:
        self.region = region
        self.buckets: dict[str, Bucket] = {}

    def create_bucket(self, name: str) -> Bucket:
        if name in self.buckets:
            raise OssError(
                "BucketAlreadyExists",
                "The requested bucket name is not available.",
                409,
                BucketName=name,
            )
        bucket = Bucket(name, self.region)
        self.buckets[name] = bucket
        return bucket

    def ensure_bucket(self, name: str) -> Bucket:
        return self.buckets.get(name) or self.create_bucket(name)

    def bucket(self, name: str) -> Bucket:
        try:
            return self.buckets[name]
        except KeyError:
            raise OssError(
                "NoSuchBucket", "The specified bucket does not exist.", 404, BucketName=name
            ) from None

    def delete_bucket(self, name: str) -> None:
        bucket = self.bucket(name)
        if bucket.objects:
            raise OssError(
                "BucketNotEmpty",
                "The bucket you tried to delete is not empty.",
                409,
                BucketName=name,
            )
        del self.buckets[name]

    async def put_object(
        self,
        bucket: str,
        key: str,
        data: bytes,
        content_type: str = "application/octet-stream",
        metadata: dict[str, str] | None = None,
    ) -> OssObject:
        self.bucket(bucket)
        obj = OssObject(key, data, content_type, metadata or {})
        await obj.hash()
        return self.store_object(bucket, obj)

    def store_object(self, bucket: str, obj: OssObject) -> OssObject:
        """Put a fully built object (with its HTTP headers, hashed by `await obj.hash()`
        first) in place of any older one."""
        self.bucket(bucket).objects[obj.key] = obj
        return obj

    def get_object(self, bucket: str, key: str) -> OssObject:
        try:
            return self.bucket(bucket).objects[key]
        except KeyError:
            raise OssError("NoSuchKey", "The specified key does not exist.", 404, Key=key) from None

    def delete_object(self, bucket: str, key: str) -> None:
        self.bucket(bucket).objects.pop(key, None)
