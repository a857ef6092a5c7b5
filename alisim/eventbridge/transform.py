"""Event transformation for a target's `Body` parameter: ORIGINAL, JSONPATH, TEMPLATE, CONSTANT.

The JSONPath dialect is the subset EventBridge's examples use: `$`, `$.a.b`, `$.a[0]`,
`$['a-b']`. TEMPLATE takes `Value`, a JSON object of variables (a `$…` path or a constant),
and `Template`, text with `${name}` placeholders: strings go in as they are, other values as
JSON, null as `null`; a variable that is missing or finds nothing leaves its placeholder.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from typing import Any

FORMS = ("ORIGINAL", "JSONPATH", "TEMPLATE", "CONSTANT")

_STEP = re.compile(r"\.([^.\[\]]+)|\[(\d+)\]|\['([^']*)'\]|\[\"([^\"]*)\"\]")
_PLACEHOLDER = re.compile(r"\$\{([^{}]+)\}")
_MISSING = object()


class TransformError(ValueError):
    """A Body parameter that cannot be applied; raised when targets are put, not at delivery."""


@dataclass(frozen=True)
class JsonPath:
    text: str
    steps: tuple[str | int, ...]

    @classmethod
    @functools.lru_cache(maxsize=1024)
    def parse(cls, text: str) -> JsonPath:
        if not text.startswith("$"):
            raise TransformError(f"the JSONPath {text!r} must start with '$'")
        steps: list[str | int] = []
        pos = 1
        while pos < len(text):
            m = _STEP.match(text, pos)
            if m is None:
                raise TransformError(f"the JSONPath {text!r} is not supported at {text[pos:]!r}")
            name, index, quoted, dquoted = m.groups()
            if index is not None:
                steps.append(int(index))
            else:
                steps.append(next(g for g in (name, quoted, dquoted) if g is not None))
            pos = m.end()
        return cls(text, tuple(steps))

    def find(self, document: Any) -> Any:
        """The value at this path, or `_MISSING`."""
        current = document
        for step in self.steps:
            if isinstance(step, int):
                if not isinstance(current, list) or step >= len(current):
                    return _MISSING
                current = current[step]
            else:
                if not isinstance(current, dict) or step not in current:
                    return _MISSING
                current = current[step]
        return current


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


@dataclass(frozen=True)
class BodyTransform:
    form: str
    value: str | None = None
    template: str | None = None

    @classmethod
    def build(cls, form: str, value: str | None, template: str | None) -> BodyTransform:
        """Validate once, so a bad transform fails PutTargets rather than every delivery."""
        if form not in FORMS:
            raise TransformError(f"the Body form {form!r} is not one of {', '.join(FORMS)}")
        if form == "JSONPATH":
            JsonPath.parse(value or "")
        elif form == "TEMPLATE":
            _variables(value)
            if template is None:
                raise TransformError("a TEMPLATE Body needs a Template")
        elif form == "CONSTANT" and value is None:
            raise TransformError("a CONSTANT Body needs a Value")
        return cls(form, value, template)

    def render(self, event: dict[str, Any]) -> str:
        if self.form == "ORIGINAL":
            return json.dumps(event, ensure_ascii=False)
        if self.form == "CONSTANT":
            return self.value or ""
        if self.form == "JSONPATH":
            found = JsonPath.parse(self.value or "").find(event)
            return "null" if found is _MISSING else _as_text(found)
        values: dict[str, str] = {}
        for name, source in _variables(self.value).items():
            if isinstance(source, JsonPath):
                found = source.find(event)
                if found is not _MISSING:
                    values[name] = _as_text(found)
            else:
                values[name] = source
        return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), self.template or "")


def _variables(value: str | None) -> dict[str, JsonPath | str]:
    try:
        parsed = json.loads(value or "{}")
    except ValueError:
        raise TransformError("the TEMPLATE Value must be a JSON object of variables") from None
    if not isinstance(parsed, dict):
        raise TransformError("the TEMPLATE Value must be a JSON object of variables")
    variables: dict[str, JsonPath | str] = {}
    for name, source in parsed.items():
        if isinstance(source, str) and source.startswith("$"):
            variables[name] = JsonPath.parse(source)
        else:
            variables[name] = _as_text(source)
    return variables


ORIGINAL = BodyTransform("ORIGINAL")
