"""An ESTIMATE of what a polling loop would have spent on the same run, computed from the
run's waits (`runbooks demo` says so when it prints it). Polling runbooks that really run are
in `bench/polling_runbook.py`, measured by `bench/side_by_side.py`.

A loop polls once at the start of each wait and then every `interval` seconds until the last
instance is done; each poll costs one Describe call per 50 instances (the page and id limits
of DescribeCloudAssistantStatus and DescribeInvocationResults). It notices a wait's end at the
first poll after it, up to a whole interval late, and the next step starts only then.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, Field

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
    mean_notice_delay_seconds: float = Field(
        description="per wait, from its last event to the poll that sees it, averaged"
    )

    @property
    def total(self) -> int:
        return sum(self.calls.values())


def estimate(report: RunReport, interval: float = 5.0) -> PollingEstimate:
    calls: dict[str, int] = {}
    delays: list[float] = []
    for wait in report.waits:
        rounds = math.ceil(wait.seconds / interval)
        per_poll = math.ceil(wait.instances / IDS_PER_CALL)
        action = DESCRIBE_ACTION.get(wait.name, wait.name)
        calls[action] = calls.get(action, 0) + (rounds + 1) * per_poll
        delays.append(rounds * interval - wait.seconds)
    mean = sum(delays) / len(delays) if delays else 0.0
    return PollingEstimate(interval=interval, calls=calls, mean_notice_delay_seconds=mean)
