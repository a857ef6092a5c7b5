"""Maps (API version, action) to the coroutine that serves it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from alisim.openapi.params import Params

if TYPE_CHECKING:
    from alisim.cloud import Cloud

Handler = Callable[["Cloud", Params], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Product:
    name: str
    version: str


ECS = Product("Ecs", "2014-05-26")
ROS = Product("ROS", "2019-09-10")
EVENTBRIDGE = Product("eventbridge", "2020-04-01")
STS = Product("Sts", "2015-04-01")

_HANDLERS: dict[tuple[str, str], Handler] = {}
PRODUCTS = {p.version: p for p in (ECS, ROS, EVENTBRIDGE, STS)}


def action(product: Product, name: str) -> Callable[[Handler], Handler]:
    def register(func: Handler) -> Handler:
        _HANDLERS[(product.version, name)] = func
        return func

    return register


def lookup(version: str, name: str) -> Handler | None:
    return _HANDLERS.get((version, name))
