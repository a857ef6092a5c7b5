"""What a ROS resource type is to the stack engine: create, update in place or replace,
delete, its `Ref` and its attributes. Each type maps onto alisim's own services, so what it
makes is real there (instances with their events, commands that run, buckets that hold)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from alisim.ros.template.functions import as_text

if TYPE_CHECKING:
    from alisim.cloud import Cloud
    from alisim.ros.models import Stack, StackResource


class ResourceFailed(Exception):
    """The resource's operation failed: `code: message` becomes its StatusReason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def invalid_property(name: str, reason: str) -> ResourceFailed:
    return ResourceFailed(
        "InvalidParameter", f"The specified parameter {name} is invalid, {reason}"
    )


@dataclass
class Context:
    cloud: Cloud
    stack: Stack
    resource: StackResource

    async def sleep(self, seconds: float) -> None:
        """A simulated delay, scaled by `time_scale` like every other."""
        await asyncio.sleep(self.cloud.settings.scaled(seconds))

    def tags(self, props: dict[str, Any]) -> dict[str, str]:
        """The stack's tags (ROS propagates them) and the resource's own `Tags`."""
        tags = dict(self.stack.tags)
        own = props.get("Tags")
        if isinstance(own, list):
            for tag in own:
                if isinstance(tag, dict) and tag.get("Key"):
                    tags[str(tag["Key"])] = as_text(tag.get("Value", ""))
        elif isinstance(own, dict):
            tags.update({str(k): as_text(v) for k, v in own.items()})
        return tags


def text(props: dict[str, Any], name: str, default: str | None = None) -> str | None:
    value = props.get(name)
    if value is None or value == "":
        return default
    if isinstance(value, (dict, list)):
        raise invalid_property(name, "it must be a string.")
    return as_text(value)


def required_text(props: dict[str, Any], name: str) -> str:
    value = text(props, name)
    if value is None:
        raise ResourceFailed("MissingParameter", f"The input parameter {name} should be specified.")
    return value


def integer(
    props: dict[str, Any],
    name: str,
    default: int,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int:
    value = props.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(float(value)) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        number = None
    if number is None:
        raise invalid_property(name, f"{value!r} is not an integer.")
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        raise invalid_property(name, f"it must be between {minimum} and {maximum}.")
    return number


def boolean(props: dict[str, Any], name: str, default: bool) -> bool:
    value = props.get(name)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    if as_text(value).lower() in ("true", "false"):
        return as_text(value).lower() == "true"
    raise invalid_property(name, f"{value!r} is not true or false.")


def text_list(props: dict[str, Any], name: str) -> list[str]:
    value = props.get(name)
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or any(isinstance(v, (dict, list)) for v in value):
        raise invalid_property(name, "it must be a list of strings.")
    return [as_text(v) for v in value]


class ResourceType:
    """A resource type: subclasses set the class attributes and the three operations."""

    name: ClassVar[str]
    attributes: ClassVar[frozenset[str]] = frozenset()
    required: ClassVar[tuple[str, ...]] = ()
    replace_on: ClassVar[frozenset[str]] = frozenset()
    """Properties whose change replaces the resource; `*` for any change."""

    async def create(self, ctx: Context, props: dict[str, Any]) -> None:
        raise NotImplementedError

    async def update(self, ctx: Context, old: dict[str, Any], new: dict[str, Any]) -> None:
        """In place; the default records the new properties only."""

    async def delete(self, ctx: Context) -> None:
        """Remove what `create` made; a thing already gone is not an error."""

    def replaces(self, old: dict[str, Any], new: dict[str, Any]) -> bool:
        if "*" in self.replace_on:
            return old != new
        return any(old.get(name) != new.get(name) for name in self.replace_on)

    def ref(self, resource: StackResource) -> Any:
        return resource.physical_id

    def attribute(self, resource: StackResource, name: str) -> Any:
        return resource.attributes.get(name)
