"""Parameter values: the caller's text, or the template's default, typed and checked against
the declaration (AllowedValues, AllowedPattern, Min/MaxValue, Min/MaxLength)."""

from __future__ import annotations

import json
import re
from typing import Any

from alisim.ros.template.errors import TemplateError, missing_parameter, unknown_parameter
from alisim.ros.template.functions import as_text
from alisim.ros.template.parse import NO_DEFAULT, ParameterSpec, Template

NO_ECHO_MASK = "****"


def _invalid(spec: ParameterSpec, reason: str) -> TemplateError:
    detail = spec.constraint_description or reason
    return TemplateError(f"Parameter '{spec.name}' is invalid: {detail}")


def _typed(spec: ParameterSpec, value: Any) -> Any:
    kind = spec.type
    if kind == "String":
        if isinstance(value, (dict, list)):
            raise _invalid(spec, "a String parameter needs a string value.")
        return as_text(value)
    if kind == "Number":
        if isinstance(value, bool):
            raise _invalid(spec, f"{value!r} is not a number.")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise _invalid(spec, f"{value!r} is not a number.") from None
        return int(number) if number.is_integer() and "." not in str(value) else number
    if kind == "Boolean":
        if isinstance(value, bool):
            return value
        if as_text(value).lower() in ("true", "false"):
            return as_text(value).lower() == "true"
        raise _invalid(spec, f"{value!r} is not true or false.")
    if kind == "CommaDelimitedList":
        if isinstance(value, list):
            return [as_text(v) for v in value]
        return [] if value in ("", None) else [v.strip() for v in as_text(value).split(",")]
    if isinstance(value, (dict, list)):
        return value
    try:
        parsed = json.loads(as_text(value))
    except ValueError:
        raise _invalid(spec, "a Json parameter needs a JSON object or list.") from None
    if not isinstance(parsed, (dict, list)):
        raise _invalid(spec, "a Json parameter needs a JSON object or list.")
    return parsed


def _check(spec: ParameterSpec, value: Any) -> None:
    if spec.allowed_values is not None:
        allowed = {as_text(v) for v in spec.allowed_values}
        items = value if isinstance(value, list) else [value]
        for item in items:
            if as_text(item) not in allowed:
                raise _invalid(
                    spec, f"{as_text(item)!r} is not one of the allowed values {sorted(allowed)}."
                )
    if spec.type == "String":
        if spec.allowed_pattern is not None and not re.fullmatch(spec.allowed_pattern, value):
            raise _invalid(spec, f"{value!r} does not match the pattern {spec.allowed_pattern}.")
        if spec.min_length is not None and len(value) < spec.min_length:
            raise _invalid(spec, f"it must be at least {spec.min_length} characters long.")
        if spec.max_length is not None and len(value) > spec.max_length:
            raise _invalid(spec, f"it must be at most {spec.max_length} characters long.")
    if spec.type == "Number":
        if spec.min_value is not None and value < spec.min_value:
            raise _invalid(spec, f"{value} is less than the minimum {as_text(spec.min_value)}.")
        if spec.max_value is not None and value > spec.max_value:
            raise _invalid(spec, f"{value} is more than the maximum {as_text(spec.max_value)}.")


def value_of(spec: ParameterSpec, raw: Any) -> Any:
    typed = _typed(spec, raw)
    _check(spec, typed)
    return typed


def check_defaults(template: Template) -> None:
    """A default must meet its own constraints (checked by ValidateTemplate too)."""
    for spec in template.parameters.values():
        if spec.default is not NO_DEFAULT:
            value_of(spec, spec.default)


def resolve(template: Template, given: dict[str, str]) -> dict[str, Any]:
    """The typed value of every template parameter."""
    unknown = [name for name in given if name not in template.parameters]
    if unknown:
        raise unknown_parameter(unknown[0])
    values: dict[str, Any] = {}
    for name, spec in template.parameters.items():
        if name in given:
            values[name] = value_of(spec, given[name])
        elif spec.default is not NO_DEFAULT:
            values[name] = value_of(spec, spec.default)
        else:
            raise missing_parameter(name)
    return values


def shown(template: Template, values: dict[str, Any]) -> dict[str, str]:
    """Values as GetStack returns them: text, and `****` for NoEcho."""
    out = {}
    for name, value in values.items():
        spec = template.parameters.get(name)
        out[name] = NO_ECHO_MASK if spec is not None and spec.no_echo else as_text(value)
    return out
