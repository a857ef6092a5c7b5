"""Relay configuration, from arguments or the environment (`RUNBOOKS_RELAY_*`, and Prefect's
own `PREFECT_API_URL` / `PREFECT_API_KEY` / `PREFECT_API_AUTH_STRING`)."""

from __future__ import annotations

from typing import Annotated

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from alicloud_runbooks.events.names import OUTPUT_DELIVERED_TYPE


def _split(value: object) -> object:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


class RelaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RUNBOOKS_RELAY_", extra="ignore")

    token: SecretStr = Field(
        description="Shared secret: `Authorization: Bearer <token>` or `?token=<token>`."
    )
    allowed_account_ids: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Accept only these Alibaba account ids (empty: any)."
    )
    allowed_sources: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Accept only these event sources, e.g. acs.ecs."
    )
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_events_per_request: int = Field(default=500, ge=1)
    max_json_depth: int = Field(default=32, ge=4)
    body_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="The whole body must arrive within this time after the headers, else 408.",
    )
    output_delivered_type: str = OUTPUT_DELIVERED_TYPE
    prefect_api_url: str = Field(
        default="http://127.0.0.1:4200/api",
        validation_alias=AliasChoices(
            "RUNBOOKS_RELAY_PREFECT_API_URL", "PREFECT_API_URL", "prefect_api_url"
        ),
    )
    prefect_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("PREFECT_API_KEY", "prefect_api_key"),
    )
    prefect_api_auth_string: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("PREFECT_API_AUTH_STRING", "prefect_api_auth_string"),
    )
    prefect_timeout_seconds: float = Field(default=10.0, gt=0)
    link_runs: bool = Field(
        default=True,
        description="Relate each Cloud Assistant event to the flow run that started its "
        "invocation (found by the run's tag), so the UI leads from one to the other and a "
        "suspended run can be resumed by it.",
    )

    @field_validator("allowed_account_ids", "allowed_sources", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        return _split(value)
