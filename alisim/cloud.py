"""The root of alisim's state: one `Cloud` per server, built from the list of services in
`alisim/services.py` at start-up and rebuilt from the same list at every reset."""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alisim.config import Settings
from alisim.credentials import CredentialStore, NonceCache
from alisim.events import documents
from alisim.events.calllog import CallLog
from alisim.events.documents import NoticeConverter
from alisim.events.log import EventLog
from alisim.faults import Faults
from alisim.openapi.idempotency import IdempotencyCache
from alisim.openapi.registry import Router
from alisim.service import DevRoute, Service

if TYPE_CHECKING:
    from alisim.cloud_assistant.service import CloudAssistant
    from alisim.ecs.instances import InstanceService
    from alisim.eventbridge.service import EventBridgeService
    from alisim.oss.store import OssStore
    from alisim.ros.service import RosService


def _unique(what: str, names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"two services declare the {what} {name!r}")
        seen.add(name)


class Cloud:
    # The states `SERVICES` sets, named for readers and editors; the list is what wires them.
    oss: OssStore
    eventbridge: EventBridgeService
    instances: InstanceService
    assistant: CloudAssistant
    ros: RosService

    def __init__(
        self,
        settings: Settings | None = None,
        data_dir: Path | None = None,
        services: Sequence[Service] | None = None,
    ) -> None:
        if services is None:
            from alisim.services import SERVICES

            services = SERVICES
        self.settings = settings or Settings()
        self._tmp = None
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="alisim-")
            data_dir = Path(self._tmp.name)
        self.data_dir = data_dir
        # Kept across resets: access keys, replay protection, the event log's sequence.
        self.credentials = CredentialStore()
        self.nonces = NonceCache(self.settings.signature_window_seconds)
        self.events = EventLog(self.settings.event_log_limit)
        self.call_log = CallLog(self.settings.call_log_limit)
        self.events.subscribe(self._on_event)
        # Fixed for the server's life: what the services declare.
        self.services = tuple(services)
        _unique("service", [s.name for s in self.services])
        _unique("developer endpoint", [r for s in self.services for r in s.devapi])
        _unique("notice of", [t for s in self.services for t in s.notices])
        self.router = Router.of(s.actions for s in self.services if s.actions is not None)
        self.dev_routes: dict[str, DevRoute] = {
            path: route for s in self.services for path, route in s.devapi.items()
        }
        _unique("HTTP prefix", [p for s in self.services for p in s.http])
        self.http_routes: dict[str, DevRoute] = {
            prefix: route for s in self.services for prefix, route in s.http.items()
        }
        for prefix in self.http_routes:
            if not prefix.startswith("/_"):
                raise ValueError(f"an HTTP prefix must start with '/_' (not {prefix!r})")
        self.notices: dict[str, NoticeConverter] = {
            kind: convert for s in self.services for kind, convert in s.notices.items()
        }
        self._build()

    def _build(self) -> None:
        """Everything a reset forgets, built the same way at start-up."""
        self.calls: Counter[tuple[str, str]] = Counter()
        self.faults = Faults()
        self.idempotency = IdempotencyCache()
        for service in self.services:
            if service.state is not None:
                setattr(self, service.name, service.state(self))

    def state(self, service: Service) -> Any:
        return getattr(self, service.name, None)

    def _on_event(self, event: dict[str, Any]) -> None:
        self.call_log.event(event)
        for service in self.services:
            if service.on_event is not None:
                service.on_event(self.state(service), event)

    def publish_event(
        self,
        *,
        source: str,
        type: str,
        subject: str,
        data: dict[str, Any],
        at: float | None = None,
    ) -> None:
        """Publish a CloudEvent from `source` (`acs.ecs`, `acs.ros`…) as EventBridge carries it:
        into the event log, EventBridge's rules and CloudMonitor's subscriptions."""
        settings = self.settings
        self.events.publish(
            documents.cloud_event(
                type=type,
                source=source,
                region=settings.region,
                account_id=settings.account_id,
                subject=subject,
                data=data,
                at=at,
                precision=settings.event_time_precision,
            )
        )

    def count_call(self, product: str, action: str) -> None:
        self.calls[(product, action)] += 1
        self.call_log.call(product, action)

    def calls_by_product(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for (product, action), n in sorted(self.calls.items()):
            out.setdefault(product, {})[action] = n
        return out

    def summary(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for service in self.services:
            if service.summary is not None:
                counts.update(service.summary(self.state(service)))
        return counts

    async def _shutdown_services(self) -> None:
        for service in reversed(self.services):
            if service.shutdown is not None:
                await service.shutdown(self.state(service))

    async def reset(self) -> None:
        """Forget every resource, event, count and fault; keep settings and access keys."""
        await self._shutdown_services()
        for service in self.services:
            if service.forget is not None:
                service.forget(self.state(service))
        self.events.clear()
        self.call_log.clear()
        self._build()

    async def shutdown(self) -> None:
        await self._shutdown_services()
        if self._tmp is not None:
            self._tmp.cleanup()
