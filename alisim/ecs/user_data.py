"""User data: the script an instance runs once at its first boot, as cloud-init would.

It runs as `/bin/sh` in the instance's own directory when its agent comes up (Linux only, as
alisim runs no Windows scripts), in a process group of its own that Cloud Assistant's reaper
kills if alisim dies; its output goes to the instance's `/var/log/cloud-init-output.log`
(under `ALISIM_INSTANCE_ROOT`). It publishes no event, as on Alibaba Cloud.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from typing import TYPE_CHECKING

from alisim.ecs.models import Instance

if TYPE_CHECKING:
    from alisim.cloud import Cloud

log = logging.getLogger("alisim.ecs")


def start(cloud: Cloud, instance: Instance) -> None:
    if instance.user_data and not instance.is_windows and instance.user_data_task is None:
        instance.user_data_task = asyncio.get_running_loop().create_task(_run(cloud, instance))


async def _run(cloud: Cloud, instance: Instance) -> None:
    script = instance.root / "user-data"
    script.write_bytes(instance.user_data)
    log_dir = instance.home / "var" / "log"
    log_dir.mkdir(parents=True, exist_ok=True)
    home = instance.home / "root"
    reaper = cloud.assistant.reaper
    reaper.start()
    with open(log_dir / "cloud-init-output.log", "ab") as output:
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh",
            str(script),
            cwd=home,
            env={
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": str(home),
                "LANG": "C.UTF-8",
                "INSTANCE_ID": instance.instance_id,
                "ALISIM_INSTANCE_ROOT": str(instance.home),
            },
            stdin=asyncio.subprocess.DEVNULL,
            stdout=output,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
    reaper.watch(proc.pid)
    try:
        code = await proc.wait()
        log.info("user data of %s exited %s", instance.instance_id, code)
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        reaper.forget(proc.pid)


def stop(instance: Instance) -> None:
    task = instance.user_data_task
    if task is not None and not task.done():
        task.cancel()
