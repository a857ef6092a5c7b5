"""Parse a push body as strict JSON, or say exactly what is wrong and where.

Python's `json` accepts `NaN`, `Infinity`, numbers that overflow to infinity (`1e999`) and
lone UTF-16 surrogates (`"\\ud800"`), none of which Prefect can store or serve back. Found
here, they cost only the push that carried them (400), not the write it would share.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")
_MAX_KEY = 40
_MAX_PATH = 200

Trail = tuple["Trail", str | int] | None


class StrictJSONError(ValueError):
    """The body is not strict JSON; the message says what and where."""


class _NonFinite:
    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _float(text: str) -> float | _NonFinite:
    value = float(text)
    return value if math.isfinite(value) else _NonFinite(text)


def printable(text: str, limit: int = 300) -> str:
    """`text` made encodable as UTF-8 (surrogates escaped) and cut to `limit` characters."""
    safe = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return safe if len(safe) <= limit else safe[: limit - 1] + "…"


def _path(trail: Trail) -> str:
    parts: list[str] = []
    while trail is not None:
        trail, key = trail
        parts.append(f"[{key}]" if isinstance(key, int) else f".{printable(key, _MAX_KEY)}")
    return printable("$" + "".join(reversed(parts)), _MAX_PATH)


def _check(value: Any, max_depth: int) -> None:
    """Iterative walk (a hostile body must not exhaust the stack)."""
    stack: list[tuple[Any, int, Trail]] = [(value, 1, None)]
    while stack:
        item, depth, trail = stack.pop()
        if isinstance(item, dict):
            if depth > max_depth:
                raise StrictJSONError(f"JSON nested deeper than {max_depth}")
            for key, child in item.items():
                if _SURROGATE.search(key):
                    raise StrictJSONError(
                        f"a key at {_path((trail, key))} holds a lone UTF-16 surrogate, "
                        "which cannot be encoded as UTF-8"
                    )
                stack.append((child, depth + 1, (trail, key)))
        elif isinstance(item, list):
            if depth > max_depth:
                raise StrictJSONError(f"JSON nested deeper than {max_depth}")
            stack.extend((child, depth + 1, (trail, i)) for i, child in enumerate(item))
        elif isinstance(item, str):
            if _SURROGATE.search(item):
                raise StrictJSONError(
                    f"the string at {_path(trail)} holds a lone UTF-16 surrogate, "
                    "which cannot be encoded as UTF-8"
                )
        elif isinstance(item, _NonFinite):
            raise StrictJSONError(
                f"the number at {_path(trail)} is {printable(item.text, 40)}: "
                "JSON numbers must be finite (no NaN or Infinity)"
            )


def loads(body: bytes, max_depth: int) -> Any:
    """The parsed body; StrictJSONError if it is not strict JSON or nests past `max_depth`."""
    try:
        parsed = json.loads(body, parse_constant=_NonFinite, parse_float=_float)
    except (ValueError, RecursionError):
        raise StrictJSONError("body is not valid JSON") from None
    _check(parsed, max_depth)
    return parsed
