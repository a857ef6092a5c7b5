"""The polling baseline: `provision_and_run` as users write it today with the official SDKs.

Launch the instances (RunInstances, 100 a call), poll DescribeCloudAssistantStatus until every
agent is online, RunCommand with OSS output delivery, poll DescribeInvocationResults until
every instance has a final status and a final delivery status, read the outputs from OSS, and
delete the instances. Each loop sleeps between polls: a fixed interval (`fixed(5)`), or the
back-off of OOS `ACS::WaitFor` (`oos_backoff()`: 2, 4, 8 … s, capped at 300 s). Nothing here
is clever on purpose: it is the baseline the event runbook is compared with
(`bench/side_by_side.py`), and it runs against alisim or the real cloud alike.

Example:
    ```python
    from bench.polling_runbook import fixed, polling_provision_and_run

    figures = polling_provision_and_run(credentials, 2, "echo ok", "my-bucket", fixed(5))
    print(figures.outputs, figures.describe_calls)
    ```
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from itertools import count

from alibabacloud_ecs20140526 import models as ecs
from alibabacloud_ecs20140526.client import Client as EcsClient
from pydantic import BaseModel

from alicloud_runbooks.blocks import AlibabaCloudCredentials

IMAGE_ID = "aliyun_3_x64_20G_alibase_20240819.vhd"
INSTANCE_TYPE = "ecs.g7.large"
RUN_INSTANCES_MAX = 100
RUN_COMMAND_MAX = 100
STATUS_MAX = 50
PAGE_SIZE = 50
OOS_FIRST_DELAY = 2.0
OOS_MAX_DELAY = 300.0
FINAL_STATUSES = {"Success", "Failed", "Timeout", "Cancelled", "Terminated", "Invalid"}
FINAL_STATUSES |= {"Aborted", "Error"}
NO_OUTPUT = {"Invalid", "Aborted", "Cancelled"}
FINAL_DELIVERY = {"Finished", "Failed"}

Intervals = Callable[[], Iterator[float]]
"""A fresh sequence of sleeps for each loop."""


def fixed(seconds: float) -> Intervals:
    """Poll every `seconds`."""

    def intervals() -> Iterator[float]:
        while True:
            yield seconds

    return intervals


def oos_backoff(first: float = OOS_FIRST_DELAY, cap: float = OOS_MAX_DELAY) -> Intervals:
    """OOS `ACS::WaitFor`'s default retry delays: doubling from `first`, capped at `cap`."""

    def intervals() -> Iterator[float]:
        for n in count():
            yield min(first * 2**n, cap)

    return intervals


class PollingFigures(BaseModel):
    """What the loop saw, counted by the runbook itself (the bench measures from outside)."""

    instance_ids: list[str]
    statuses: dict[str, str]
    outputs: dict[str, str]
    describe_calls: dict[str, int]
    polls: dict[str, int]
    wall_seconds: float


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class _Poller:
    def __init__(self, client: EcsClient, region: str, intervals: Intervals) -> None:
        self.client = client
        self.region = region
        self.intervals = intervals
        self.describe_calls: dict[str, int] = {}
        self.polls: dict[str, int] = {}

    def count(self, action: str) -> None:
        self.describe_calls[action] = self.describe_calls.get(action, 0) + 1

    def until(self, name: str, done: Callable[[], bool]) -> None:
        """Poll `done` until it is true, sleeping the policy's intervals between polls."""
        sleeps = self.intervals()
        while True:
            self.polls[name] = self.polls.get(name, 0) + 1
            if done():
                return
            time.sleep(next(sleeps))

    def agents_online(self, ids: list[str]) -> bool:
        online: set[str] = set()
        for batch in _chunks(ids, STATUS_MAX):
            self.count("DescribeCloudAssistantStatus")
            body = self.client.describe_cloud_assistant_status(
                ecs.DescribeCloudAssistantStatusRequest(
                    region_id=self.region, instance_id=batch, max_results=STATUS_MAX
                )
            ).body
            rows = body.instance_cloud_assistant_status_set.instance_cloud_assistant_status
            online |= {r.instance_id for r in rows or [] if r.cloud_assistant_status == "true"}
        return online >= set(ids)

    def results(self, invoke_ids: list[str]) -> dict[str, tuple[str, str, str]]:
        """Instance id → (status, OSS delivery status, OSS URI), every page of every invocation."""
        found: dict[str, tuple[str, str, str]] = {}
        for invoke_id in invoke_ids:
            for page in count(1):
                self.count("DescribeInvocationResults")
                body = self.client.describe_invocation_results(
                    ecs.DescribeInvocationResultsRequest(
                        region_id=self.region,
                        invoke_id=invoke_id,
                        page_number=page,
                        page_size=PAGE_SIZE,
                    )
                ).body.invocation
                rows = body.invocation_results.invocation_result or []
                for r in rows:
                    found[r.instance_id] = (
                        r.invocation_status,
                        r.oss_output_status or "",
                        r.oss_output_uri or "",
                    )
                if page * PAGE_SIZE >= (body.total_count or 0) or not rows:
                    break
        return found


