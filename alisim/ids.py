"""Resource ids shaped like the real ones (`i-bp1…`, `t-hz0…`, `c-hz0…`)."""

from __future__ import annotations

import secrets
import string
import uuid

_ALPHABET = string.ascii_lowercase + string.digits

REGION_PREFIX = {
    "cn-hangzhou": ("bp1", "hz0"),
    "cn-shanghai": ("uf6", "sh0"),
    "cn-beijing": ("2ze", "bj0"),
    "cn-shenzhen": ("wz9", "sz0"),
}


def _suffix(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def _prefixes(region: str) -> tuple[str, str]:
    return REGION_PREFIX.get(region, ("al1", "al0"))


def instance_id(region: str) -> str:
    return f"i-{_prefixes(region)[0]}{_suffix(17)}"


def invoke_id(region: str) -> str:
    return f"t-{_prefixes(region)[1]}{_suffix(14)}"


def command_id(region: str) -> str:
    return f"c-{_prefixes(region)[1]}{_suffix(14)}"


def request_id() -> str:
    return str(uuid.uuid4()).upper()


def event_id() -> str:
    return str(uuid.uuid4())


def resource_id(kind: str, region: str) -> str:
    """`vpc-bp1…`, `vsw-bp1…`, `sg-bp1…`: the form of VPC-era resource ids."""
    return f"{kind}-{_prefixes(region)[0]}{_suffix(17)}"
