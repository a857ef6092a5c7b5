"""ECS API conventions shared by the instance and Cloud Assistant actions (one API product)."""

from __future__ import annotations

import time
from typing import Any

from alisim.errors import ApiError, invalid_parameter
from alisim.openapi.params import Params


def api_time(ts: float | None, minutes_only: bool = False) -> str:
    """ECS times: UTC ISO 8601 with `Z`; creation and start times to the minute, as ECS shows."""
    if ts is None:
        return ""
    fmt = "%Y-%m-%dT%H:%MZ" if minutes_only else "%Y-%m-%dT%H:%M:%SZ"
    return time.strftime(fmt, time.gmtime(ts))


def tags_of(params: Params) -> dict[str, str]:
    found: dict[str, str] = {}
    for tag in params.objects("Tag"):
        key = tag.get("Key")
        if not key:
            raise invalid_parameter("Tag.N.Key", "A tag key must not be empty.")
        found[key] = tag.get("Value", "")
    return found


def tag_set(values: dict[str, str]) -> dict[str, Any]:
    return {"Tag": [{"TagKey": k, "TagValue": v} for k, v in values.items()]}


def dry_run(params: Params) -> None:
    if params.bool("DryRun"):
        raise ApiError(
            "DryRunOperation", "Request validation has been passed with DryRun flag set.", 400
        )


def instance_ids_required() -> ApiError:
    return ApiError(
        "MissingParameter",
        'The input parameter "InstanceId" that is '
        "mandatory for processing this request is not supplied.",
        400,
    )
