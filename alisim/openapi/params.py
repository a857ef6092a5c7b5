"""Typed access to OpenAPI parameters as the SDKs flatten them (`Tag.1.Key`, `InstanceId.1`)."""

from __future__ import annotations

import json
import re
from typing import Any

from alisim.errors import invalid_parameter, missing_parameter

_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


class Params:
    """The request's parameters; `caller`, the access key id its signature was checked with;
    its `request_id` (answered as `RequestId`) and the `host` the caller reached alisim at."""

    def __init__(
        self, values: dict[str, str], caller: str = "", request_id: str = "", host: str = ""
    ) -> None:
        self.values = values
        self.caller = caller
        self.request_id = request_id
        self.host = host

    def get(self, name: str, default: str | None = None) -> str | None:
        value = self.values.get(name)
        return default if value is None or value == "" else value

    def require(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise missing_parameter(name)
        return value

    def int(
        self,
        name: str,
        default: int | None = None,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> int | None:
        raw = self.get(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise invalid_parameter(name, f"{raw!r} is not an integer.") from None
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise invalid_parameter(name, f"It must be between {minimum} and {maximum}.")
        return value

    def bool(self, name: str, default: bool = False) -> bool:
        raw = self.get(name)
        if raw is None:
            return default
        lowered = raw.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise invalid_parameter(name, f"{raw!r} is not a boolean.")

    def list(self, name: str) -> list[str]:
        """`Name.1=a&Name.2=b` in index order."""
        pattern = re.compile(rf"^{re.escape(name)}\.(\d+)$")
        found = sorted(
            (int(m.group(1)), v) for k, v in self.values.items() if (m := pattern.match(k))
        )
        return [v for _, v in found if v != ""]

    def objects(self, name: str) -> list[dict[str, str]]:
        """`Tag.1.Key=a&Tag.1.Value=b` as `[{"Key": "a", "Value": "b"}]` in index order."""
        pattern = re.compile(rf"^{re.escape(name)}\.(\d+)\.(.+)$")
        grouped: dict[int, dict[str, str]] = {}
        for key, value in self.values.items():
            if m := pattern.match(key):
                grouped.setdefault(int(m.group(1)), {})[m.group(2)] = value
        return [grouped[i] for i in sorted(grouped)]

    def json(self, name: str) -> Any:
        raw = self.get(name)
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise invalid_parameter(name, "It is not valid JSON.") from None

    def id_list(self, name: str) -> list[str]:
        """A parameter the SDK sends as a JSON array string (`InstanceIds`), or flattened."""
        value = self.json(name)
        if value is None:
            return self.list(name)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise invalid_parameter(name, "It must be a JSON array of strings.")
        return value
