"""Setting the relay up as a user does: `runbooks subscribe` target URLs and the account
allow-list it prints, the warning `runbooks relay` logs without one, and the local stack's
default allow-list."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from alicloud_runbooks.subscribe import relay_target_url, target_spec
from alisim.config import zero_delay_settings
from local_stack.cli import main
from local_stack.servers import free_port
from local_stack.stack import LocalStack
from tests import samples

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "setup-test-token-789"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("https://relay.example.com/eventbridge", "https://relay.example.com/eventbridge"),
        ("https://relay.example.com/eventbridge/", "https://relay.example.com/eventbridge"),
        ("http://127.0.0.1:9810/eventbridge//", "http://127.0.0.1:9810/eventbridge"),
        ("https://example.com/ops/relay/eventbridge", "https://example.com/ops/relay/eventbridge"),
        ("https://example.com/eventbridge?x=1", "https://example.com/eventbridge?x=1"),
        ("https://api.prefect.cloud/hooks/AbC123", "https://api.prefect.cloud/hooks/AbC123"),
    ],
)
def test_target_urls_are_normalised(given: str, expected: str) -> None:
    assert relay_target_url(given) == expected
    endpoint = target_spec(given, TOKEN, "acs:mns:x:/q")["Endpoint"]
    assert endpoint.startswith(expected.split("?")[0]) and f"token={TOKEN}" in endpoint


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        ("relay.example.com/eventbridge", "must start with http:// or https://"),
        ("ftp://relay.example.com/eventbridge", "must start with http:// or https://"),
        ("https:///eventbridge", "has no host"),
        ("https://relay.example.com:99999/eventbridge", "invalid port"),
        ("https://relay.example.com:x/eventbridge", "invalid port"),
        ("https://relay.example.com/eventbridge#top", "#fragment"),
        ("https://relay.example.com/eventbridge#", "#fragment"),
        ("https://user:pw@relay.example.com/eventbridge", "user or password"),
        ("https://relay.example.com/event bridge", "whitespace"),
        ("https://relay.example.com/cloudmonitor", "/cloudmonitor is for CloudMonitor"),
        ("https://relay.example.com/cloudmonitor/", "/cloudmonitor is for CloudMonitor"),
        ("https://relay.example.com", "path must end with /eventbridge"),
        ("https://relay.example.com/healthz", "path must end with /eventbridge"),
        ("https://relay.example.com/eventbridge/x", "path must end with /eventbridge"),
    ],
)
def test_malformed_target_urls_are_refused_with_the_reason(given: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        relay_target_url(given)


def test_subscribe_refuses_a_malformed_url_without_echoing_the_token(capsys) -> None:
    url = f"https://relay.example.com/cloudmonitor?token={TOKEN}"
    with pytest.raises(SystemExit) as exited:
        main(["subscribe", "--target-url", url, "--token", TOKEN, "--dry-run"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "/cloudmonitor is for CloudMonitor" in err and TOKEN not in err


def test_subscribe_prints_the_allow_list_to_configure(capsys) -> None:
    base = ["subscribe", "--target-url", "https://r.example.com/eventbridge/", "--dry-run"]
    assert main([*base, "--token", TOKEN, "--account-id", "1234567890123456"]) == 0
    out = capsys.readouterr().out
    assert "https://r.example.com/eventbridge?token=****" in out and TOKEN not in out
    assert out.splitlines()[-1].endswith("RUNBOOKS_RELAY_ALLOWED_ACCOUNT_IDS=1234567890123456")

    assert main([*base, "--token", TOKEN]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert "RUNBOOKS_RELAY_ALLOWED_ACCOUNT_IDS=<your account id>" in last
    assert "aliyun sts GetCallerIdentity" in last

    with pytest.raises(SystemExit):
        main([*base, "--token", TOKEN, "--account-id", "acct-1"])
    assert "all digits" in capsys.readouterr().err


def test_subscribe_forwards_the_instance_states_the_runbooks_act_on(capsys) -> None:
    base = ["subscribe", "--target-url", "https://r.example.com/eventbridge", "--dry-run"]
    assert main([*base, "--token", TOKEN]) == 0
    out = capsys.readouterr().out
    assert '"type":["ecs:Instance:StateChange"],"data":{"state":["Stopped"]}' in out

    assert main([*base, "--token", TOKEN, "--instance-states", "all"]) == 0
    assert '"type":["ecs:Instance:StateChange"]} ->' in capsys.readouterr().out

    assert main([*base, "--token", TOKEN, "--instance-states", "Stopped, Deleted"]) == 0
    assert '"data":{"state":["Stopped","Deleted"]}' in capsys.readouterr().out

    with pytest.raises(SystemExit):
        main([*base, "--token", TOKEN, "--instance-states", "Runing"])
    err = capsys.readouterr().err
    assert "'Runing'" in err and "Pending, Starting, Running, Stopping, Stopped, Deleted" in err


def _relay_start_output(extra_env: dict[str, str]) -> str:
    """What `runbooks relay` prints up to its listening line; the process is then stopped."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RUNBOOKS_"))}
    env.update(
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
        RUNBOOKS_RELAY_TOKEN=TOKEN,
        PREFECT_API_URL=f"http://127.0.0.1:{free_port()}/api",
        **extra_env,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "local_stack.cli", "relay", "--port", str(free_port())],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None
    output = b""
    deadline = time.monotonic() + 30
    try:
        while b"relay listening" not in output:
            assert time.monotonic() < deadline, output.decode()
            assert proc.poll() is None, output.decode()
            if select.select([proc.stdout], [], [], 0.5)[0]:
                output += os.read(proc.stdout.fileno(), 65536)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return output.decode()


def test_relay_warns_at_start_when_no_account_allow_list_is_set() -> None:
    output = _relay_start_output({})
    assert "no account allow-list" in output
    assert "RUNBOOKS_RELAY_ALLOWED_ACCOUNT_IDS=<your Alibaba Cloud account id>" in output
    assert TOKEN not in output
    quiet = _relay_start_output({"RUNBOOKS_RELAY_ALLOWED_ACCOUNT_IDS": "1234567890123456"})
    assert "allow-list" not in quiet


def test_the_local_stack_accepts_events_of_alisims_account_only(prefect_server) -> None:
    stack = LocalStack(sim_settings=zero_delay_settings()).start(prefect=prefect_server)
    try:
        bearer = {"Authorization": f"Bearer {stack.token}"}
        event = {**samples.INSTANCE_STATE_CHANGE_EB, "id": str(uuid.uuid4())}
        forged = httpx.post(stack.relay_url, json=event, headers=bearer)
        assert forged.status_code == 403, forged.text
        own = {**event, "aliyunaccountid": stack.sim_settings.account_id}
        assert httpx.post(stack.relay_url, json=own, headers=bearer).status_code == 200
    finally:
        stack.stop()


def test_allow_lists_come_from_the_environment(monkeypatch) -> None:
    from alicloud_runbooks.relay.settings import RelaySettings

    monkeypatch.setenv("RUNBOOKS_RELAY_ALLOWED_ACCOUNT_IDS", "1234567890123456, 42")
    monkeypatch.setenv("RUNBOOKS_RELAY_ALLOWED_SOURCES", "acs.ecs")
    settings = RelaySettings(token=TOKEN)
    assert settings.allowed_account_ids == ["1234567890123456", "42"]
    assert settings.allowed_sources == ["acs.ecs"]
