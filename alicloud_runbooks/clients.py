"""Official SDK clients made in one place, for the real cloud or for alisim.

The OpenAPI SDKs retry nothing by default; these clients retry throttling and transient
server errors with back-off, honouring the server's `x-acs-retry-after`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Required, TypedDict, TypeVar, Unpack

import oss2
from alibabacloud_credentials.client import Client as CredentialClient
from alibabacloud_ecs20140526.client import Client as EcsClient
from alibabacloud_eventbridge20200401.client import Client as EventBridgeClient
from alibabacloud_ros20190910.client import Client as RosClient
from alibabacloud_sts20150401.client import Client as StsClient
from alibabacloud_tea_openapi.models import Config
from darabonba.policy.retry import RetryCondition, RetryOptions

THROTTLING_CODES = ["Throttling", "Throttling.User", "Throttling.Api", "ServiceUnavailable"]
CACHE_SIZE = 64
T = TypeVar("T")


@dataclass(frozen=True)
class Endpoint:
    """Where the OpenAPI and OSS requests go: `host:port` and the scheme."""

    openapi: str | None = None
    oss: str | None = None
    protocol: str = "https"


def retry_options(max_attempts: int = 5) -> RetryOptions:
    condition = RetryCondition(
        {
            "maxAttempts": max_attempts,
            "errorCode": THROTTLING_CODES,
            "backoff": {"policy": "ExponentialWithEqualJitter", "period": 200, "cap": 10_000},
            "maxDelay": 20_000,
        }
    )
    return RetryOptions({"retryable": True, "retryCondition": [condition]})


class Access(TypedDict, total=False):
    """Where and as whom an OpenAPI client calls: the keyword arguments of the factories.

    Either a key pair (and an STS token) or `credential`, a client of the
    `alibabacloud-credentials` chain that refreshes role credentials itself.
    """

    access_key_id: str | None
    access_key_secret: str | None
    security_token: str | None
    credential: CredentialClient | None
    region: Required[str]
    endpoint: Required[Endpoint]


def openapi_config(product: str, **access: Unpack[Access]) -> Config:
    region = access["region"]
    endpoint = access["endpoint"]
    config = Config(
        access_key_id=access.get("access_key_id"),
        access_key_secret=access.get("access_key_secret"),
        security_token=access.get("security_token"),
        credential=access.get("credential"),
        region_id=region,
        endpoint=endpoint.openapi or f"{product}.{region}.aliyuncs.com",
        protocol=endpoint.protocol,
        read_timeout=30_000,
        connect_timeout=5_000,
    )
    config.retry_options = retry_options()
    return config


def ecs_client(**access: Unpack[Access]) -> EcsClient:
    return EcsClient(openapi_config("ecs", **access))


def eventbridge_client(**access: Unpack[Access]) -> EventBridgeClient:
    return EventBridgeClient(openapi_config("eventbridge", **access))


def ros_client(**access: Unpack[Access]) -> RosClient:
    return RosClient(openapi_config("ros", **access))


def sts_client(**access: Unpack[Access]) -> StsClient:
    """STS on its regional endpoint (`sts.<region>.aliyuncs.com`), e.g. for GetCallerIdentity."""
    return StsClient(openapi_config("sts", **access))


class ChainCredentialsProvider(oss2.credentials.CredentialsProvider):
    """oss2 credentials from the `alibabacloud-credentials` chain, refreshed per request."""

    def __init__(self, client: CredentialClient) -> None:
        self._client = client

    def get_credentials(self) -> oss2.credentials.Credentials:
        found = self._client.get_credential()
        return oss2.credentials.Credentials(
            found.access_key_id, found.access_key_secret, found.security_token or ""
        )


def oss_bucket(
    *,
    region: str,
    endpoint: Endpoint,
    bucket: str,
    access_key_id: str | None = None,
    access_key_secret: str | None = None,
    security_token: str | None = None,
    credential: CredentialClient | None = None,
) -> oss2.Bucket:
    if credential is not None:
        auth: oss2.AuthBase = oss2.ProviderAuthV4(ChainCredentialsProvider(credential))
    elif access_key_id is None or access_key_secret is None:
        raise ValueError("oss_bucket needs a key pair or a credential client")
    elif security_token:
        auth = oss2.StsAuth(
            access_key_id, access_key_secret, security_token, auth_version=oss2.AUTH_VERSION_4
        )
    else:
        auth = oss2.AuthV4(access_key_id, access_key_secret)
    host = endpoint.oss or f"oss-{region}.aliyuncs.com"
    return oss2.Bucket(auth, f"{endpoint.protocol}://{host}", bucket, region=region)


_CACHE: OrderedDict[Hashable, object] = OrderedDict()
_LOCK = threading.Lock()


def cached(key: Hashable, make: Callable[[], T]) -> T:
    """The client made for `key` before, else `make()`'s, kept (at most `CACHE_SIZE`, least
    recently used dropped), as prefect-aws keeps its boto3 clients: one per credentials and
    endpoint, not one per task call. The SDK clients and oss2 buckets are safe to share
    across threads. `key` must not hold a secret (`AlibabaCloudCredentials` passes a digest)."""
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]  # type: ignore[return-value]
    made = make()
    with _LOCK:
        kept = _CACHE.setdefault(key, made)
        _CACHE.move_to_end(key)
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
    return kept  # type: ignore[return-value]


def clear_cache() -> None:
    """Forget every cached client (after rotating keys in place, say)."""
    with _LOCK:
        _CACHE.clear()
