"""Cloud Assistant's command processes end with alisim, even when alisim is SIGKILLed.

alisim runs as `runbooks sim` in its own process; a `sleep 300` command runs through the
official ECS SDK; then alisim is killed and the command's process group must be gone.
Process groups are read from /proc (a zombie left for init to reap does not count as alive).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from alibabacloud_ecs20140526 import models as ecs_models
from alibabacloud_ecs20140526.client import Client as EcsClient
from alibabacloud_tea_openapi.utils_models import Config

from alisim.config import DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET
from alisim.server import free_port
from tests.helpers import wait_until

REGION = "cn-hangzhou"
LINUX_IMAGE = "aliyun_3_x64_20G_alibase_20240819.vhd"


def _stat(pid: str) -> tuple[str, int, int] | None:
    """(state, parent pid, process group) of a live process, from /proc/<pid>/stat."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[2])


def group_members(pgid: int) -> list[int]:
    """Processes of the group that are still running (not zombies)."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(entry)) and stat[2] == pgid and stat[0] != "Z":
            members.append(int(entry))
    return members


def children_running(parent: int, marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or not (stat := _stat(entry)) or stat[1] != parent:
            continue
        with contextlib.suppress(OSError):
            if marker in Path(f"/proc/{entry}/cmdline").read_text() and stat[0] != "Z":
                found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    stat = _stat(str(pid))
    return stat is not None and stat[0] != "Z"


@pytest.fixture
def sim_process() -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    command = ["sim", "--port", str(port), "--zero-boot", "--log-level", "warning"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "local_stack.cli", *command], stdout=subprocess.DEVNULL
    )

    def healthy() -> bool:
        assert proc.poll() is None, "runbooks sim exited"
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"http://127.0.0.1:{port}/_alisim/health").status_code == 200
        return False

    try:
        wait_until(healthy, timeout=30)
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def start_sleep(port: int, pid_file: Path) -> int:
    """Run `sleep 300` on an instance through the SDK; the process group of its shell."""
    client = EcsClient(
        Config(
            access_key_id=DEFAULT_ACCESS_KEY_ID,
            access_key_secret=DEFAULT_ACCESS_KEY_SECRET,
            endpoint=f"127.0.0.1:{port}",
            protocol="http",
            region_id=REGION,
        )
    )
    instance = client.run_instances(
        ecs_models.RunInstancesRequest(
            region_id=REGION, image_id=LINUX_IMAGE, instance_type="ecs.g7.large"
        )
    ).body.instance_id_sets.instance_id_set[0]

    def online() -> bool:
        rows = client.describe_cloud_assistant_status(
            ecs_models.DescribeCloudAssistantStatusRequest(region_id=REGION, instance_id=[instance])
        ).body.instance_cloud_assistant_status_set.instance_cloud_assistant_status
        return bool(rows) and rows[0].cloud_assistant_status == "true"

    wait_until(online)
    client.run_command(
        ecs_models.RunCommandRequest(
            region_id=REGION,
            instance_id=[instance],
            type="RunShellScript",
            command_content=f"echo $$ >{pid_file}.tmp && mv {pid_file}.tmp {pid_file}\nsleep 300",
            timeout=600,
        )
    )
    pgid = int(wait_until(lambda: pid_file.exists() and pid_file.read_text().strip()))
    # The shell and its `sleep` both run, in a group of their own.
    wait_until(lambda: len(group_members(pgid)) >= 2)
    return pgid


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_command_processes_end_with_alisim(
    sim_process: tuple[subprocess.Popen[bytes], int], tmp_path: Path, how: signal.Signals
) -> None:
    proc, port = sim_process
    pgid = start_sleep(port, tmp_path / "pgid")
    [reaper] = children_running(proc.pid, "reaper.py")
    try:
        proc.send_signal(how)
        proc.wait(timeout=30)
        wait_until(lambda: not group_members(pgid), timeout=10)
        wait_until(lambda: not alive(reaper), timeout=10)
    finally:
        for pid in group_members(pgid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
