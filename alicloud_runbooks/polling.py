"""What a polling loop would have spent on the same run: the baseline the figures compare to.

A loop polls once at the start of each wait and then every `interval` seconds until the last
instance is done; each poll costs one Describe call per 50 instances (the page and id limits
of DescribeCloudAssistantStatus and DescribeInvocationResults).
"""

from __future__ import annotations

import math

from pydantic import BaseModel

from alicloud_runbooks.report import RunReport

IDS_PER_CALL = 50
DESCRIBE_ACTION = {
    "FirstHeartbeat": "DescribeCloudAssistantStatus",
    "TaskCompleted": "DescribeInvocationResults",
    "OutputDelivered": "DescribeInvocationResults",
}


class PollingEstimate(BaseModel):
    interval: float
    calls: dict[str, int]
    mean_notice_delay_seconds: float

    @property
    def total(self) -> int:
        return sum(self.calls.values())


def estimate(report: RunReport, interval: float = 5.0) -> PollingEstimate:
    calls: dict[str, int] = {}
    delays: list[float] = []
    for wait in report.waits:
        polls = math.ceil(wait.seconds / interval) + 1 if wait.seconds > 0 else 1
        per_poll = math.ceil(wait.instances / IDS_PER_CALL)
        action = DESCRIBE_ACTION.get(wait.name, wait.name)
        calls[action] = calls.get(action, 0) + polls * per_poll
        # Each event lands uniformly within a polling interval: on average half of it late.
        delays.append(interval / 2)
    mean = sum(delays) / len(delays) if delays else 0.0
    return PollingEstimate(interval=interval, calls=calls, mean_notice_delay_seconds=mean)
