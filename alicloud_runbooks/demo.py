"""The demo: alisim embedded, two instances launched, a real script run, output read back
from the API (inline, cut at 24 KB) and from OSS (whole), through the official SDKs only.

Until the event-driven runbook lands, the waits here read the Describe APIs; the demo
prints the calls it spent so the later event-driven version has a baseline.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable

import httpx
from alibabacloud_ecs20140526 import models as ecs

from alicloud_runbooks.clients import Endpoint, ecs_client, oss_bucket
from alisim.config import (
    DEFAULT_ACCESS_KEY_ID,
    DEFAULT_ACCESS_KEY_SECRET,
    Settings,
)
from alisim.server import AlisimServer

BUCKET = "runbooks-demo"
SCRIPT = """\
echo "hello from instance $INSTANCE_ID"
uname -sr
echo "working dir: $(pwd)"
i=0; while [ $i -lt 3000 ]; do echo "line $i of a long report"; i=$((i+1)); done
echo "done"
"""


def _wait(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.2)


def run_demo(instances: int = 2) -> int:
    settings = Settings(time_scale=0.05)
    with AlisimServer(settings) as sim:
        region = settings.region
        endpoint = Endpoint(openapi=sim.endpoint, oss=sim.endpoint, protocol="http")
        keys = {
            "access_key_id": DEFAULT_ACCESS_KEY_ID,
            "access_key_secret": DEFAULT_ACCESS_KEY_SECRET,
        }
        client = ecs_client(region=region, endpoint=endpoint, **keys)
        bucket = oss_bucket(region=region, endpoint=endpoint, bucket=BUCKET, **keys)
        print(f"alisim running at {sim.url} (region {region}, boot times scaled x0.05)")
        bucket.create_bucket()

        started = time.monotonic()
        launched = client.run_instances(
            ecs.RunInstancesRequest(
                region_id=region,
                image_id="aliyun_3_x64_20G_alibase_20240819.vhd",
                instance_type="ecs.g7.large",
                amount=instances,
                instance_name="demo",
                tag=[ecs.RunInstancesRequestTag(key="runbook", value="demo")],
            )
        )
        ids = launched.body.instance_id_sets.instance_id_set
        print(f"launched {len(ids)} instances: {', '.join(ids)}")

        def agents_up() -> bool:
            status = client.describe_cloud_assistant_status(
                ecs.DescribeCloudAssistantStatusRequest(region_id=region, instance_id=ids)
            ).body.instance_cloud_assistant_status_set.instance_cloud_assistant_status
            return len(status) == len(ids) and all(
                s.cloud_assistant_status == "true" for s in status
            )

        _wait("the Cloud Assistant agents", agents_up)
        print(f"agents online after {time.monotonic() - started:.1f}s")

        run = client.run_command(
            ecs.RunCommandRequest(
                region_id=region,
                type="RunShellScript",
                command_content=SCRIPT,
                instance_id=ids,
                timeout=60,
                name="demo-report",
                oss_output_delivery=f"oss://{BUCKET}/runbooks",
            )
        ).body
        print(f"RunCommand: invocation {run.invoke_id}")

        def results() -> list[
            ecs.DescribeInvocationResultsResponseBodyInvocationInvocationResultsInvocationResult
        ]:
            return client.describe_invocation_results(
                ecs.DescribeInvocationResultsRequest(region_id=region, invoke_id=run.invoke_id)
            ).body.invocation.invocation_results.invocation_result

        _wait(
            "the command and its OSS delivery",
            lambda: all(r.oss_output_status in ("Finished", "Failed") for r in results()),
        )
        for result in results():
            inline = base64.b64decode(result.output).decode()
            print(
                f"\n== {result.instance_id}: {result.invocation_status}, "
                f"exit code {result.exit_code}"
            )
            print(
                f"   inline output: {len(inline)} bytes, {result.dropped} bytes dropped "
                "(the API keeps 24 KB)"
            )
            print("   " + "\n   ".join(inline.splitlines()[:3]))
            key = result.oss_output_uri.removeprefix(f"oss://{BUCKET}/")
            full = bucket.get_object(key).read().decode()
            print(
                f"   full output from {result.oss_output_uri}: {len(full)} bytes, "
                f"last line {full.splitlines()[-1]!r}"
            )

        calls = httpx.get(f"{sim.url}/_alisim/calls").json()
        print(f"\nAPI calls spent: {calls['total']} {calls['calls']}")
        client.delete_instances(
            ecs.DeleteInstancesRequest(region_id=region, instance_id=ids, force=True)
        )
        print(f"deleted the instances; demo took {time.monotonic() - started:.1f}s")
    return 0
