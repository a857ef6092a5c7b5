"""Credentials and endpoints as a Prefect block, and the SDK clients made from it.

Like prefect-aws's `AwsCredentials`: a saved block is what a deployment names, and with no
key pair the `alibabacloud-credentials` default chain (environment, profile, RAM role) applies.
Endpoint overrides point the same flows at alisim.
"""

from __future__ import annotations

import hashlib
import os
from typing import Literal

import oss2
from alibabacloud_credentials.client import Client as CredentialClient
from alibabacloud_ecs20140526.client import Client as EcsClient
from alibabacloud_eventbridge20200401.client import Client as EventBridgeClient
from alibabacloud_ros20190910.client import Client as RosClient
from alibabacloud_sts20150401.client import Client as StsClient
from prefect.blocks.core import Block
from pydantic import Field, SecretStr, model_validator

from alicloud_runbooks import clients
from alicloud_runbooks.clients import Access, Endpoint
from alicloud_runbooks.errors import call


class AlibabaCloudCredentials(Block):
    """Who calls Alibaba Cloud, in which region, and where its endpoints are.

    Example:
        Save a key pair once, then load it by name (as the deployments do):
        ```python
        from alicloud_runbooks.blocks import AlibabaCloudCredentials

        AlibabaCloudCredentials(
            access_key_id="LTAI…", access_key_secret="…", region_id="cn-hangzhou"
        ).save("prod")
        credentials = AlibabaCloudCredentials.load("prod")
        ```
        With no key pair, the default chain (environment, profile, RAM role) is used.
    """

    _block_type_name = "Alibaba Cloud Credentials"
    _block_type_slug = "alibaba-cloud-credentials"
    _description = (
        "An AccessKey pair or an STS token, or the alibabacloud-credentials default chain, "
        "with a region and optional endpoint overrides (for alisim, the local cloud)."
    )
    _documentation_url = "https://www.alibabacloud.com/help/en/sdk/developer-reference/v2-manage-python-access-credentials"

    access_key_id: str | None = Field(
        default=None,
        description="AccessKey ID. Leave empty to use the default credentials chain.",
    )
    access_key_secret: SecretStr | None = Field(default=None, description="AccessKey secret.")
    security_token: SecretStr | None = Field(
        default=None, description="STS security token, with an STS key pair."
    )
    region_id: str = Field(default="cn-hangzhou", description="Region, e.g. cn-hangzhou.")
    openapi_endpoint: str | None = Field(
        default=None,
        description="OpenAPI `host:port` for every product (alisim: 127.0.0.1:9800).",
    )
    oss_endpoint: str | None = Field(default=None, description="OSS `host:port` override.")
    protocol: Literal["https", "http"] = Field(
        default="https", description="`http` only for a local endpoint such as alisim."
    )
    account_id: str | None = Field(
        default=None,
        description="The Alibaba Cloud account id. Leave empty to look it up with STS "
        "GetCallerIdentity; runbooks accept only this account's events.",
    )

    @model_validator(mode="after")
    def _pair_complete(self) -> AlibabaCloudCredentials:
        if bool(self.access_key_id) != bool(self.access_key_secret):
            raise ValueError(
                "give both access_key_id and access_key_secret, or neither to use the "
                "default credentials chain"
            )
        if self.security_token and not self.access_key_id:
            raise ValueError("security_token needs the STS access_key_id and access_key_secret")
        return self

    @classmethod
    def from_environment(cls) -> AlibabaCloudCredentials:
        """Region and endpoints from `ALIBABA_CLOUD_REGION_ID` and `RUNBOOKS_*`; keys from the
        default chain (which reads `ALIBABA_CLOUD_ACCESS_KEY_ID` and friends itself)."""
        return cls(
            region_id=os.environ.get("ALIBABA_CLOUD_REGION_ID", "cn-hangzhou"),
            openapi_endpoint=os.environ.get("RUNBOOKS_OPENAPI_ENDPOINT") or None,
            oss_endpoint=os.environ.get("RUNBOOKS_OSS_ENDPOINT") or None,
            protocol=os.environ.get("RUNBOOKS_PROTOCOL", "https"),  # type: ignore[arg-type]
        )

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(
            openapi=self.openapi_endpoint, oss=self.oss_endpoint, protocol=self.protocol
        )

    @property
    def uses_default_chain(self) -> bool:
        return not self.access_key_id

    def _access(self) -> Access:
        if self.uses_default_chain:
            return {
                "credential": CredentialClient(),
                "region": self.region_id,
                "endpoint": self.endpoint,
            }
        assert self.access_key_secret is not None
        return {
            "access_key_id": self.access_key_id,
            "access_key_secret": self.access_key_secret.get_secret_value(),
            "security_token": (
                self.security_token.get_secret_value() if self.security_token else None
            ),
            "region": self.region_id,
            "endpoint": self.endpoint,
        }

    def cache_key(self) -> tuple[str | None, ...]:
        """What tells these credentials' clients apart, with a digest in place of the secret
        and the token: safe to keep, to compare and to show."""
        secret = ""
        if self.access_key_secret is not None:
            token = self.security_token.get_secret_value() if self.security_token else ""
            material = f"{self.access_key_secret.get_secret_value()}\0{token}".encode()
            secret = hashlib.sha256(material).hexdigest()[:16]
        return (
            self.access_key_id or "default-chain",
            secret,
            self.region_id,
            self.openapi_endpoint,
            self.oss_endpoint,
            self.protocol,
        )

    def ecs_client(self) -> EcsClient:
        """An ECS client, made once per credentials (cached).

        Example:
            ```python
            from alibabacloud_ecs20140526.models import DescribeRegionsRequest

            AlibabaCloudCredentials.load("prod").ecs_client().describe_regions(
                DescribeRegionsRequest()
            )
            ```
        """
        return clients.cached(
            ("ecs", *self.cache_key()), lambda: clients.ecs_client(**self._access())
        )

    def eventbridge_client(self) -> EventBridgeClient:
        return clients.cached(
            ("eventbridge", *self.cache_key()),
            lambda: clients.eventbridge_client(**self._access()),
        )

    def ros_client(self) -> RosClient:
        return clients.cached(
            ("ros", *self.cache_key()), lambda: clients.ros_client(**self._access())
        )

    def oss_bucket(self, bucket: str) -> oss2.Bucket:
        """An oss2 bucket, made once per credentials and bucket (cached).

        Example:
            ```python
            credentials.oss_bucket("ops-outputs").get_object("runbooks/t-…/i-…").read()
            ```
        """
        return clients.cached(
            ("oss", bucket, *self.cache_key()),
            lambda: clients.oss_bucket(bucket=bucket, **self._access()),
        )

    def sts_client(self) -> StsClient:
        return clients.cached(
            ("sts", *self.cache_key()), lambda: clients.sts_client(**self._access())
        )

    def resolve_account_id(self) -> str:
        """The account the credentials belong to: `account_id`, else STS GetCallerIdentity
        (which needs no permission), asked once per process and key."""
        if self.account_id:
            return self.account_id
        cache_key = (self.access_key_id or "default-chain", self.region_id, self.openapi_endpoint)
        if cache_key not in _ACCOUNTS:
            body = call("GetCallerIdentity", lambda: self.sts_client().get_caller_identity().body)
            _ACCOUNTS[cache_key] = body.account_id
        return _ACCOUNTS[cache_key]


_ACCOUNTS: dict[tuple[str, str, str | None], str] = {}


async def resolve_credentials(
    credentials: AlibabaCloudCredentials | None, block_name: str | None
) -> AlibabaCloudCredentials:
    """A flow's credentials: the block given, else the saved block named, else the environment.

    Deployments name a saved block (`credentials_block`): a block-typed parameter given as a
    `$ref` is refused by Prefect 3.8's parameter schema check for a block without required
    fields, and a block passed by value reaches the server with its secrets masked.
    """
    if credentials is not None:
        return credentials
    if block_name:
        return await AlibabaCloudCredentials.aload(block_name)
    return AlibabaCloudCredentials.from_environment()
