"""alisim beyond loopback: refused without `--allow-remote`; with it, a fresh key pair is the
only one remote clients may use, and `/_alisim/*` needs it.

A remote client is played by a request that comes through a reverse proxy on the same host
(`X-Forwarded-For`, which alisim trusts from loopback only), so every server here still
listens on 127.0.0.1.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import oss2
import pytest
from alibabacloud_ecs20140526 import models as ecs_models
from alibabacloud_ecs20140526.client import Client as EcsClient
from alibabacloud_tea_openapi import exceptions as sdk_errors
from alibabacloud_tea_openapi.utils_models import Config, GlobalParameters

from alisim.config import DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET, zero_delay_settings
from alisim.credentials import CredentialStore
from alisim.exposure import RemoteBindRefused
from alisim.server import AlisimServer, free_port
from tests.helpers import wait_until

REGION = "cn-hangzhou"
REMOTE_PEER = "203.0.113.7"
PUBLISHED = (DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET)


def _runbooks(*args: str) -> list[str]:
    return [sys.executable, "-m", "local_stack.cli", *args]


def _nothing_listens(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10"])
def test_sim_off_loopback_is_refused_without_the_flag(host: str) -> None:
    port = free_port()
    done = subprocess.run(
        _runbooks("sim", "--host", host, "--port", str(port)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert f"alisim refuses to listen on {host!r}" in done.stderr
    assert "--allow-remote" in done.stderr
    assert DEFAULT_ACCESS_KEY_SECRET not in done.stdout + done.stderr
    assert _nothing_listens(port)


def test_alisim_server_refuses_a_non_loopback_host() -> None:
    with pytest.raises(RemoteBindRefused, match="allow_remote=True"):
        AlisimServer(host="0.0.0.0")


@pytest.fixture(scope="module")
def open_sim() -> Iterator[AlisimServer]:
    """alisim in remote mode (`allow_remote=True`), still bound to 127.0.0.1."""
    server = AlisimServer(zero_delay_settings(), allow_remote=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def fresh_key(sim: AlisimServer) -> tuple[str, str]:
    assert sim.remote_key is not None
    return sim.remote_key.access_key_id, sim.remote_key.access_key_secret


def bearer(sim: AlisimServer) -> dict[str, str]:
    key_id, secret = fresh_key(sim)
    return {"Authorization": f"Bearer {key_id}:{secret}"}


def ecs(sim: AlisimServer, key: tuple[str, str], mode: str, *, remote: bool) -> EcsClient:
    config = Config(
        access_key_id=key[0],
        access_key_secret=key[1],
        endpoint=sim.endpoint,
        protocol="http",
        region_id=REGION,
    )
    if mode == "v2":
        config.signature_algorithm = "v2"
    if remote:
        config.global_parameters = GlobalParameters(headers={"x-forwarded-for": REMOTE_PEER})
    return EcsClient(config)


def run_shell(client: EcsClient) -> str:
    """What a stranger would do with the published keys: run a shell command."""
    instance = client.run_instances(
        ecs_models.RunInstancesRequest(
            region_id=REGION,
            image_id="aliyun_3_x64_20G_alibase_20240819.vhd",
            instance_type="ecs.g7.large",
        )
    ).body.instance_id_sets.instance_id_set[0]
    return client.run_command(
        ecs_models.RunCommandRequest(
            region_id=REGION,
            instance_id=[instance],
            command_content="id",
            type="RunShellScript",
        )
    ).body.invoke_id


def test_the_fresh_key_is_new_and_not_the_published_one(open_sim: AlisimServer) -> None:
    key_id, secret = fresh_key(open_sim)
    assert key_id != DEFAULT_ACCESS_KEY_ID and secret != DEFAULT_ACCESS_KEY_SECRET
    assert len(secret) >= 30
    other = CredentialStore().open_to_remote()
    assert (other.access_key_id, other.access_key_secret) != (key_id, secret)
    assert secret not in repr(open_sim.remote_key)


@pytest.mark.parametrize("mode", ["acs3", "v2"])
def test_remote_clients_cannot_use_the_published_keys(open_sim: AlisimServer, mode: str) -> None:
    stranger = ecs(open_sim, PUBLISHED, mode, remote=True)
    with pytest.raises(sdk_errors.ClientException) as info:
        run_shell(stranger)
    assert info.value.code == "InvalidAccessKeyId.Inactive"
    assert "loopback" in info.value.message
    assert DEFAULT_ACCESS_KEY_SECRET not in str(info.value)

    assert run_shell(ecs(open_sim, fresh_key(open_sim), mode, remote=True)).startswith("t-")


@pytest.mark.parametrize("mode", ["acs3", "v2"])
def test_loopback_clients_keep_the_published_keys(open_sim: AlisimServer, mode: str) -> None:
    assert run_shell(ecs(open_sim, PUBLISHED, mode, remote=False)).startswith("t-")


def test_remote_oss_clients_cannot_use_the_published_keys(open_sim: AlisimServer) -> None:
    forwarded = {"X-Forwarded-For": REMOTE_PEER}
    stranger = oss2.Bucket(oss2.AuthV4(*PUBLISHED), open_sim.url, "guarded", region=REGION)
    with pytest.raises(oss2.exceptions.AccessDenied) as info:
        stranger.create_bucket(headers=forwarded)
    assert "loopback" in info.value.message

    owner = oss2.Bucket(oss2.AuthV4(*fresh_key(open_sim)), open_sim.url, "guarded", region=REGION)
    owner.create_bucket(headers=forwarded)
    owner.put_object("k", b"v", headers=forwarded)
    with pytest.raises(oss2.exceptions.AccessDenied):
        stranger.get_object("k", headers=forwarded)


@pytest.mark.parametrize("path", ["health", "settings", "events", "sts", "reset", "no-such"])
def test_remote_mode_developer_api_needs_the_fresh_key(open_sim: AlisimServer, path: str) -> None:
    url = f"{open_sim.url}/_alisim/{path}"
    key_id, secret = fresh_key(open_sim)
    refused = [
        {},
        {"Authorization": f"Bearer {DEFAULT_ACCESS_KEY_ID}:{DEFAULT_ACCESS_KEY_SECRET}"},
        {"Authorization": f"Bearer {key_id}:{secret[:-1]}x"},
        {"Authorization": f"Bearer {key_id}"},
        {"Authorization": f"Basic {key_id}:{secret}"},
    ]
    for headers in refused:
        # From loopback too: the developer API can reset the cloud and mint STS keys.
        response = httpx.post(url, headers=headers, json={})
        assert response.status_code == 401, headers
        assert "Authorization: Bearer <AccessKeyId>:<AccessKeySecret>" in response.json()["error"]
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert secret not in response.text
    allowed = httpx.get(url, headers=bearer(open_sim))
    assert allowed.status_code != 401


def test_remote_mode_sts_keys_come_from_the_locked_developer_api(open_sim: AlisimServer) -> None:
    minted = httpx.post(f"{open_sim.url}/_alisim/sts", headers=bearer(open_sim), json={})
    assert minted.status_code == 200
    creds = minted.json()
    config = Config(
        access_key_id=creds["AccessKeyId"],
        access_key_secret=creds["AccessKeySecret"],
        security_token=creds["SecurityToken"],
        endpoint=open_sim.endpoint,
        protocol="http",
        region_id=REGION,
        global_parameters=GlobalParameters(headers={"x-forwarded-for": REMOTE_PEER}),
    )
    assert run_shell(EcsClient(config)).startswith("t-")


def test_loopback_only_developer_api_stays_open(sim: AlisimServer) -> None:
    assert sim.remote_key is None
    assert httpx.get(f"{sim.url}/_alisim/health").status_code == 200


def test_sim_with_allow_remote_prints_its_fresh_key(tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "stdout"
    with out.open("w") as sink:
        proc = subprocess.Popen(
            _runbooks("sim", "--allow-remote", "--port", str(port), "--log-level", "warning"),
            stdout=sink,
        )
    try:
        printed = wait_until(
            lambda: "developer API" in out.read_text() and out.read_text(), timeout=30
        )
        lines = dict(line.split("=", 1) for line in printed.splitlines() if "=" in line)
        key_id = lines["ALIBABA_CLOUD_ACCESS_KEY_ID"]
        secret = lines["ALIBABA_CLOUD_ACCESS_KEY_SECRET"]
        assert (key_id, secret) != PUBLISHED
        assert "works from loopback only" in printed
        url = f"http://127.0.0.1:{port}/_alisim/health"

        def answered() -> int:
            try:
                return httpx.get(url).status_code
            except httpx.HTTPError:
                return 0

        assert wait_until(answered, timeout=30) == 401
        ok = httpx.get(url, headers={"Authorization": f"Bearer {key_id}:{secret}"})
        assert ok.status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)
