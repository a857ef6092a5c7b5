"""In-memory buckets and objects; Cloud Assistant's output delivery writes here too."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

from alisim.errors import OssError


@dataclass
class OssObject:
    key: str
    data: bytes
    content_type: str = "application/octet-stream"
    metadata: dict[str, str] = field(default_factory=dict)
    last_modified: float = field(default_factory=time.time)

    @property
    def etag(self) -> str:
        return '"' + hashlib.md5(self.data).hexdigest().upper() + '"'


@dataclass
class Bucket:
    name: str
    region: str
    created: float = field(default_factory=time.time)
    objects: dict[str, OssObject] = field(default_factory=dict)


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

    def put_object(
        self,
        bucket: str,
        key: str,
        data: bytes,
        content_type: str = "application/octet-stream",
        metadata: dict[str, str] | None = None,
    ) -> OssObject:
        obj = OssObject(key, data, content_type, metadata or {})
        self.bucket(bucket).objects[key] = obj
        return obj

    def get_object(self, bucket: str, key: str) -> OssObject:
        try:
            return self.bucket(bucket).objects[key]
        except KeyError:
            raise OssError("NoSuchKey", "The specified key does not exist.", 404, Key=key) from None

    def delete_object(self, bucket: str, key: str) -> None:
        self.bucket(bucket).objects.pop(key, None)
