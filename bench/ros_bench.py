"""alisim's ROS: a stack of a 50-instance InstanceGroup and a RunCommand on all of them.

alisim runs as its own process (`runbooks sim --zero-boot`) so its peak memory is its own.
The end of the stack is awaited on its `ros:Stack:StatusChange` event in alisim's event log
(`/_alisim/events`, not an API call), so the API calls counted are the stack's own.
Prints: time from CreateStack to CREATE_COMPLETE and to DELETE_COMPLETE, the API calls,
the stack events, alisim's peak RSS.
Usage: python -m bench.ros_bench [--instances N]
"""

from __future__ import annotations

import argparse
import os
import time

import httpx
from alibabacloud_ros20190910 import models as ros
from alibabacloud_ros20190910.client import Client as RosClient
from alibabacloud_tea_openapi.utils_models import Config

from alisim.config import DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET, DEFAULT_REGION
from alisim.server import free_port
from bench.alisim_bench import _peak_rss_mib, _start_alisim

REGION = DEFAULT_REGION
TEMPLATE = """
ROSTemplateFormatVersion: '2015-09-01'
Parameters:
  Amount:
    Type: Number
Resources:
  Fleet:
    Type: ALIYUN::ECS::InstanceGroup
    Properties:
      ImageId: aliyun_3_x64_20G_alibase_20240528.vhd
      InstanceType: ecs.g7.large
      MaxAmount: !Ref Amount
  Hello:
    Type: ALIYUN::ECS::RunCommand
    Properties:
      Type: RunShellScript
      Sync: true
      CommandContent: echo ok
      InstanceIds: !GetAtt Fleet.InstanceIds
Outputs:
  InstanceIds:
    Value: !GetAtt Fleet.InstanceIds
"""


def _status_event(url: str, stack_id: str, status: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while True:
        found = httpx.get(
            f"{url}/_alisim/events",
            params={"type": "ros:Stack:StatusChange", "contains": stack_id},
        ).json()["events"]
        if any(e["data"]["status"] == status for e in found):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {status} for {stack_id} after {timeout}s")
        time.sleep(0.01)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--instances", type=int, default=50)
    args = parser.parse_args()
    port = free_port()
    proc = _start_alisim(port)
    url = f"http://127.0.0.1:{port}"
    try:
        client = RosClient(
            Config(
                access_key_id=DEFAULT_ACCESS_KEY_ID,
                access_key_secret=DEFAULT_ACCESS_KEY_SECRET,
                region_id=REGION,
                endpoint=f"127.0.0.1:{port}",
                protocol="http",
            )
        )
        t0 = time.perf_counter()
        stack_id = client.create_stack(
            ros.CreateStackRequest(
                region_id=REGION,
                stack_name="bench",
                template_body=TEMPLATE,
                parameters=[
                    ros.CreateStackRequestParameters(
                        parameter_key="Amount", parameter_value=str(args.instances)
                    )
                ],
            )
        ).body.stack_id
        _status_event(url, stack_id, "CREATE_COMPLETE")
        t_create = time.perf_counter() - t0
        calls_create = httpx.get(f"{url}/_alisim/calls").json()
        stack = client.get_stack(ros.GetStackRequest(region_id=REGION, stack_id=stack_id)).body
        [ids] = [o["OutputValue"] for o in stack.outputs if o["OutputKey"] == "InstanceIds"]
        count = client.list_stack_events(
            ros.ListStackEventsRequest(region_id=REGION, stack_id=stack_id, page_size=1)
        ).body.total_count
        completed = httpx.get(
            f"{url}/_alisim/events",
            params={"type": "ecs:CloudAssistant:TaskCompleted", "limit": 10000},
        ).json()["events"]
        t1 = time.perf_counter()
        client.delete_stack(ros.DeleteStackRequest(region_id=REGION, stack_id=stack_id))
        _status_event(url, stack_id, "DELETE_COMPLETE")
        t_delete = time.perf_counter() - t1
        print(
            f"stack: InstanceGroup of {len(ids)} instances + RunCommand (Sync, 'echo ok'), "
            "zero boot time, 2 cores"
        )
        print(f"CreateStack to CREATE_COMPLETE: {t_create:.2f} s")
        print(f"DeleteStack to DELETE_COMPLETE: {t_delete:.2f} s")
        print(
            f"API calls to CREATE_COMPLETE: {calls_create['total']} {calls_create['calls']} "
            "(awaited on the StatusChange event, not by polling GetStack)"
        )
        print(f"stack events: {count}; TaskCompleted events: {len(completed)}")
        print(f"alisim peak memory (VmHWM): {_peak_rss_mib(proc.pid):.0f} MiB")
    finally:
        proc.terminate()
        proc.wait(timeout=15)


if __name__ == "__main__":
    os.environ.setdefault("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
    main()
