"""ECS instances: creation, the lifecycle state machine, and the events it publishes.

Every transition runs in the server's event loop as one task per instance; delays come from
the settings (scaled by `time_scale`), so tests and benchmarks can boot instantly.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import shutil
import time
from typing import TYPE_CHECKING

from alisim import ids
from alisim.ecs import events
from alisim.ecs import user_data as cloud_init
from alisim.ecs.models import Instance, InstanceStatus
from alisim.errors import ApiError

if TYPE_CHECKING:
    from alisim.cloud import Cloud


DEFAULT_NETWORK = ipaddress.IPv4Network("192.168.0.0/16")


def os_type_of(image_id: str) -> str:
    return "windows" if image_id.lower().startswith("win") else "linux"


def not_found(instance_id: str) -> ApiError:
    return ApiError(
        "InvalidInstanceId.NotFound",
        f"The specified InstanceId {instance_id} does not exist.",
        404,
    )


def incorrect_status(instance: Instance, action: str) -> ApiError:
    return ApiError(
        "IncorrectInstanceStatus",
        f"The current status of the resource does not support this operation: {action} on "
        f"{instance.instance_id} in status {instance.status}.",
        403,
    )


class InstanceService:
    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud
        self.instances: dict[str, Instance] = {}
        self._launched = 0

    def _next_private_ip(self) -> str:
        """An address of alisim's default network (192.168.0.0/16, reused after 65,534
        launches) for instances launched without one."""
        self._launched += 1
        return str(DEFAULT_NETWORK.network_address + 1 + (self._launched - 1) % 65_534)

    # ----- queries
    def get(self, instance_id: str) -> Instance:
        instance = self.instances.get(instance_id)
        if instance is None:
            raise not_found(instance_id)
        return instance

    # ----- creation
    def create(
        self,
        *,
        image_id: str,
        instance_type: str,
        name: str | None,
        hostname: str | None,
        tags: dict[str, str],
        zone: str | None,
        private_ip: str = "",
        vpc_id: str = "",
        vswitch_id: str = "",
        security_group_ids: list[str] | None = None,
        user_data: bytes = b"",
    ) -> Instance:
        settings = self.cloud.settings
        os_type = os_type_of(image_id)
        instance_id = ids.instance_id(settings.region)
        root = self.cloud.data_dir / "instances" / instance_id
        (root / "fs" / "root").mkdir(parents=True, exist_ok=True)
        instance = Instance(
            instance_id=instance_id,
            name=name or instance_id,
            hostname=hostname or f"iZ{instance_id[2:]}Z",
            image_id=image_id,
            instance_type=instance_type,
            os_type=os_type,
            region=settings.region,
            zone=zone or f"{settings.region}-k",
            root=root,
            agent_version=getattr(settings.agent_versions, os_type),
            tags=tags,
            private_ip=private_ip or self._next_private_ip(),
            vpc_id=vpc_id,
            vswitch_id=vswitch_id,
            security_group_ids=list(security_group_ids or []),
            user_data=user_data,
        )
        self.instances[instance_id] = instance
        self._publish_state(instance)
        self._run(instance, self._boot(instance, from_pending=True))
        return instance

    # ----- lifecycle
    def _run(self, instance: Instance, coro: object) -> None:
        if instance.lifecycle is not None and not instance.lifecycle.done():
            instance.lifecycle.cancel()
        instance.lifecycle = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]

    async def _sleep(self, seconds: float) -> None:
        delay = self.cloud.settings.scaled(seconds)
        await asyncio.sleep(delay)

    def _boot_seconds(self, instance: Instance) -> float:
        dist = (
            self.cloud.settings.boot_time_windows
            if instance.is_windows
            else self.cloud.settings.boot_time_linux
        )
        return random.uniform(dist.min_seconds, max(dist.min_seconds, dist.max_seconds))

    def _set_status(self, instance: Instance, status: InstanceStatus) -> None:
        if instance.status == status:
            return
        instance.status = status
        self._publish_state(instance)

    def _publish_state(self, instance: Instance, state: str | None = None) -> None:
        events.publish_state(self.cloud, instance.instance_id, state or str(instance.status))

    async def _boot(self, instance: Instance, *, from_pending: bool) -> None:
        if from_pending:
            await self._sleep(self.cloud.settings.pending_seconds)
        self._set_status(instance, InstanceStatus.STARTING)
        await self._sleep(self.cloud.settings.pending_seconds)
        self._set_status(instance, InstanceStatus.RUNNING)
        instance.started_at = time.time()
        await self._sleep(self._boot_seconds(instance))
        self._agent_up(instance)
        if from_pending:
            cloud_init.start(self.cloud, instance)

    def _agent_up(self, instance: Instance) -> None:
        instance.agent_online = True
        instance.last_heartbeat_at = time.time()
        self.cloud.assistant.agent_online(instance)

    def _begin_stop(self, instance: Instance) -> None:
        """The call itself puts the instance in Stopping (documented), before it answers."""
        self._set_status(instance, InstanceStatus.STOPPING)
        instance.agent_online = False
        self.cloud.assistant.instance_stopping(instance)

    async def _stop(self, instance: Instance, then_start: bool) -> None:
        await self._sleep(self.cloud.settings.stop_seconds)
        if then_start:
            await self._boot(instance, from_pending=False)
        else:
            self._set_status(instance, InstanceStatus.STOPPED)

    # ----- actions
    def start(self, instance: Instance) -> None:
        if instance.status != InstanceStatus.STOPPED:
            raise incorrect_status(instance, "StartInstances")
        self._set_status(instance, InstanceStatus.STARTING)
        self._run(instance, self._boot(instance, from_pending=False))

    def stop(self, instance: Instance, force: bool) -> None:
        if instance.status == InstanceStatus.STOPPED:
            return
        if instance.status not in (InstanceStatus.RUNNING, InstanceStatus.STARTING) and not force:
            raise incorrect_status(instance, "StopInstances")
        self._begin_stop(instance)
        self._run(instance, self._stop(instance, then_start=False))

    def reboot(self, instance: Instance, force: bool) -> None:
        if instance.status != InstanceStatus.RUNNING:
            raise incorrect_status(instance, "RebootInstances")
        self._begin_stop(instance)
        self._run(instance, self._stop(instance, then_start=True))

    def check_deletable(self, instance: Instance, force: bool) -> None:
        if instance.status != InstanceStatus.STOPPED and not force:
            raise incorrect_status(instance, "DeleteInstances")
        if instance.status == InstanceStatus.PENDING:
            raise incorrect_status(instance, "DeleteInstances")

    def delete(self, instance: Instance) -> None:
        if instance.lifecycle is not None:
            instance.lifecycle.cancel()
        cloud_init.stop(instance)
        instance.agent_online = False
        instance.deleted = True
        self.cloud.assistant.instance_stopping(instance)
        del self.instances[instance.instance_id]
        self._publish_state(instance, state="Deleted")
        shutil.rmtree(instance.root, ignore_errors=True)

    def summary(self) -> dict[str, int]:
        return {"instances": len(self.instances)}

    async def shutdown(self) -> None:
        tasks = [i.lifecycle for i in self.instances.values() if i.lifecycle is not None]
        tasks += [i.user_data_task for i in self.instances.values() if i.user_data_task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
