"""EventBridge state: buses and rules, and the routing of published events to their targets.

alisim's own events (every service's) are system events, so they enter the `default`
bus, as on the real service; rules on custom buses are stored and served but receive nothing
until alisim grows a PutEvents. Routing runs inside `EventLog.publish`, so it only matches,
transforms and submits: the HTTP work happens in the delivery engine's tasks.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from alisim.errors import ApiError
from alisim.eventbridge.cloudmonitor import CloudMonitor
from alisim.eventbridge.delivery import Delivery, DeliveryEngine
from alisim.eventbridge.models import EventBus, Rule, Target

if TYPE_CHECKING:
    from alisim.cloud import Cloud

log = logging.getLogger("alisim.eventbridge")

DEFAULT_BUS = "default"


def bus_not_found(name: str) -> ApiError:
    return ApiError("EventBusNotExist", f"The event bus [{name}] not existed!", 409)


def rule_not_found(bus: str, name: str) -> ApiError:
    return ApiError(
        "EventRuleNotExisted", f"The event rule [{name}] of event bus [{bus}] not existed!", 409
    )


class EventBridgeService:
    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud
        self.buses: dict[str, EventBus] = {DEFAULT_BUS: EventBus(DEFAULT_BUS, "default bus")}
        self.rules: dict[tuple[str, str], Rule] = {}
        self.deliveries = DeliveryEngine(cloud)
        self.cloudmonitor = CloudMonitor(self.deliveries, cloud.notices)

    # ----- lookups
    def bus(self, name: str) -> EventBus:
        bus = self.buses.get(name)
        if bus is None:
            raise bus_not_found(name)
        return bus

    def rule(self, bus: str, name: str) -> Rule:
        self.bus(bus)
        rule = self.rules.get((bus, name))
        if rule is None:
            raise rule_not_found(bus, name)
        return rule

    def rules_of(self, bus: str) -> list[Rule]:
        return sorted(
            (r for (b, _), r in self.rules.items() if b == bus), key=lambda r: r.created_ms
        )

    # ----- routing
    def on_event(self, event: dict[str, Any]) -> None:
        """EventLog listener: must never raise into the publisher."""
        try:
            self._route(event)
            self.cloudmonitor.on_event(event)
        except Exception:
            log.exception("failed to route event %s", event.get("id"))

    def _route(self, event: dict[str, Any]) -> None:
        bus = str(event.get("aliyuneventbusname") or DEFAULT_BUS)
        for rule in self.rules_of(bus):
            if not rule.enabled or not rule.pattern.matches(event):
                continue
            for target in list(rule.targets.values()):
                self._deliver(rule, target, event)

    def _deliver(self, rule: Rule, target: Target, event: dict[str, Any]) -> None:
        if not target.is_http:
            self.deliveries.submit_unsupported(
                self._delivery(rule, target, event, url=target.endpoint or "", body=""),
                f"target type {target.type!r} is not simulated; only HTTP targets are",
            )
            return
        url = target.url or ""
        self.deliveries.submit(
            self._delivery(rule, target, event, url=url, body=target.body().render(event))
        )

    @staticmethod
    def _delivery(
        rule: Rule, target: Target, event: dict[str, Any], *, url: str, body: str
    ) -> Delivery:
        return Delivery(
            channel="eventbridge",
            rule=f"{rule.bus}/{rule.name}",
            target=target.id,
            url=url,
            body=body,
            event=event,
            event_id=str(event.get("id", "")),
            event_type=str(event.get("type", "")),
            strategy=target.retry_strategy,
            errors_tolerance=target.errors_tolerance,
            dead_letter_arn=target.dead_letter_queue.arn if target.dead_letter_queue else None,
        )

    async def shutdown(self) -> None:
        await self.deliveries.shutdown()

    def forget(self) -> None:
        """At reset: the dead-letter file outlives the service's state, so empty it."""
        self.deliveries.clear_dead_letters()
