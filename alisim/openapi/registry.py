"""OpenAPI routing: each service's explicit table of actions, merged into one router.

A table names its product (name and API version) and maps each action to its handler and its
region rule. Dispatch applies the rule before the handler runs, so no handler can forget it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from alisim.errors import ApiError
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


class Region(StrEnum):
    """What an action does with `RegionId` (alisim serves one region, `settings.region`)."""

    REQUIRED = "required"
    """Must be given and be alisim's region (ECS and ROS actions)."""
    OPTIONAL = "optional"
    """Checked when given (ROS ValidateTemplate)."""
    NONE = "none"
    """The action takes no RegionId (ECS DeleteInstance, EventBridge, STS)."""


def wrong_region(region: str, served: str) -> ApiError:
    return ApiError(
        "InvalidRegionId.NotFound",
        f"The region {region} is not served by this endpoint (alisim serves {served}).",
        404,
    )


@dataclass(frozen=True)
class Action:
    handler: Handler
    region: Region | None = None
    """None: the table's rule."""


@dataclass(frozen=True)
class Route:
    product: Product
    name: str
    handler: Handler
    region: Region

    def check_region(self, params: Params, served: str) -> None:
        if self.region is Region.NONE:
            return
        required = self.region is Region.REQUIRED
        region = params.require("RegionId") if required else params.get("RegionId")
        if region and region != served:
            raise wrong_region(region, served)


@dataclass(frozen=True)
class ActionTable:
    """One service's actions: `{"RunInstances": run_instances, "X": Action(x, Region.NONE)}`."""

    product: Product
    actions: Mapping[str, Handler | Action]
    region: Region = Region.REQUIRED
    """The rule of every action not given as an `Action` with its own."""

    def routes(self) -> Iterable[Route]:
        for name, entry in self.actions.items():
            action = entry if isinstance(entry, Action) else Action(entry)
            yield Route(self.product, name, action.handler, action.region or self.region)


@dataclass
class Router:
    """(API version, action) -> route, from the tables of every service."""

    products: dict[str, Product] = field(default_factory=dict)
    routes: dict[tuple[str, str], Route] = field(default_factory=dict)

    @classmethod
    def of(cls, tables: Iterable[ActionTable]) -> Router:
        router = cls()
        for table in tables:
            known = router.products.setdefault(table.product.version, table.product)
            if known != table.product:
                raise ValueError(f"API version {table.product.version} names {known} already")
            for route in table.routes():
                key = (route.product.version, route.name)
                if key in router.routes:
                    raise ValueError(f"{route.product.name} {route.name} is registered twice")
                router.routes[key] = route
        return router

    def product(self, version: str) -> Product | None:
        return self.products.get(version)

    def lookup(self, version: str, name: str) -> Route | None:
        return self.routes.get((version, name))
