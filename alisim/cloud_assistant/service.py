"""Cloud Assistant: commands really run, one subprocess per instance, bounded per instance
(`max_concurrent_commands_per_instance`) as the real agent bounds its own, with an optional
cap across all instances (`max_concurrent_commands`) for tests of queued commands.

Each command runs in its own process group, which `reaper` kills if alisim dies first.

Each instance of an invocation goes Pending → Running → a final status, publishes its
TaskCompleted event, and, when asked, delivers its full output to OSS and publishes the
delivery result. Statuses, error codes and event fields follow Alibaba's documentation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import time
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from alisim import ids
from alisim.cloud_assistant import agent, events
from alisim.cloud_assistant.models import Command, Invocation, InvokeInstance
from alisim.cloud_assistant.reaper import Reaper
from alisim.ecs.models import Instance, InstanceStatus
from alisim.errors import ApiError, OssError

if TYPE_CHECKING:
    from alisim.cloud import Cloud

log = logging.getLogger("alisim.assistant")

MAX_CAPTURED_OUTPUT = 64 * 1024 * 1024
PARAMETER_PATTERN = re.compile(r"\{\{\s*([A-Za-z0-9_\-:]+)\s*\}\}")
BUILTIN_PARAMETERS = {
    "ACS::InstanceId",
    "ACS::InstanceName",
    "ACS::RegionId",
    "ACS::InvokeId",
    "ACS::CommandId",
    "ACS::AccountId",
}
SHELL_TYPES = {"RunShellScript"}
WINDOWS_TYPES = {"RunBatScript", "RunPowerShellScript"}


def parameter_names(script: str) -> list[str]:
    seen: dict[str, None] = {}
    for name in PARAMETER_PATTERN.findall(script):
        if name not in BUILTIN_PARAMETERS:
            seen.setdefault(name, None)
    return list(seen)


def parse_oss_destination(value: str) -> tuple[str, str]:
    match = re.fullmatch(r"oss://([a-z0-9][a-z0-9\-]{1,61}[a-z0-9])(?:/(.*))?", value)
    if not match:
        raise ApiError(
            "InvalidParameter.OssOutputDelivery",
            "OssOutputDelivery must look like oss://${BucketName}/${Prefix}.",
            400,
        )
    return match.group(1), (match.group(2) or "").strip("/")


class CloudAssistant:
    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud
        self.commands: dict[str, Command] = {}
        self.invocations: dict[str, Invocation] = {}
        self._agent_ready: dict[str, asyncio.Event] = {}
        self._slots: asyncio.Semaphore | None = None
        self._slot_count: int | None = None
        self._instance_slots: dict[str, tuple[int, asyncio.Semaphore]] = {}
        self.reaper = Reaper()

    # ----- agent presence, driven by the instance lifecycle
    def _ready_event(self, instance_id: str) -> asyncio.Event:
        return self._agent_ready.setdefault(instance_id, asyncio.Event())

    def agent_online(self, instance: Instance) -> None:
        """The agent's first heartbeat after a boot; an agent too old for the event still
        runs commands."""
        self._ready_event(instance.instance_id).set()
        if agent.sends_first_heartbeat(instance.os_type, instance.agent_version):
            events.publish_first_heartbeat(self.cloud, instance)

    def instance_stopping(self, instance: Instance) -> None:
        self._ready_event(instance.instance_id).clear()
        for invocation in self.invocations.values():
            ii = invocation.instances.get(instance.instance_id)
            if ii is not None and not ii.final:
                ii.stop_requested.set()

    def _semaphores(self, instance_id: str) -> list[asyncio.Semaphore]:
        """The instance's own slots, then the optional cap across instances."""
        per_instance = self.cloud.settings.max_concurrent_commands_per_instance
        held = self._instance_slots.get(instance_id)
        if held is None or held[0] != per_instance:
            held = (per_instance, asyncio.Semaphore(per_instance))
            self._instance_slots[instance_id] = held
        slots = [held[1]]
        wanted = self.cloud.settings.max_concurrent_commands
        if wanted is None:
            self._slots, self._slot_count = None, None
            return slots
        if self._slots is None or self._slot_count != wanted:
            self._slots = asyncio.Semaphore(wanted)
            self._slot_count = wanted
        return [*slots, self._slots]

    async def _acquire(self, ii: InvokeInstance, slots: list[asyncio.Semaphore]) -> bool:
        """Take every slot in order, unless the command is stopped first (then none is held)."""
        taken: list[asyncio.Semaphore] = []
        for slot in slots:
            acquire = asyncio.ensure_future(slot.acquire())
            stopped = asyncio.ensure_future(ii.stop_requested.wait())
            await asyncio.wait({acquire, stopped}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            if not acquire.done() or ii.stop_requested.is_set():
                acquire.cancel()
                if acquire.done() and not acquire.cancelled():
                    slot.release()
                for held in taken:
                    held.release()
                return False
            taken.append(slot)
        return True

    # ----- commands
    def create_command(self, command: Command) -> Command:
        self.commands[command.command_id] = command
        return command

    def get_command(self, command_id: str) -> Command:
        command = self.commands.get(command_id)
        if command is None or not command.keep:
            raise ApiError(
                "InvalidCmdId.NotFound", f"The command {command_id} does not exist.", 404
            )
        return command

    def delete_command(self, command_id: str) -> None:
        self.get_command(command_id)
        del self.commands[command_id]

    def get_invocation(self, invoke_id: str) -> Invocation:
        invocation = self.invocations.get(invoke_id)
        if invocation is None:
            raise ApiError(
                "InvalidInvokeId.NotFound", f"The invocation {invoke_id} does not exist.", 404
            )
        return invocation

    # ----- invoking
    def invoke(
        self,
        command: Command,
        instance_ids: list[str],
        *,
        parameters: dict[str, str],
        timeout: int,
        working_dir: str,
        username: str,
        oss_output_delivery: str,
        tags: dict[str, str],
    ) -> Invocation:
        for instance_id in instance_ids:
            self.cloud.instances.get(instance_id)
        if oss_output_delivery:
            parse_oss_destination(oss_output_delivery)
        unknown = set(parameters) - set(command.parameter_names)
        if parameters and not command.enable_parameter:
            raise ApiError(
                "InvalidParameter.Parameters",
                "Parameters were given but the command does not enable parameters.",
                400,
            )
        if unknown:
            raise ApiError(
                "InvalidParameter.Parameters",
                f"Parameters not defined by the command: {sorted(unknown)}.",
                400,
            )
        invocation = Invocation(
            invoke_id=ids.invoke_id(self.cloud.settings.region),
            command=command,
            instances={i: InvokeInstance(instance_id=i) for i in dict.fromkeys(instance_ids)},
            parameters=parameters,
            timeout=timeout,
            working_dir=working_dir,
            username=username,
            oss_output_delivery=oss_output_delivery,
            tags=tags,
        )
        command.invoke_times += 1
        self.invocations[invocation.invoke_id] = invocation
        loop = asyncio.get_running_loop()
        for ii in invocation.instances.values():
            ii.task = loop.create_task(self._run_on_instance(invocation, ii))
        return invocation

    def stop(self, invocation: Invocation, instance_ids: list[str]) -> None:
        targets = instance_ids or list(invocation.instances)
        for instance_id in targets:
            ii = invocation.instances.get(instance_id)
            if ii is None:
                raise ApiError(
                    "InvalidInstanceId.NotFound",
                    f"The instance {instance_id} is not part of {invocation.invoke_id}.",
                    404,
                )
            if not ii.final:
                ii.stop_requested.set()

    # ----- one instance of one invocation
    async def _run_on_instance(self, invocation: Invocation, ii: InvokeInstance) -> None:
        try:
            await self._execute(invocation, ii)
        except asyncio.CancelledError:
            if not ii.final:
                self._finish(
                    invocation,
                    ii,
                    "Terminated",
                    "ExecutionInterrupted",
                    "the command execution was interrupted",
                )
            raise
        except Exception as exc:  # a bug in alisim must not leave an invocation hanging
            log.exception("command execution failed inside alisim")
            if not ii.final:
                self._finish(invocation, ii, "Error", "ExecutionException", str(exc))
        await self._deliver_output(invocation, ii)

    async def _execute(self, invocation: Invocation, ii: InvokeInstance) -> None:
        instance = self.cloud.instances.instances.get(ii.instance_id)
        if instance is None:
            return self._finish(
                invocation,
                ii,
                "Aborted",
                "InstanceReleased",
                "the instance has released when create task",
            )
        if instance.status != InstanceStatus.RUNNING:
            return self._finish(
                invocation,
                ii,
                "Aborted",
                "InstanceNotRunning",
                "the instance is not running when create task",
            )
        applicable = SHELL_TYPES if not instance.is_windows else WINDOWS_TYPES
        if invocation.command.type not in applicable:
            return self._finish(
                invocation, ii, "Invalid", "CommandNotApplicable", "the command is not applicable"
            )
        missing = [n for n in invocation.command.parameter_names if n not in invocation.parameters]
        if invocation.command.enable_parameter and missing:
            return self._finish(
                invocation,
                ii,
                "Invalid",
                "InvalidParameter",
                f"the parameters {missing} are not given",
            )

        if not await self._wait_for_agent(ii):
            if ii.stop_requested.is_set():
                return self._finish(invocation, ii, "Cancelled", "", "")
            return self._finish(
                invocation,
                ii,
                "Aborted",
                "DeliveryTimeout",
                "the command delivery has been timeout",
            )
        slots = self._semaphores(ii.instance_id)
        if not await self._acquire(ii, slots):
            return self._finish(invocation, ii, "Cancelled", "", "")
        try:
            if instance.is_windows:
                return self._finish(
                    invocation,
                    ii,
                    "Error",
                    "ExecutionException",
                    "alisim cannot execute Windows scripts",
                )
            await self._run_process(invocation, ii, instance)
        finally:
            for slot in slots:
                slot.release()

    async def _wait_for_agent(self, ii: InvokeInstance) -> bool:
        ready = self._ready_event(ii.instance_id)
        if ready.is_set():
            return True
        window = self.cloud.settings.scaled(self.cloud.settings.send_window_seconds)
        waiter = asyncio.ensure_future(ready.wait())
        stopped = asyncio.ensure_future(ii.stop_requested.wait())
        await asyncio.wait({waiter, stopped}, timeout=window, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        stopped.cancel()
        return ready.is_set() and not ii.stop_requested.is_set()

    def _script(self, invocation: Invocation, instance: Instance) -> str:
        script = invocation.command.content.decode("utf-8", errors="replace")
        if not invocation.command.enable_parameter:
            return script
        values = {
            **invocation.parameters,
            "ACS::InstanceId": instance.instance_id,
            "ACS::InstanceName": instance.name,
            "ACS::RegionId": instance.region,
            "ACS::InvokeId": invocation.invoke_id,
            "ACS::CommandId": invocation.command.command_id,
            "ACS::AccountId": self.cloud.settings.account_id,
        }
        return PARAMETER_PATTERN.sub(lambda m: str(values.get(m.group(1), m.group(0))), script)

    def _working_dir(self, invocation: Invocation, instance: Instance) -> Path:
        """The instance's view of WorkingDir: absolute paths live under its own filesystem."""
        wanted = invocation.working_dir or "/root"
        relative = PurePosixPath(wanted)
        if relative.is_absolute():
            relative = relative.relative_to("/")
        if ".." in relative.parts:
            return instance.home / "nonexistent-parent-reference"
        return instance.home / relative

    async def _run_process(
        self, invocation: Invocation, ii: InvokeInstance, instance: Instance
    ) -> None:
        cwd = self._working_dir(invocation, instance)
        if not cwd.is_dir():
            return self._finish(
                invocation,
                ii,
                "Failed",
                "DirectoryNotExists",
                "the specified directory does not exists",
            )
        script_path = instance.root / f"{invocation.invoke_id}.sh"
        script_path.write_text(self._script(invocation, instance))
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(instance.home / "root"),
            "LANG": "C.UTF-8",
            "INSTANCE_ID": instance.instance_id,
            "ALISIM_INSTANCE_ROOT": str(instance.home),
        }
        ii.status = "Running"
        ii.repeats = 1
        ii.start_time = ii.update_time = time.time()
        instance.last_invoked_at = ii.start_time
        instance.invocation_count += 1
        self.reaper.start()
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh",
            str(script_path),
            cwd=cwd,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        self.reaper.watch(proc.pid)
        captured = bytearray()

        async def pump() -> None:
            assert proc.stdout is not None
            while chunk := await proc.stdout.read(65536):
                ii.output_total += len(chunk)
                room = MAX_CAPTURED_OUTPUT - len(captured)
                if room > 0:
                    captured.extend(chunk[:room])

        reader = asyncio.ensure_future(pump())
        exited = asyncio.ensure_future(proc.wait())
        stopped = asyncio.ensure_future(ii.stop_requested.wait())
        try:
            await asyncio.wait(
                {exited, stopped},
                timeout=invocation.timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
            exited_by_itself = exited.done()
        finally:
            stopped.cancel()
            if not exited.done():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await exited
            try:
                await reader
            finally:
                self.reaper.forget(proc.pid)
            script_path.unlink(missing_ok=True)
        ii.output = bytes(captured)
        ii.exit_code = proc.returncode
        if not exited_by_itself and ii.stop_requested.is_set():
            ii.stop_time = time.time()
            return self._finish(
                invocation,
                ii,
                "Terminated",
                "ExecutionInterrupted",
                "the command execution has been interrupted",
            )
        if not exited_by_itself:
            return self._finish(
                invocation,
                ii,
                "Timeout",
                "ExecutionTimeout",
                "the command execution has been timeout",
            )
        if ii.exit_code == 0:
            return self._finish(invocation, ii, "Success", "", "")
        return self._finish(
            invocation,
            ii,
            "Failed",
            "ExitCodeNonzero",
            "the command execution exit code is not zero",
        )

    # ----- endings
    def _finish(
        self,
        invocation: Invocation,
        ii: InvokeInstance,
        status: str,
        error_code: str,
        error_info: str,
    ) -> None:
        ii.status = status
        ii.error_code = error_code
        ii.error_info = error_info
        ii.finish_time = ii.update_time = time.time()
        if status in ("Cancelled", "Terminated") and ii.stop_time is None:
            ii.stop_time = ii.finish_time
        if invocation.oss_output_delivery:
            ii.oss_status = "InProgress"
        events.publish_task_completed(self.cloud, invocation, ii)

    async def _deliver_output(self, invocation: Invocation, ii: InvokeInstance) -> None:
        if not invocation.oss_output_delivery:
            return
        bucket, prefix = parse_oss_destination(invocation.oss_output_delivery)
        key = "/".join(p for p in (prefix, invocation.invoke_id, ii.instance_id) if p)
        instance = self.cloud.instances.instances.get(ii.instance_id)
        if ii.status in ("Invalid", "Aborted", "Cancelled"):
            self._delivery_failed(
                ii,
                "UnsupportedInvocationStatus",
                f"the invocation status {ii.status} has no output to deliver",
            )
        elif instance is not None and not agent.supports_output_delivery(
            instance.os_type, instance.agent_version
        ):
            self._delivery_failed(
                ii, "ClientNeedUpgrade", f"agent {instance.agent_version} does not support delivery"
            )
        else:
            try:
                await self.cloud.oss.put_object(bucket, key, ii.output, "text/plain; charset=utf-8")
            except OssError as exc:
                self._delivery_failed(ii, exc.code, exc.message, status_code=str(exc.status))
            else:
                ii.oss_status = "Finished"
                ii.oss_uri = f"oss://{bucket}/{key}"
        events.publish_output_delivered(self.cloud, invocation, ii)

    @staticmethod
    def _delivery_failed(
        ii: InvokeInstance, code: str, info: str, status_code: str = "400"
    ) -> None:
        ii.oss_status = "Failed"
        ii.oss_error_code = code
        ii.oss_error_info = info
        ii.oss_status_code = status_code

    def summary(self) -> dict[str, int]:
        return {"invocations": len(self.invocations)}

    async def shutdown(self) -> None:
        tasks = [
            ii.task
            for invocation in self.invocations.values()
            for ii in invocation.instances.values()
            if ii.task is not None and not ii.task.done()
        ]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.reaper.close()
