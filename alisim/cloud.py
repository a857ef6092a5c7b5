"""The root of alisim's state: one `Cloud` per server, reset as a whole."""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from alisim.config import Settings
from alisim.credentials import CredentialStore, NonceCache
from alisim.eventbridge.service import EventBridgeService
from alisim.events import documents
from alisim.events.log import EventLog
from alisim.faults import Faults
from alisim.openapi.idempotency import IdempotencyCache
from alisim.oss.store import OssStore


class Cloud:
    def __init__(self, settings: Settings | None = None, data_dir: Path | None = None) -> None:
        from alisim.ecs.assistant import CloudAssistant
        from alisim.ecs.instances import InstanceService

        self.settings = settings or Settings()
        self._tmp = None
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="alisim-")
            data_dir = Path(self._tmp.name)
        self.data_dir = data_dir
        self.credentials = CredentialStore()
        self.nonces = NonceCache(self.settings.signature_window_seconds)
        self.faults = Faults()
        self.calls: Counter[tuple[str, str]] = Counter()
        self.events = EventLog(self.settings.event_log_limit)
        self.oss = OssStore(self.settings.region)
        self.idempotency = IdempotencyCache()
        self.instances = InstanceService(self)
        self.assistant = CloudAssistant(self)
        self.eventbridge = EventBridgeService(self)
        # Subscribed once: the listener follows `self.eventbridge` across resets.
        self.events.subscribe(lambda event: self.eventbridge.on_event(event))

    def publish_ecs_event(self, type: str, instance_id: str, data: dict[str, Any]) -> None:
        """Publish an `acs.ecs` CloudEvent about one instance, as EventBridge carries it."""
        settings = self.settings
        self.events.publish(
            documents.cloud_event(
                type=type,
                source="acs.ecs",
                region=settings.region,
                account_id=settings.account_id,
                subject=documents.instance_arn(settings.region, settings.account_id, instance_id),
                data=data,
            )
        )

    def count_call(self, product: str, action: str) -> None:
        self.calls[(product, action)] += 1

    def calls_by_product(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for (product, action), n in sorted(self.calls.items()):
            out.setdefault(product, {})[action] = n
        return out

    async def reset(self) -> None:
        """Forget every resource, event, count and fault; keep settings and access keys."""
        await self.assistant.shutdown()
        await self.instances.shutdown()
        await self.eventbridge.shutdown()
        self.eventbridge.deliveries.clear_dead_letters()
        from alisim.ecs.assistant import CloudAssistant
        from alisim.ecs.instances import InstanceService

        self.calls.clear()
        self.faults = Faults()
        self.events.clear()
        self.oss = OssStore(self.settings.region)
        self.idempotency = IdempotencyCache()
        self.instances = InstanceService(self)
        self.assistant = CloudAssistant(self)
        self.eventbridge = EventBridgeService(self)

    async def shutdown(self) -> None:
        await self.assistant.shutdown()
        await self.instances.shutdown()
        await self.eventbridge.shutdown()
        if self._tmp is not None:
            self._tmp.cleanup()