def _done(row: tuple[str, str, str]) -> bool:
    status, delivery, _ = row
    return status in FINAL_STATUSES and (status in NO_OUTPUT or delivery in FINAL_DELIVERY)


def polling_provision_and_run(
    credentials: AlibabaCloudCredentials,
    count_: int,
    script: str,
    bucket: str,
    intervals: Intervals,
    prefix: str = "polling",
    name: str = "polling-baseline",
) -> PollingFigures:
    """Launch, poll for the agents, run, poll for the results and deliveries, read, delete."""
    started = time.perf_counter()
    client = credentials.ecs_client()
    region = credentials.region_id
    poller = _Poller(client, region, intervals)
    ids: list[str] = []
    left = count_
    while left > 0:
        amount = min(left, RUN_INSTANCES_MAX)
        body = client.run_instances(
            ecs.RunInstancesRequest(
                region_id=region,
                image_id=IMAGE_ID,
                instance_type=INSTANCE_TYPE,
                amount=amount,
                instance_name=name,
            )
        ).body
        ids += body.instance_id_sets.instance_id_set
        left -= amount
    try:
        poller.until("agents", lambda: poller.agents_online(ids))
        invoke_ids = [
            client.run_command(
                ecs.RunCommandRequest(
                    region_id=region,
                    type="RunShellScript",
                    command_content=script,
                    content_encoding="PlainText",
                    instance_id=batch,
                    name=name,
                    timeout=60,
                    oss_output_delivery=f"oss://{bucket}/{prefix}",
                )
            ).body.invoke_id
            for batch in _chunks(ids, RUN_COMMAND_MAX)
        ]
        rows: dict[str, tuple[str, str, str]] = {}

        def finished() -> bool:
            rows.update(poller.results(invoke_ids))
            return len(rows) == len(ids) and all(_done(r) for r in rows.values())

        poller.until("results", finished)
        oss = credentials.oss_bucket(bucket)
        outputs: dict[str, str] = {}
        for instance_id, (_, delivery, uri) in rows.items():
            if delivery == "Finished" and uri:
                key = uri.removeprefix(f"oss://{bucket}/")
                outputs[instance_id] = oss.get_object(key).read().decode("utf-8", "replace")
    finally:
        for batch in _chunks(ids, RUN_INSTANCES_MAX):
            client.delete_instances(
                ecs.DeleteInstancesRequest(region_id=region, instance_id=batch, force=True)
            )
    return PollingFigures(
        instance_ids=ids,
        statuses={i: r[0] for i, r in rows.items()},
        outputs=outputs,
        describe_calls=poller.describe_calls,
        polls=poller.polls,
        wall_seconds=time.perf_counter() - started,
    )
