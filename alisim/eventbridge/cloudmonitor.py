"""CloudMonitor-style system-event pushes: webhook subscriptions fed from alisim's CloudEvents.

CloudMonitor speaks its own JSON, not CloudEvents (`shared/reference/`). Each service declares
the converters of its CloudEvent types into `Notice`s (`Service.notices`, e.g.
`alisim/ecs/events.py`). Pushes share the EventBridge delivery machinery: retries, dead
letters, faults and the delivery log.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field, field_validator

from alisim.eventbridge.delivery import Delivery
from alisim.eventbridge.models import DEFAULT_RETRY_STRATEGY, RetryStrategy
from alisim.events.documents import Notice, NoticeConverter

if TYPE_CHECKING:
    from alisim.eventbridge.delivery import DeliveryEngine


class SubscriptionRequest(BaseModel):
    """Body of `POST /_alisim/cloudmonitor/subscriptions`."""

    url: str = Field(min_length=1)
    names: list[str] = Field(default=[], description="Event names; empty for all.")
    products: list[str] = Field(default=[], description="Products (any case); empty for all.")
    push_retry_strategy: RetryStrategy = DEFAULT_RETRY_STRATEGY

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not url.lower().startswith(("http://", "https://")):
            raise ValueError("the url must be http:// or https://")
        return url


class Subscription(SubscriptionRequest):
    id: str

    def wants(self, notice: Notice) -> bool:
        if self.names and notice.name not in self.names:
            return False
        return not self.products or notice.product.lower() in {p.lower() for p in self.products}


class CloudMonitor:
    def __init__(
        self, deliveries: DeliveryEngine, converters: Mapping[str, NoticeConverter]
    ) -> None:
        self.deliveries = deliveries
        self.converters = converters
        self.subscriptions: dict[str, Subscription] = {}

    def to_notice(self, event: dict[str, Any]) -> Notice | None:
        convert = self.converters.get(str(event.get("type", "")))
        return convert(event) if convert is not None else None

    def subscribe(self, request: SubscriptionRequest) -> Subscription:
        subscription = Subscription(id=f"sub-{uuid.uuid4().hex[:12]}", **request.model_dump())
        self.subscriptions[subscription.id] = subscription
        return subscription

    def unsubscribe(self, subscription_id: str | None) -> int:
        """Remove one subscription, or all when no id is given; how many went."""
        if subscription_id is None:
            removed = len(self.subscriptions)
            self.subscriptions.clear()
            return removed
        return 1 if self.subscriptions.pop(subscription_id, None) is not None else 0

    def on_event(self, event: dict[str, Any]) -> None:
        if not self.subscriptions:
            return
        notice = self.to_notice(event)
        if notice is None:
            return
        for subscription in list(self.subscriptions.values()):
            if subscription.wants(notice):
                self.deliveries.submit(
                    Delivery(
                        channel="cloudmonitor",
                        rule=subscription.id,
                        target=subscription.id,
                        url=subscription.url,
                        body=json.dumps(notice.document, ensure_ascii=False),
                        event=notice.document,
                        event_id=str(notice.document.get("id", "")),
                        event_type=notice.name,
                        strategy=subscription.push_retry_strategy,
                        errors_tolerance="ALL",
                    )
                )
