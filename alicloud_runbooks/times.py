"""Alibaba's timestamps (`2026-12-02T03:12:32Z`, `…+08:00`, no zone meaning UTC) as datetimes,
and durations set in the environment."""

from __future__ import annotations

import os
from datetime import UTC, datetime


def parse_time(text: object) -> datetime | None:
    """An aware datetime, or None for anything that is not an ISO 8601 time."""
    if not isinstance(text, str) or not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def seconds_from_env(name: str, default: float) -> float:
    """A positive number of seconds from the environment variable `name`, else `default`;
    anything else is a clear error naming the variable."""
    text = os.environ.get(name, "")
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds (got {text!r})") from None
    if value <= 0:
        raise ValueError(f"{name} must be more than 0 seconds (got {text!r})")
    return value
