"""The product-neutral envelopes of alisim's events: CloudEvents 1.0 as EventBridge delivers
them, and CloudMonitor's notification time. Each service builds its own `data` and `subject`
(`alisim/ecs/events.py`, `alisim/cloud_assistant/events.py`) and publishes through
`Cloud.publish_event`.

**Time.** Alibaba's samples (`shared/reference/`) give the CloudEvents `time` in UTC+8 with a
`+08:00` offset and whole seconds (`2020-11-19T21:04:41+08:00`), and `aliyunpublishtime` in
UTC with `Z` (`2020-11-19T21:04:42Z`). alisim writes both so; the offset is `EVENT_TIME_ZONE`,
the precision is the `event_time_precision` setting (`seconds` by default, `milliseconds` to
keep sub-second order, as `zero_delay_settings` does).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from alisim import ids

EVENT_TIME_ZONE = dt.timezone(dt.timedelta(hours=8))
Precision = Literal["seconds", "milliseconds"]


def iso_utc(ts: float | None = None) -> str:
    """`2023-12-14T07:39:48Z`: the form of times inside event data and of STS `Expiration`."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts if ts is not None else time.time()))


def iso_utc_ms(ts: float) -> str:
    """`2023-12-14T07:39:48.123Z`: alisim's own logs (deliveries, dead letters)."""
    return publish_time(ts, "milliseconds")


def _timespec(precision: Precision) -> str:
    return "milliseconds" if precision == "milliseconds" else "seconds"


def event_time(ts: float, precision: Precision = "seconds") -> str:
    """CloudEvents `time`: `2020-11-19T21:04:41+08:00` (or `…41.123+08:00`)."""
    moment = dt.datetime.fromtimestamp(ts, EVENT_TIME_ZONE)
    return moment.isoformat(timespec=_timespec(precision))


def publish_time(ts: float, precision: Precision = "seconds") -> str:
    """`aliyunpublishtime`: `2020-11-19T21:04:42Z` (or `…42.179Z`)."""
    moment = dt.datetime.fromtimestamp(ts, dt.UTC)
    return moment.isoformat(timespec=_timespec(precision)).replace("+00:00", "Z")


def cloud_event(
    *,
    type: str,
    source: str,
    region: str,
    account_id: str,
    subject: str,
    data: dict[str, Any],
    at: float | None = None,
    precision: Precision = "seconds",
) -> dict[str, Any]:
    now = time.time()
    return {
        "id": ids.event_id(),
        "source": source,
        "specversion": "1.0",
        "subject": subject,
        "time": event_time(now if at is None else at, precision),
        "type": type,
        "datacontenttype": "application/json;charset=utf-8",
        "aliyunaccountid": account_id,
        "aliyunpublishtime": publish_time(now, precision),
        "aliyuneventbusname": "default",
        "aliyunregionid": region,
        "aliyunpublishaddr": "127.0.0.1",
        "data": data,
    }


def arn(service: str, region: str, account_id: str, resource: str) -> str:
    """`acs:ecs:cn-hangzhou:<account>:instance/i-…`: the subject of ECS's own events and the
    `resourceId` of CloudMonitor's notifications."""
    return f"acs:{service}:{region}:{account_id}:{resource}"


def source_subject(source: str, region: str, account_id: str, resource_id: str) -> str:
    """`acs.ecs:cn-hangzhou:<account>:<id>`: the subject form of the Cloud Assistant samples."""
    return f"{source}:{region}:{account_id}:{resource_id}"


def cloudmonitor_time(cloud_event: dict[str, Any]) -> str:
    """A CloudEvent's `time` as CloudMonitor writes it: `20181226T220114.058+0800` (UTC+8)."""
    raw = str(cloud_event.get("time", ""))
    try:
        moment = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        moment = dt.datetime.now(dt.UTC)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    local = moment.astimezone(EVENT_TIME_ZONE)
    return local.strftime("%Y%m%dT%H%M%S") + f".{local.microsecond // 1000:03d}+0800"


@dataclass(frozen=True)
class Notice:
    """A CloudMonitor notification and the fields subscriptions filter on."""

    product: str
    name: str
    document: dict[str, Any]


NoticeConverter = Callable[[dict[str, Any]], Notice]
"""Turns one CloudEvent type into its CloudMonitor notification (a service declares them)."""
