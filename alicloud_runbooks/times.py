"""Alibaba's timestamps (`2026-12-02T03:12:32Z`, `…+08:00`, no zone meaning UTC) as datetimes."""

from __future__ import annotations

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
