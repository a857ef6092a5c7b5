"""Cloud Assistant through the official SDK: commands really run, with their real statuses."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
from alibabacloud_ecs20140526 import models as ecs_models
from alibabacloud_ecs20140526.client import Client as EcsClient
from alibabacloud_tea_openapi import exceptions as sdk_errors

from alisim.config import DEFAULT_ACCOUNT_ID
from alisim.server import AlisimServer
from tests.helpers import events, patch_settings, wait_until

REGION = "cn-hangzhou"
LINUX_IMAGE = "aliyun_3_x64_20G_alibase_20240819.vhd"
WINDOWS_IMAGE = "win2022_21H2_x64_dtc_en-us_40G_alibase_20240816.vhd"
FINAL = {"Success", "Failed", "Timeout", "Cancelled", "Terminated", "Invalid", "Aborted", "Error"}
TASK_COMPLETED = "ecs:CloudAssistant:TaskCompleted"
OUTPUT_DELIVERED = "ecs:CloudAssistant:OutputDelivered"
INLINE_LIMIT = 24 * 1024


# ---------------------------------------------------------------- helpers
def booted_instances(
    client: EcsClient, sim: AlisimServer, amount: int = 1, image_id: str = LINUX_IMAGE
) -> list[str]:
    """Instances whose agent is online (DescribeCloudAssistantStatus says "true")."""
    body = client.run_instances(
        ecs_models.RunInstancesRequest(
            region_id=REGION, image_id=image_id, instance_type="ecs.g7.large", amount=amount
        )
    ).body
    ids = list(body.instance_id_sets.instance_id_set)

    def online() -> bool:
        found: set[str] = set()
        for start in range(0, len(ids), 50):
            rows = client.describe_cloud_assistant_status(
                ecs_models.DescribeCloudAssistantStatusRequest(
                    region_id=REGION, instance_id=ids[start : start + 50], max_results=50
                )
            ).body.instance_cloud_assistant_status_set.instance_cloud_assistant_status
            found |= {r.instance_id for r in rows if r.cloud_assistant_status == "true"}
        return found == set(ids)

    wait_until(online)
    return ids


def run(client: EcsClient, instance_ids: list[str], script: str, **fields: Any) -> str:
    fields.setdefault("type", "RunShellScript")
    body = client.run_command(
        ecs_models.RunCommandRequest(
            region_id=REGION, instance_id=instance_ids, command_content=script, **fields
        )
    ).body
    assert body.invoke_id.startswith("t-")
    assert body.command_id.startswith("c-")
    return body.invoke_id


def results(client: EcsClient, invoke_id: str, **fields: Any) -> list[Any]:
    fields.setdefault("max_results", 50)
    body = client.describe_invocation_results(
        ecs_models.DescribeInvocationResultsRequest(region_id=REGION, invoke_id=invoke_id, **fields)
    ).body
    return list(body.invocation.invocation_results.invocation_result)


def wait_final(client: EcsClient, invoke_id: str, timeout: float = 15.0, **fields: Any) -> list:
    def done() -> list[Any] | None:
        rows = results(client, invoke_id, **fields)
        return rows if rows and all(r.invocation_status in FINAL for r in rows) else None

    return wait_until(done, timeout)


def wait_status(client: EcsClient, invoke_id: str, status: str) -> None:
    wait_until(lambda: {r.invocation_status for r in results(client, invoke_id)} == {status})


def output_of(row: Any) -> bytes:
    return base64.b64decode(row.output)


def invocation(client: EcsClient, invoke_id: str, **fields: Any) -> Any:
    body = client.describe_invocations(
        ecs_models.DescribeInvocationsRequest(region_id=REGION, invoke_id=invoke_id, **fields)
    ).body
    [found] = body.invocations.invocation
    return found


def stop_instances(client: EcsClient, ids: list[str]) -> None:
    client.stop_instances(ecs_models.StopInstancesRequest(region_id=REGION, instance_id=ids))

    def stopped() -> bool:
        body = client.describe_instances(
            ecs_models.DescribeInstancesRequest(region_id=REGION, instance_ids=json.dumps(ids))
        ).body
        return {i.status for i in body.instances.instance} == {"Stopped"}

    wait_until(stopped)


@pytest.fixture
def instance(client: EcsClient, sim: AlisimServer) -> str:
    return booted_instances(client, sim)[0]


# ---------------------------------------------------------------- RunCommand basics
def test_run_command_plain_text(ecs: EcsClient, sim: AlisimServer) -> None:
    [instance] = booted_instances(ecs, sim)
    script = 'echo "hello world & more"; printf "%s\\n" "$HOME" >/dev/null; echo done'
    invoke_id = run(ecs, [instance], script, content_encoding="PlainText")
    [row] = wait_final(ecs, invoke_id)
    assert row.instance_id == instance
    assert row.invocation_status == "Success"
    assert row.invoke_record_status == "Finished"
    assert row.exit_code == 0
    assert row.dropped == 0
    assert row.error_code == ""
    assert output_of(row) == b"hello world & more\ndone\n"
    assert row.start_time and row.finished_time

    [plain] = results(ecs, invoke_id, content_encoding="PlainText")
    assert plain.output == "hello world & more\ndone\n"


def test_run_command_base64_content(ecs: EcsClient, sim: AlisimServer) -> None:
    [instance] = booted_instances(ecs, sim)
    script = "echo 'base64 über alles'\nexit 0\n"
    invoke_id = run(
        ecs,
        [instance],
        base64.b64encode(script.encode()).decode(),
        content_encoding="Base64",
    )
    [row] = wait_final(ecs, invoke_id)
    assert row.invocation_status == "Success"
    assert output_of(row).decode() == "base64 über alles\n"


def test_run_command_invalid_base64_is_rejected(client: EcsClient, instance: str) -> None:
    with pytest.raises(sdk_errors.ClientException) as info:
        run(client, [instance], "not base64 at all!", content_encoding="Base64")
    assert info.value.code == "InvalidCmdContent.Base64"


def test_run_command_nonzero_exit_is_failed(client: EcsClient, instance: str) -> None:
    invoke_id = run(client, [instance], "echo partial; exit 3")
    [row] = wait_final(client, invoke_id)
    assert row.invocation_status == "Failed"
    assert row.exit_code == 3
    assert row.error_code == "ExitCodeNonzero"
    assert output_of(row) == b"partial\n"
    assert invocation(client, invoke_id).invocation_status == "Failed"


def test_working_dir_is_inside_the_instance(
    client: EcsClient, sim: AlisimServer, instance: str
) -> None:
    # The default is root's home, /root.
    [row] = wait_final(client, run(client, [instance], "pwd; mkdir -p app/logs; echo x > app/m"))
    assert row.invocation_status == "Success"
    default_dir = output_of(row).decode().strip()
    assert default_dir.endswith("/root")

    invoke_id = run(client, [instance], "pwd; cat ../m", working_dir="/root/app/logs")
    [row] = wait_final(client, invoke_id)
    assert row.invocation_status == "Success"
    assert output_of(row).decode() == f"{default_dir}/app/logs\nx\n"
    assert invocation(client, invoke_id).working_dir == "/root/app/logs"

    # Another instance has its own filesystem: the directory does not exist there.
    [other] = booted_instances(client, sim)
    [row] = wait_final(client, run(client, [other], "pwd", working_dir="/root/app/logs"))
    assert row.invocation_status == "Failed"
    assert row.error_code == "DirectoryNotExists"


def test_missing_working_dir_fails(client: EcsClient, instance: str) -> None:
    invoke_id = run(client, [instance], "echo never", working_dir="/no/such/dir")
    [row] = wait_final(client, invoke_id)
    assert row.invocation_status == "Failed"
    assert row.error_code == "DirectoryNotExists"
    assert output_of(row) == b""


def test_parameters_are_substituted(ecs: EcsClient, sim: AlisimServer) -> None:
    [instance] = booted_instances(ecs, sim)
    script = 'echo "hello {{ name }} from {{ACS::InstanceId}} in {{ACS::RegionId}}"'
    invoke_id = run(
        ecs,
        [instance],
        script,
        enable_parameter=True,
        parameters={"name": "Jack O'Neil"},
    )
    [row] = wait_final(ecs, invoke_id)
    assert row.invocation_status == "Success"
    assert output_of(row).decode() == f"hello Jack O'Neil from {instance} in {REGION}\n"
    assert json.loads(invocation(ecs, invoke_id).parameters) == {"name": "Jack O'Neil"}


def test_missing_parameter_is_invalid(client: EcsClient, instance: str, sim: AlisimServer) -> None:
    invoke_id = run(
        client,
        [instance],
        "echo {{first}} {{second}}",
        enable_parameter=True,
        parameters={"first": "1"},
    )
    [row] = wait_final(client, invoke_id)
    assert row.invocation_status == "Invalid"
    assert row.error_code
    assert row.output == ""
    [event] = wait_until(lambda: events(sim, TASK_COMPLETED, invoke_id))
    assert event["data"]["invocationStatus"] == "Invalid"
    assert event["data"]["repeats"] == "0"


def test_undefined_parameter_is_rejected(client: EcsClient, instance: str) -> None:
    with pytest.raises(sdk_errors.ClientException) as info:
        run(client, [instance], "echo {{a}}", enable_parameter=True, parameters={"b": "x"})
    assert info.value.code == "InvalidParameter.Parameters"


def test_timeout(client: EcsClient, instance: str) -> None:
    started = time.monotonic()
    invoke_id = run(client, [instance], "echo before; sleep 30; echo after", timeout=1)
    [row] = wait_final(client, invoke_id)
    assert time.monotonic() - started < 10
    assert row.invocation_status == "Timeout"
    assert row.error_code == "ExecutionTimeout"
    assert output_of(row) == b"before\n"
    assert invocation(client, invoke_id).timeout == 1


def test_stop_invocation_while_running_is_terminated(ecs: EcsClient, sim: AlisimServer) -> None:
    [instance] = booted_instances(ecs, sim)
    invoke_id = run(ecs, [instance], "echo started; sleep 30")
    wait_status(ecs, invoke_id, "Running")
    ecs.stop_invocation(ecs_models.StopInvocationRequest(region_id=REGION, invoke_id=invoke_id))
    [row] = wait_final(ecs, invoke_id)
    assert row.invocation_status == "Terminated"
    assert row.invoke_record_status == "Stopped"
    assert output_of(row) == b"started\n"
    assert invocation(ecs, invoke_id).invocation_status == "Stopped"
    [event] = wait_until(lambda: events(sim, TASK_COMPLETED, invoke_id))
    assert event["data"]["invocationStatus"] == "Terminated"


def test_stop_invocation_while_queued_is_cancelled(client: EcsClient, sim: AlisimServer) -> None:
    patch_settings(sim, max_concurrent_commands=1)
    first, second = booted_instances(client, sim, amount=2)
    long_id = run(client, [first], "sleep 30")
    wait_status(client, long_id, "Running")
    queued_id = run(client, [second], "echo should-not-run")
    # It cannot start while the only slot is taken.
    assert {r.invocation_status for r in results(client, queued_id)} == {"Pending"}

    client.stop_invocation(ecs_models.StopInvocationRequest(region_id=REGION, invoke_id=queued_id))
    [row] = wait_final(client, queued_id)
    assert row.invocation_status == "Cancelled"
    assert row.output == ""
    assert {r.invocation_status for r in results(client, long_id)} == {"Running"}

    client.stop_invocation(
        ecs_models.StopInvocationRequest(region_id=REGION, invoke_id=long_id, instance_id=[first])
    )
    [row] = wait_final(client, long_id)
    assert row.invocation_status == "Terminated"


def test_stopped_instance_is_aborted(client: EcsClient, sim: AlisimServer) -> None:
    running, stopped = booted_instances(client, sim, amount=2)
    stop_instances(client, [stopped])
    invoke_id = run(client, [running, stopped], "echo hi")
    rows = {r.instance_id: r for r in wait_final(client, invoke_id)}
    assert rows[running].invocation_status == "Success"
    assert rows[stopped].invocation_status == "Aborted"
    assert rows[stopped].error_code == "InstanceNotRunning"
    assert invocation(client, invoke_id).invocation_status == "PartialFailed"


def test_windows_instance_with_shell_script_is_invalid(
    client: EcsClient, sim: AlisimServer
) -> None:
    [windows] = booted_instances(client, sim, image_id=WINDOWS_IMAGE)
    [row] = wait_final(client, run(client, [windows], "echo hi"))
    assert row.invocation_status == "Invalid"
    assert row.error_code == "CommandNotApplicable"


def test_more_than_100_instances_is_rejected(client: EcsClient, sim: AlisimServer) -> None:
    ids: list[str] = []
    for amount in (100, 1):  # RunInstances creates at most 100 per call
        ids += client.run_instances(
            ecs_models.RunInstancesRequest(
                region_id=REGION, image_id=LINUX_IMAGE, instance_type="ecs.g7.large", amount=amount
            )
        ).body.instance_id_sets.instance_id_set
    assert len(ids) == 101
    with pytest.raises(sdk_errors.ClientException) as info:
        run(client, ids, "echo hi")
    assert info.value.code == "InvalidParameter.InstanceIds"
    assert (
        client.describe_invocations(
            ecs_models.DescribeInvocationsRequest(region_id=REGION)
        ).body.invocations.invocation
        == []
    )


def test_unknown_instance_is_rejected(client: EcsClient) -> None:
    with pytest.raises(sdk_errors.ClientException) as info:
        run(client, ["i-bp1doesnotexist0000"], "echo hi")
    assert info.value.code == "InvalidInstanceId.NotFound"


def test_old_agent_still_runs_commands(client: EcsClient, sim: AlisimServer) -> None:
    """An agent too old for FirstHeartbeat events is still online and runs commands."""
    patch_settings(sim, agent_versions={"linux": "1.0.2.500"})
    [instance] = booted_instances(client, sim)
    [row] = wait_final(client, run(client, [instance], "echo old agent"))
    assert row.invocation_status == "Success"
    assert output_of(row) == b"old agent\n"
    assert events(sim, "ecs:CloudAssistant:FirstHeartbeat", instance) == []


# ---------------------------------------------------------------- output
BIG_OUTPUT = "head -c 30000 /dev/zero | tr '\\0' 'a'; printf 'END'"


def test_output_over_24kb_is_cut_inline(client: EcsClient, instance: str) -> None:
    [row] = wait_final(client, run(client, [instance], BIG_OUTPUT))
    assert row.invocation_status == "Success"
    inline = output_of(row)
    assert len(inline) == INLINE_LIMIT
    assert inline == b"a" * INLINE_LIMIT
    assert row.dropped == 30003 - INLINE_LIMIT
    assert row.oss_output_status in ("", None)


def test_output_delivered_to_oss(ecs: EcsClient, sim: AlisimServer) -> None:
    sim.cloud.oss.create_bucket("cmd-output")
    instances = booted_instances(ecs, sim, amount=2)
    invoke_id = run(ecs, instances, BIG_OUTPUT, oss_output_delivery="oss://cmd-output/runs/a")

    def delivered() -> list[Any] | None:
        rows = wait_final(ecs, invoke_id)
        return rows if all(r.oss_output_status not in ("", "InProgress") for r in rows) else None

    rows = wait_until(delivered)
    for row in rows:
        assert row.invocation_status == "Success"
        assert row.oss_output_delivery == "oss://cmd-output/runs/a"
        assert row.oss_output_status == "Finished"
        assert row.oss_output_uri.startswith("oss://cmd-output/runs/a/")
        assert row.dropped == 30003 - INLINE_LIMIT
        key = row.oss_output_uri.removeprefix("oss://cmd-output/")
        data = sim.cloud.oss.get_object("cmd-output", key).data
        assert data == b"a" * 30000 + b"END"
    assert len({r.oss_output_uri for r in rows}) == 2

    inv = invocation(ecs, invoke_id)
    assert inv.oss_output_delivery == "oss://cmd-output/runs/a"
    shown = {i.instance_id: i for i in inv.invoke_instances.invoke_instance}
    assert {i.oss_output_status for i in shown.values()} == {"Finished"}
    assert {i.oss_output_uri for i in shown.values()} == {r.oss_output_uri for r in rows}

    delivered_events = wait_until(
        lambda: (found := events(sim, OUTPUT_DELIVERED, invoke_id)) and len(found) == 2 and found
    )
    for event in delivered_events:
        data = event["data"]
        assert data["status"] == "Finished"
        assert data["invokeId"] == invoke_id
        assert data["instanceId"] in instances
        assert data["ossOutputDelivery"] == "oss://cmd-output/runs/a"
        assert (
            data["ossOutputUri"]
            == {r.instance_id: r.oss_output_uri for r in rows}[data["instanceId"]]
        )
        assert "errorCode" not in data


def test_output_delivery_to_missing_bucket_fails(client: EcsClient, sim: AlisimServer) -> None:
    [instance] = booted_instances(client, sim)
    invoke_id = run(client, [instance], "echo lost", oss_output_delivery="oss://no-such-bucket")

    def delivered() -> Any:
        [row] = wait_final(client, invoke_id)
        return row if row.oss_output_status not in ("", "InProgress") else None

    row = wait_until(delivered)
    assert row.invocation_status == "Success"
    assert output_of(row) == b"lost\n"
    assert row.oss_output_status == "Failed"
    assert row.oss_output_error_code == "NoSuchBucket"
    assert row.oss_output_uri == ""
    [event] = wait_until(lambda: events(sim, OUTPUT_DELIVERED, invoke_id))
    assert event["data"]["status"] == "Failed"
    assert event["data"]["errorCode"] == "NoSuchBucket"
    assert event["data"]["statusCode"] == "404"


def test_bad_oss_output_delivery_is_rejected(client: EcsClient, instance: str) -> None:
    with pytest.raises(sdk_errors.ClientException) as info:
        run(client, [instance], "echo x", oss_output_delivery="s3://bucket/prefix")
    assert info.value.code == "InvalidParameter.OssOutputDelivery"


# ---------------------------------------------------------------- idempotency
def test_run_command_client_token(client: EcsClient, sim: AlisimServer, instance: str) -> None:
    token = "run-command-token-1"
    first = run(client, [instance], "echo once", client_token=token)
    again = run(client, [instance], "echo once", client_token=token)
    assert again == first
    wait_final(client, first)
    body = client.describe_invocations(ecs_models.DescribeInvocationsRequest(region_id=REGION))
    assert [i.invoke_id for i in body.body.invocations.invocation] == [first]
    assert len(events(sim, TASK_COMPLETED)) == 1

    with pytest.raises(sdk_errors.ClientException) as info:
        run(client, [instance], "echo twice", client_token=token)
    assert info.value.code == "IdempotentParameterMismatch"


# ---------------------------------------------------------------- commands
def test_create_invoke_describe_delete_command(ecs: EcsClient, sim: AlisimServer) -> None:
    instances = booted_instances(ecs, sim, amount=2)
    script = "echo {{greeting}} $(basename $(pwd))"
    command_id = ecs.create_command(
        ecs_models.CreateCommandRequest(
            region_id=REGION,
            name="greet",
            type="RunShellScript",
            command_content=base64.b64encode(script.encode()).decode(),
            description="says hello",
            enable_parameter=True,
            timeout=30,
            working_dir="/root",
        )
    ).body.command_id
    assert command_id.startswith("c-")

    body = ecs.describe_commands(
        ecs_models.DescribeCommandsRequest(region_id=REGION, command_id=command_id)
    ).body
    [command] = body.commands.command
    assert command.name == "greet"
    assert command.type == "RunShellScript"
    assert base64.b64decode(command.command_content).decode() == script
    assert command.enable_parameter is True
    assert list(command.parameter_names.parameter_name) == ["greeting"]
    assert command.timeout == 30
    assert command.working_dir == "/root"
    assert command.invoke_times == 0

    invoke_id = ecs.invoke_command(
        ecs_models.InvokeCommandRequest(
            region_id=REGION,
            command_id=command_id,
            instance_id=instances,
            parameters={"greeting": "hi"},
        )
    ).body.invoke_id
    rows = wait_final(ecs, invoke_id)
    assert {r.instance_id for r in rows} == set(instances)
    assert {r.invocation_status for r in rows} == {"Success"}
    assert {output_of(r) for r in rows} == {b"hi root\n"}
    assert {r.command_id for r in rows} == {command_id}

    [command] = ecs.describe_commands(
        ecs_models.DescribeCommandsRequest(region_id=REGION, name="gre*")
    ).body.commands.command
    assert command.invoke_times == 1

    ecs.delete_command(ecs_models.DeleteCommandRequest(region_id=REGION, command_id=command_id))
    body = ecs.describe_commands(ecs_models.DescribeCommandsRequest(region_id=REGION)).body
    assert body.commands.command == []
    assert body.total_count == 0
    with pytest.raises(sdk_errors.ClientException) as info:
        ecs.invoke_command(
            ecs_models.InvokeCommandRequest(
                region_id=REGION, command_id=command_id, instance_id=instances
            )
        )
    assert info.value.code == "InvalidCmdId.NotFound"


def test_run_command_keep_command(client: EcsClient, instance: str) -> None:
    run(client, [instance], "echo gone", name="throwaway")
    run(client, [instance], "echo kept", name="kept", keep_command=True)
    commands = client.describe_commands(
        ecs_models.DescribeCommandsRequest(region_id=REGION)
    ).body.commands.command
    assert [c.name for c in commands] == ["kept"]


def test_invoke_command_client_token(client: EcsClient, instance: str) -> None:
    command_id = client.create_command(
        ecs_models.CreateCommandRequest(
            region_id=REGION,
            name="t",
            type="RunShellScript",
            command_content=base64.b64encode(b"echo t").decode(),
        )
    ).body.command_id
    request = ecs_models.InvokeCommandRequest(
        region_id=REGION, command_id=command_id, instance_id=[instance], client_token="inv-tok"
    )
    first = client.invoke_command(request).body.invoke_id
    assert client.invoke_command(request).body.invoke_id == first
    request.timeout = 5
    with pytest.raises(sdk_errors.ClientException) as info:
        client.invoke_command(request)
    assert info.value.code == "IdempotentParameterMismatch"


# ---------------------------------------------------------------- Describe APIs
def test_describe_invocations_aggregate_status(ecs: EcsClient, sim: AlisimServer) -> None:
    a, b = booted_instances(ecs, sim, amount=2)
    ok = run(ecs, [a, b], "echo ok")
    bad = run(ecs, [a, b], "exit 7")
    script = f'test "{{{{ACS::InstanceId}}}}" = "{a}"'
    partial = run(ecs, [a, b], script, enable_parameter=True)
    for invoke_id in (ok, bad, partial):
        wait_final(ecs, invoke_id)

    assert invocation(ecs, ok).invocation_status == "Success"
    assert invocation(ecs, bad).invocation_status == "Failed"
    inv = invocation(ecs, partial, include_output=True, content_encoding="PlainText")
    assert inv.invocation_status == "PartialFailed"
    assert inv.command_type == "RunShellScript"
    assert inv.command_content == script
    assert inv.repeat_mode == "Once"
    per_instance = {i.instance_id: i for i in inv.invoke_instances.invoke_instance}
    assert set(per_instance) == {a, b}
    assert per_instance[a].invocation_status == "Success"
    assert per_instance[a].exit_code == 0
    assert per_instance[b].invocation_status == "Failed"
    assert per_instance[b].exit_code == 1
    assert per_instance[b].instance_invoke_status == "Failed"
    assert per_instance[b].output == ""

    listed = ecs.describe_invocations(
        ecs_models.DescribeInvocationsRequest(region_id=REGION, invoke_status="Failed")
    ).body.invocations.invocation
    assert [i.invoke_id for i in listed] == [bad]
    listed = ecs.describe_invocations(
        ecs_models.DescribeInvocationsRequest(region_id=REGION, instance_id=a)
    ).body
    assert listed.total_count == 3
    # Newest first.
    assert [i.invoke_id for i in listed.invocations.invocation] == [partial, bad, ok]


def test_describe_invocation_results_paging(ecs: EcsClient, sim: AlisimServer) -> None:
    instances = booted_instances(ecs, sim, amount=5)
    invoke_id = run(ecs, instances, 'echo "{{ACS::InstanceId}}"', enable_parameter=True)
    wait_final(ecs, invoke_id)

    seen: dict[str, bytes] = {}
    for page_number in (1, 2, 3):
        body = ecs.describe_invocation_results(
            ecs_models.DescribeInvocationResultsRequest(
                region_id=REGION, invoke_id=invoke_id, page_number=page_number, page_size=2
            )
        ).body.invocation
        assert body.total_count == 5
        seen |= {r.instance_id: output_of(r) for r in body.invocation_results.invocation_result}
    assert seen == {i: f"{i}\n".encode() for i in instances}

    token, pages, by_token = None, 0, []
    while True:
        body = ecs.describe_invocation_results(
            ecs_models.DescribeInvocationResultsRequest(
                region_id=REGION, invoke_id=invoke_id, max_results=2, next_token=token
            )
        ).body.invocation
        pages += 1
        by_token += [r.instance_id for r in body.invocation_results.invocation_result]
        token = body.next_token
        if not token:
            break
    assert pages == 3
    assert sorted(by_token) == sorted(instances)

    [one] = results(ecs, invoke_id, instance_id=instances[3], content_encoding="PlainText")
    assert one.output == f"{instances[3]}\n"


def test_unknown_invoke_id(client: EcsClient) -> None:
    with pytest.raises(sdk_errors.ClientException) as info:
        results(client, "t-hz0doesnotexist00")
    assert info.value.code == "InvalidInvokeId.NotFound"
    with pytest.raises(sdk_errors.ClientException) as info:
        client.stop_invocation(
            ecs_models.StopInvocationRequest(region_id=REGION, invoke_id="t-hz0doesnotexist00")
        )
    assert info.value.code == "InvalidInvokeId.NotFound"


# ---------------------------------------------------------------- TaskCompleted events
def test_task_completed_events(client: EcsClient, sim: AlisimServer) -> None:
    instances = booted_instances(client, sim, amount=3)
    invoke_id = run(client, instances, "echo hi; exit 2", name="exit-two")
    rows = {r.instance_id: r for r in wait_final(client, invoke_id)}

    found = wait_until(lambda: (e := events(sim, TASK_COMPLETED, invoke_id)) and len(e) == 3 and e)
    assert len({e["id"] for e in found}) == 3
    assert {e["data"]["instanceId"] for e in found} == set(instances)
    for event in found:
        assert event["specversion"] == "1.0"
        assert event["source"] == "acs.ecs"
        assert event["type"] == TASK_COMPLETED
        assert event["aliyunregionid"] == REGION
        data = event["data"]
        assert data["invokeId"] == invoke_id
        assert data["commandId"] == rows[data["instanceId"]].command_id
        assert data["commandName"] == "exit-two"
        assert data["invocationStatus"] == "Failed"
        assert data["exitCode"] == "2"
        assert data["repeatMode"] == "Once"
        assert data["repeats"] == "1"
        assert data["errorCode"] == "ExitCodeNonzero"
        assert all(isinstance(v, str) for v in data.values())
        for field in ("startTime", "finishTime"):
            time.strptime(data[field], "%Y-%m-%dT%H:%M:%SZ")
        assert event["subject"] == f"acs.ecs:{REGION}:{DEFAULT_ACCOUNT_ID}:{invoke_id}"

    # No more events arrive for a finished invocation: one per instance, exactly.
    run_after = run(client, instances[:1], "echo later")
    wait_until(lambda: events(sim, TASK_COMPLETED, run_after))
    assert len(events(sim, TASK_COMPLETED, invoke_id)) == 3


def test_task_completed_success_event(client: EcsClient, sim: AlisimServer, instance: str) -> None:
    invoke_id = run(client, [instance], "echo ok")
    [event] = wait_until(lambda: events(sim, TASK_COMPLETED, invoke_id))
    data = event["data"]
    assert data["invocationStatus"] == "Success"
    assert data["exitCode"] == "0"
    assert data["errorCode"] == "0"
    assert data["instanceId"] == instance


# ---------------------------------------------------------------- encodings and agent presence
def test_content_encoding_of_describe_apis(ecs: EcsClient, sim: AlisimServer) -> None:
    [instance] = booted_instances(ecs, sim)
    script = "echo 'plain & simple'"
    invoke_id = run(ecs, [instance], script, name="enc", keep_command=True)
    wait_final(ecs, invoke_id)

    [command] = ecs.describe_commands(
        ecs_models.DescribeCommandsRequest(region_id=REGION, content_encoding="PlainText")
    ).body.commands.command
    assert command.command_content == script
    [command] = ecs.describe_commands(
        ecs_models.DescribeCommandsRequest(region_id=REGION)
    ).body.commands.command
    assert base64.b64decode(command.command_content).decode() == script

    inv = invocation(ecs, invoke_id)
    assert base64.b64decode(inv.command_content).decode() == script
    # Without IncludeOutput the per-instance output is left out.
    assert inv.invoke_instances.invoke_instance[0].output is None
    inv = invocation(ecs, invoke_id, include_output=True)
    assert base64.b64decode(inv.invoke_instances.invoke_instance[0].output) == b"plain & simple\n"


def test_invalid_content_encoding_falls_back_to_default(client: EcsClient, instance: str) -> None:
    # RunCommand: an invalid value is processed as PlainText (documented).
    [row] = wait_final(client, run(client, [instance], "echo fallback", content_encoding="Hex"))
    assert row.invocation_status == "Success"
    assert output_of(row) == b"fallback\n"
    # CreateCommand: an invalid value is treated as Base64 (documented).
    command_id = client.create_command(
        ecs_models.CreateCommandRequest(
            region_id=REGION,
            name="b64",
            type="RunShellScript",
            command_content=base64.b64encode(b"echo decoded").decode(),
            content_encoding="Hex",
        )
    ).body.command_id
    invoke_id = client.invoke_command(
        ecs_models.InvokeCommandRequest(
            region_id=REGION, command_id=command_id, instance_id=[instance]
        )
    ).body.invoke_id
    [row] = wait_final(client, invoke_id)
    assert output_of(row) == b"decoded\n"


def test_command_waits_for_the_agent(client: EcsClient, sim: AlisimServer) -> None:
    """A Running instance whose agent is not up yet gets the command once the agent is up."""
    patch_settings(sim, boot_time_linux={"min_seconds": 0.5, "max_seconds": 0.5})
    [instance] = client.run_instances(
        ecs_models.RunInstancesRequest(
            region_id=REGION, image_id=LINUX_IMAGE, instance_type="ecs.g7.large"
        )
    ).body.instance_id_sets.instance_id_set

    def running() -> bool:
        body = client.describe_instances(
            ecs_models.DescribeInstancesRequest(
                region_id=REGION, instance_ids=json.dumps([instance])
            )
        ).body
        return body.instances.instance[0].status == "Running"

    wait_until(running)
    invoke_id = run(client, [instance], "echo after boot")
    [row] = wait_final(client, invoke_id)
    assert row.invocation_status == "Success"
    assert events(sim, "ecs:CloudAssistant:FirstHeartbeat", instance)


def test_command_aborted_when_agent_never_comes_up(client: EcsClient, sim: AlisimServer) -> None:
    patch_settings(
        sim, boot_time_linux={"min_seconds": 60, "max_seconds": 60}, send_window_seconds=0.3
    )
    [instance] = client.run_instances(
        ecs_models.RunInstancesRequest(
            region_id=REGION, image_id=LINUX_IMAGE, instance_type="ecs.g7.large"
        )
    ).body.instance_id_sets.instance_id_set

    def running() -> bool:
        body = client.describe_instances(
            ecs_models.DescribeInstancesRequest(
                region_id=REGION, instance_ids=json.dumps([instance])
            )
        ).body
        return body.instances.instance[0].status == "Running"

    wait_until(running)
    [row] = wait_final(client, run(client, [instance], "echo never"))
    assert row.invocation_status == "Aborted"
    assert row.error_code == "DeliveryTimeout"
    [event] = wait_until(lambda: events(sim, TASK_COMPLETED, instance))
    assert event["data"]["invocationStatus"] == "Aborted"


def test_active_task_count(client: EcsClient, instance: str) -> None:
    invoke_id = run(client, [instance], "sleep 30")
    wait_status(client, invoke_id, "Running")

    def status() -> Any:
        return client.describe_cloud_assistant_status(
            ecs_models.DescribeCloudAssistantStatusRequest(region_id=REGION, instance_id=[instance])
        ).body.instance_cloud_assistant_status_set.instance_cloud_assistant_status[0]

    assert status().active_task_count == 1
    assert status().invocation_count == 1
    client.stop_invocation(ecs_models.StopInvocationRequest(region_id=REGION, invoke_id=invoke_id))
    wait_final(client, invoke_id)
    assert status().active_task_count == 0
    assert status().last_invoked_time


def test_describe_invocation_results_status_filter(client: EcsClient, sim: AlisimServer) -> None:
    a, b = booted_instances(client, sim, amount=2)
    invoke_id = run(
        client, [a, b], f'test "{{{{ACS::InstanceId}}}}" = "{a}"', enable_parameter=True
    )
    wait_final(client, invoke_id)
    # Both vocabularies of the documented values: Finished (older) and Success.
    for status, expected in (("Finished", [a]), ("Success", [a]), ("Failed", [b])):
        rows = results(client, invoke_id, invoke_record_status=status)
        assert [r.instance_id for r in rows] == expected, status
    assert results(client, invoke_id, invoke_record_status="Running") == []
