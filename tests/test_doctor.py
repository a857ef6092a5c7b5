"""`runbooks doctor` against a whole local stack (the official SDKs on alisim, the relay, a
real Prefect server): healthy, and with each broken piece giving its ✗ line and exit 1."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from typing import Any

from alibabacloud_eventbridge20200401 import models as eb
from pydantic import SecretStr

from alicloud_runbooks.blocks import AlibabaCloudCredentials
from alicloud_runbooks.subscribe import subscribe
from local_stack.doctor import DoctorConfig, run_doctor
from local_stack.servers import free_port
from local_stack.stack import LocalStack
from tests.runbook_stack import BUCKET, faults

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECKS = 18


def doctor(stack: LocalStack, **changes: Any) -> tuple[int, str]:
    values: dict[str, Any] = {
        "relay_url": stack.relay_url,
        "token": SecretStr(stack.token),
        "credentials": stack.credentials(),
        "prefect_api_url": stack.api_url,
        "dead_letter_arn": stack.dead_letter_arn,
        "output_bucket": BUCKET,
        "push_timeout": 15,
        **changes,
    }
    out = io.StringIO()
    code = run_doctor(DoctorConfig(**values), out)
    text = out.getvalue()
    assert stack.token not in text, "the relay token never appears"
    return code, text


def line(text: str, title: str) -> str:
    found = [
        entry for entry in text.splitlines() if re.match(rf"^[✓✗-] {re.escape(title)}:", entry)
    ]
    assert len(found) == 1, text
    return found[0]


def fix_after(text: str, title: str) -> str:
    lines = text.splitlines()
    index = lines.index(line(text, title))
    assert lines[index + 1].startswith("    fix: "), text
    return lines[index + 1]


def failed(text: str) -> list[str]:
    return [entry.split(": ")[0][2:] for entry in text.splitlines() if entry.startswith("✗ ")]


def test_healthy_stack_passes_every_check_through_the_command(cloud: LocalStack) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "ALIBABA_"))}
    env.update(
        PYTHONPATH=ROOT,
        PREFECT_API_URL=cloud.api_url,
        RUNBOOKS_RELAY_TOKEN=cloud.token,
        ALIBABA_CLOUD_ACCESS_KEY_ID=cloud.credentials().access_key_id or "",
        ALIBABA_CLOUD_ACCESS_KEY_SECRET=cloud.credentials().access_key_secret.get_secret_value(),  # type: ignore[union-attr]
    )
    done = subprocess.run(
        [
            *(sys.executable, "-m", "local_stack.cli", "doctor", "--relay-url", cloud.relay_url),
            *("--endpoint", cloud.sim.endpoint, "--protocol", "http"),  # type: ignore[union-attr]
            *("--output-bucket", BUCKET, "--dead-letter-arn", cloud.dead_letter_arn),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    text = done.stdout
    assert done.returncode == 0, text + done.stderr
    assert text.count("\n✓ ") + text.startswith("✓ ") == CHECKS, text
    assert f"{CHECKS} passed, 0 failed, 0 not checked." in text
    assert line(text, "credentials").endswith("STS GetCallerIdentity needs no permission")
    assert "DryRun: the request would have succeeded" in line(text, "ecs:RunInstances")
    assert "acs.ecs.RunbooksDoctor.Ping" in line(text, "test push through the relay into Prefect")
    assert cloud.token not in text + done.stderr
    assert "Traceback" not in done.stderr


def test_wrong_key_secret(cloud: LocalStack) -> None:
    credentials = cloud.credentials().model_copy(
        update={"access_key_secret": SecretStr("not-the-secret")}
    )
    code, text = doctor(cloud, credentials=credentials)
    assert code == 1
    assert "SignatureDoesNotMatch" in line(text, "credentials")
    assert "ALIBABA_CLOUD_ACCESS_KEY_SECRET" in fix_after(text, "credentials")
    assert failed(text) == ["credentials"], "the checks that need the key are not run"
    assert line(text, "ecs:RunCommand").startswith("- ")
    assert "not-the-secret" not in text


def test_missing_rule(cloud: LocalStack) -> None:
    client = cloud.credentials().eventbridge_client()
    client.delete_rule(
        eb.DeleteRuleRequest(event_bus_name="default", rule_name="runbooks-ecs-instance-state")
    )
    code, text = doctor(cloud)
    assert code == 1
    assert failed(text) == ["rule runbooks-ecs-instance-state"], text
    assert "missing on bus default" in line(text, "rule runbooks-ecs-instance-state")
    assert "runbooks subscribe --target-url" in fix_after(text, "rule runbooks-ecs-instance-state")
    assert line(text, "dead-letter queue of runbooks-ecs-instance-state").startswith("- ")


def test_relay_down(cloud: LocalStack) -> None:
    down = f"http://127.0.0.1:{free_port()}/eventbridge"
    subscribe(
        cloud.credentials().eventbridge_client(),
        target_url=down,
        token=cloud.token,
        dead_letter_arn=cloud.dead_letter_arn,
    )
    code, text = doctor(cloud, relay_url=down)
    assert code == 1
    assert failed(text) == ["test push through the relay into Prefect"], text
    assert "cannot reach the relay" in line(text, "test push through the relay into Prefect")
    assert "start the relay" in fix_after(text, "test push through the relay into Prefect")


def test_wrong_token(cloud: LocalStack) -> None:
    code, text = doctor(cloud, token=SecretStr("a-token-the-relay-does-not-know"))
    assert code == 1
    push = "test push through the relay into Prefect"
    assert "refused the token (401)" in line(text, push)
    assert "the relay's own token" in fix_after(text, push)
    for rule in ("runbooks-cloud-assistant", "runbooks-ecs-instance-state"):
        assert "another token than the relay's" in line(text, f"rule {rule}")
    assert set(failed(text)) == {push, *(f"rule {r}" for r in _rules())}


def test_a_missing_permission(cloud: LocalStack) -> None:
    faults(cloud, api=[{"product": "*", "action": "RunCommand", "error": "Forbidden.RAM"}])
    code, text = doctor(cloud)
    assert code == 1
    assert failed(text) == ["ecs:RunCommand"], text
    assert "denied: Forbidden.RAM" in line(text, "ecs:RunCommand")
    assert "docs/ram/runbooks.json" in fix_after(text, "ecs:RunCommand")


def test_dead_letter_queue_arn_without_the_account(cloud: LocalStack) -> None:
    subscribe(
        cloud.credentials().eventbridge_client(),
        target_url=cloud.relay_url,
        token=cloud.token,
        dead_letter_arn="acs:mns:cn-hangzhou::/queues/runbooks-relay-dlq",
    )
    code, text = doctor(cloud, dead_letter_arn=None)
    assert code == 1
    assert failed(text) == [f"dead-letter queue of {r}" for r in _rules()], text
    assert "is not an MNS queue ARN" in line(text, "dead-letter queue of runbooks-ros-stack-status")
    assert "--dead-letter-arn acs:mns:cn-hangzhou:1234567890123456:/queues/" in fix_after(
        text, "dead-letter queue of runbooks-ros-stack-status"
    )


def test_a_wrong_region(cloud: LocalStack) -> None:
    credentials: AlibabaCloudCredentials = cloud.credentials().model_copy(
        update={"region_id": "xx-nowhere-1"}
    )
    code, text = doctor(cloud, credentials=credentials)
    assert code == 1
    assert "InvalidRegionId.NotFound" in line(text, "region xx-nowhere-1")
    assert "--region" in fix_after(text, "region xx-nowhere-1")


def _rules() -> list[str]:
    return ["runbooks-cloud-assistant", "runbooks-ecs-instance-state", "runbooks-ros-stack-status"]


def test_subscribe_names_the_account_in_its_default_dead_letter_arn(capsys) -> None:
    from local_stack.cli import main

    args = ["subscribe", "--target-url", "https://r.example.com/eventbridge", "--dry-run"]
    assert main([*args, "--token", "t" * 24, "--account-id", "1234567890123456"]) == 0
    out = capsys.readouterr().out
    assert "dead letters to acs:mns:cn-hangzhou:1234567890123456:/queues/runbooks-relay-dlq" in out


def test_an_instance_state_rule_must_forward_stopped(cloud: LocalStack) -> None:
    title = "rule runbooks-ecs-instance-state"
    client = cloud.credentials().eventbridge_client()

    def rules(states: tuple[str, ...] | None) -> None:
        subscribe(
            client,
            target_url=cloud.relay_url,
            token=cloud.token,
            dead_letter_arn=cloud.dead_letter_arn,
            instance_states=states,
        )

    rules(None)  # `--instance-states all`
    code, text = doctor(cloud)
    assert code == 0 and line(text, title).startswith("✓ "), text

    rules(("Pending", "Running", "Stopped"))
    code, text = doctor(cloud)
    assert code == 0 and line(text, title).startswith("✓ "), text

    rules(("Running",))  # restart-stopped would never fire
    code, text = doctor(cloud)
    assert code == 1 and failed(text) == [title], text
    assert '"state":["Running"]' in line(text, title)
    assert "never fewer than Stopped" in line(text, title)
