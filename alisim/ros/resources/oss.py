"""`ALIYUN::OSS::Bucket` on alisim's OSS: the bucket is real there (objects can be put in
it). Deleting a bucket that still holds objects fails with OSS's `BucketNotEmpty` unless
`DeletionForce` is true, as on Alibaba Cloud."""

from __future__ import annotations

import re
from typing import Any

from alisim.errors import OssError
from alisim.ros.resources.base import Context, ResourceFailed, ResourceType, boolean, required_text

BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9\-]{1,61}[a-z0-9]$")


class BucketType(ResourceType):
    name = "ALIYUN::OSS::Bucket"
    attributes = frozenset({"Name", "Arn", "DomainName", "InternalDomainName"})
    required = ("BucketName",)
    replace_on = frozenset({"BucketName"})

    async def create(self, ctx: Context, props: dict[str, Any]) -> None:
        name = required_text(props, "BucketName")
        if not BUCKET_NAME.match(name):
            raise ResourceFailed(
                "InvalidBucketName",
                f"The bucket name {name!r} must be 3-63 lowercase letters, digits or hyphens.",
            )
        try:
            ctx.cloud.oss.create_bucket(name)
        except OssError as exc:
            raise ResourceFailed(exc.code, exc.message) from None
        region = ctx.cloud.settings.region
        ctx.resource.physical_id = name
        ctx.resource.attributes = {
            "Name": name,
            "Arn": f"acs:oss:*:{ctx.cloud.settings.account_id}:{name}",
            "DomainName": f"{name}.oss-{region}.aliyuncs.com",
            "InternalDomainName": f"{name}.oss-{region}-internal.aliyuncs.com",
        }

    async def delete(self, ctx: Context) -> None:
        store = ctx.cloud.oss
        name = ctx.resource.physical_id
        if name not in store.buckets:
            return
        if boolean(ctx.resource.properties, "DeletionForce", False):
            store.buckets[name].objects.clear()
        try:
            store.delete_bucket(name)
        except OssError as exc:
            raise ResourceFailed(exc.code, f"{exc.message} ({name})") from None
