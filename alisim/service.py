"""What a service declares to be part of alisim. The list of them is `alisim/services.py`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from alisim.events.documents import NoticeConverter
from alisim.openapi.registry import ActionTable

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from alisim.cloud import Cloud

DevRoute = Callable[["Cloud", "Request"], Awaitable["Response"]]


@dataclass(frozen=True)
class Service:
    name: str
    """Where its state lives: `cloud.<name>`."""
    state: Callable[[Cloud], Any] | None = None
    """Builds the state, at start-up and again at every reset (`cloud` is fully set up but
    for the services listed after this one)."""
    actions: ActionTable | None = None
    """The OpenAPI actions it answers, with their region rules."""
    devapi: Mapping[str, DevRoute] = field(default_factory=dict)
    """Developer endpoints it adds: `{"deliveries": route}` serves `/_alisim/deliveries`."""
    http: Mapping[str, DevRoute] = field(default_factory=dict)
    """Plain HTTP endpoints it serves by path prefix, outside OpenAPI and the developer API
    (ROS's wait-condition signal URL). A prefix starts with `/_`, which no OSS bucket name
    can, so it never hides a bucket."""
    notices: Mapping[str, NoticeConverter] = field(default_factory=dict)
    """CloudMonitor notifications of its CloudEvent types, by type."""
    on_event: Callable[[Any, dict[str, Any]], None] | None = None
    """Called with the state for every published event (must not raise)."""
    summary: Callable[[Any], dict[str, int]] | None = None
    """Counts shown by `/_alisim/health`."""
    shutdown: Callable[[Any], Awaitable[None]] | None = None
    """Stops the state's background work, at reset and at exit, in reverse list order."""
    forget: Callable[[Any], None] | None = None
    """At reset only, after shutdown: clears what outlives the state (files)."""
