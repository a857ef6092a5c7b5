"""Intrinsic functions and pseudo-parameters, evaluated against a stack's values.

`Evaluator.evaluate` resolves a template value. Parameters and pseudo-parameters come from
`values`; resources (their `Ref` and attributes) from a `Resources` view the stack engine
provides, and conditions from the template's `Conditions`. `{"Ref": "ALIYUN::NoValue"}`
removes the key or item it stands for. A problem is a `TemplateError` saying where.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any, Protocol

from alisim.ros.template.errors import TemplateError, bad_reference
from alisim.ros.template.parse import FUNCTIONS, Template, function_of, sub_variables


class _NoValue:
    def __repr__(self) -> str:
        return "ALIYUN::NoValue"


NO_VALUE: Any = _NoValue()


class Resources(Protocol):
    """The stack's resources as the functions see them."""

    def ref(self, name: str) -> Any: ...

    def attribute(self, name: str, attribute: str) -> Any: ...


def zones(region: str) -> list[str]:
    """`Fn::GetAZs`: alisim's zones of a region (its instances default to the first)."""
    return [f"{region}-k", f"{region}-j", f"{region}-h"]


def as_text(value: Any) -> str:
    """A value as `Fn::Join` and `Fn::Sub` write it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _as_bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise TemplateError(f"{where}: {value!r} is not a condition (true or false).")


def _args(args: Any, count: int, where: str, form: str) -> list[Any]:
    if not isinstance(args, list) or len(args) != count:
        raise TemplateError(f"{where}: it takes {form}.")
    return args


class Evaluator:
    def __init__(
        self,
        template: Template,
        values: dict[str, Any],
        *,
        region: str,
        resources: Resources | None = None,
        index: int | None = None,
    ) -> None:
        self.template = template
        self.values = values
        self.region = region
        self.resources = resources
        self.index = index
        self._conditions: dict[str, bool] = {}
        self._evaluating: list[str] = []

    def with_index(self, index: int | None) -> Evaluator:
        copy = Evaluator(
            self.template, self.values, region=self.region, resources=self.resources, index=index
        )
        copy._conditions = self._conditions
        return copy

    # ----- conditions
    def condition(self, name: str, where: str = "Conditions") -> bool:
        if name in self._conditions:
            return self._conditions[name]
        if name not in self.template.conditions:
            raise TemplateError(f"{where}: the condition {name!r} is not defined.")
        if name in self._evaluating:
            cycle = " -> ".join([*self._evaluating, name])
            raise TemplateError(f"Conditions refer to each other in a circle: {cycle}.")
        self._evaluating.append(name)
        try:
            value = self._condition_value(self.template.conditions[name], f"Conditions.{name}")
        finally:
            self._evaluating.pop()
        self._conditions[name] = value
        return value

    def _condition_value(self, expression: Any, where: str) -> bool:
        if isinstance(expression, dict) and set(expression) == {"Condition"}:
            return self.condition(str(expression["Condition"]), where)
        if isinstance(expression, str) and expression in self.template.conditions:
            return self.condition(expression, where)
        return _as_bool(self.evaluate(expression, where), where)

    def conditions(self) -> dict[str, bool]:
        return {name: self.condition(name) for name in self.template.conditions}

    # ----- values
    def evaluate(self, value: Any, where: str) -> Any:
        call = function_of(value)
        if call is not None:
            name, args = call
            if name not in FUNCTIONS:
                raise TemplateError(f"{where}: the function {name} is not supported.")
            handler = _HANDLERS[name]
            return handler(self, args, f"{where}.{name}")
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                resolved = self.evaluate(item, f"{where}.{key}")
                if resolved is not NO_VALUE:
                    out[key] = resolved
            return out
        if isinstance(value, list):
            items = [self.evaluate(item, f"{where}[{i}]") for i, item in enumerate(value)]
            return [item for item in items if item is not NO_VALUE]
        return value

    def _text_of(self, value: Any, where: str) -> str:
        resolved = self.evaluate(value, where)
        if isinstance(resolved, (dict, list)):
            raise TemplateError(f"{where}: expected a string, got {type(resolved).__name__}.")
        return as_text(resolved)

    def ref(self, name: str, where: str) -> Any:
        if name == "ALIYUN::NoValue":
            return NO_VALUE
        if name == "ALIYUN::Index":
            return self.index
        if name in self.values:
            return self.values[name]
        if name in self.template.resources:
            if self.resources is None:
                raise TemplateError(f"{where}: resources cannot be referred to here ({name}).")
            return self.resources.ref(name)
        raise bad_reference(name, where)

    def attribute(self, resource: str, attribute: str, where: str) -> Any:
        if resource not in self.template.resources:
            raise bad_reference(resource, where)
        if self.resources is None:
            raise TemplateError(f"{where}: resources cannot be referred to here ({resource}).")
        return self.resources.attribute(resource, attribute)


def _ref(ev: Evaluator, args: Any, where: str) -> Any:
    name = ev.evaluate(args, where)
    if not isinstance(name, str):
        raise TemplateError(f"{where}: Ref takes a name.")
    return ev.ref(name, where)


def _get_att(ev: Evaluator, args: Any, where: str) -> Any:
    if isinstance(args, str):
        args = args.split(".", 1)
    resource, attribute = _args(args, 2, where, "[resource, attribute]")
    return ev.attribute(ev._text_of(resource, where), ev._text_of(attribute, where), where)


def _join(ev: Evaluator, args: Any, where: str) -> str:
    delimiter, items = _args(args, 2, where, "[delimiter, [values]]")
    items = ev.evaluate(items, where)
    if not isinstance(items, list):
        raise TemplateError(f"{where}: the values to join must be a list.")
    for item in items:
        if isinstance(item, (dict, list)):
            raise TemplateError(f"{where}: cannot join a {type(item).__name__}.")
    return ev._text_of(delimiter, where).join(as_text(i) for i in items)


def _sub(ev: Evaluator, args: Any, where: str) -> str:
    local: dict[str, Any] = {}
    if isinstance(args, list):
        if len(args) != 2 or not isinstance(args[1], dict):
            raise TemplateError(f"{where}: it takes a string or [string, {{variables}}].")
        text = ev._text_of(args[0], where)
        local = {k: ev.evaluate(v, f"{where}.{k}") for k, v in args[1].items()}
    else:
        text = ev._text_of(args, where)
    for variable in sub_variables(text):
        if variable in local:
            value = local[variable]
        elif variable in ev.values or variable in ("ALIYUN::NoValue", "ALIYUN::Index"):
            value = ev.ref(variable, where)
        elif "." in variable:
            resource, attribute = variable.split(".", 1)
            value = ev.attribute(resource, attribute, where)
        else:
            value = ev.ref(variable, where)
        text = text.replace("${" + variable + "}", as_text(value))
    return text.replace("${!", "${")


def _select(ev: Evaluator, args: Any, where: str) -> Any:
    index, items = _args(args, 2, where, "[index, list or mapping]")
    index = ev.evaluate(index, where)
    items = ev.evaluate(items, where)
    if isinstance(items, dict):
        key = as_text(index)
        if key not in items:
            raise TemplateError(f"{where}: the key {key!r} is not in the mapping.")
        return items[key]
    if isinstance(items, str):
        items = items.split(",")
    if not isinstance(items, list):
        raise TemplateError(f"{where}: Fn::Select needs a list or a mapping.")
    try:
        position = int(index)
    except (TypeError, ValueError):
        raise TemplateError(f"{where}: the index {index!r} is not a number.") from None
    if not -len(items) <= position < len(items):
        raise TemplateError(f"{where}: the index {position} is outside a list of {len(items)}.")
    return items[position]


def _split(ev: Evaluator, args: Any, where: str) -> list[str]:
    delimiter, text = _args(args, 2, where, "[delimiter, string]")
    return ev._text_of(text, where).split(ev._text_of(delimiter, where))


def _if(ev: Evaluator, args: Any, where: str) -> Any:
    condition, when_true, when_false = _args(
        args, 3, where, "[condition, value if true, value if false]"
    )
    chosen = ev._condition_value(condition, where)
    return ev.evaluate(when_true if chosen else when_false, where)


def _equals(ev: Evaluator, args: Any, where: str) -> bool:
    left, right = (ev.evaluate(a, where) for a in _args(args, 2, where, "[value, value]"))
    if type(left) is type(right):
        return bool(left == right)
    return as_text(left) == as_text(right)


def _conditions(ev: Evaluator, args: Any, where: str) -> list[bool]:
    if not isinstance(args, list) or not 2 <= len(args) <= 10:
        raise TemplateError(f"{where}: it takes a list of 2 to 10 conditions.")
    return [ev._condition_value(a, f"{where}[{i}]") for i, a in enumerate(args)]


def _not(ev: Evaluator, args: Any, where: str) -> bool:
    if isinstance(args, list):
        args = _args(args, 1, where, "[condition]")[0]
    return not ev._condition_value(args, where)


def _find_in_map(ev: Evaluator, args: Any, where: str) -> Any:
    name, first, second = (
        ev._text_of(a, where) for a in _args(args, 3, where, "[mapping, key, key]")
    )
    mapping = ev.template.mappings.get(name)
    if mapping is None:
        raise TemplateError(f"{where}: the mapping {name!r} is not defined.")
    if first not in mapping or second not in mapping[first]:
        raise TemplateError(f"{where}: the mapping {name!r} has no {first!r}.{second!r}.")
    return mapping[first][second]


def _base64(ev: Evaluator, args: Any, where: str) -> str:
    return base64.b64encode(ev._text_of(args, where).encode()).decode()


def _get_azs(ev: Evaluator, args: Any, where: str) -> list[str]:
    region = ev._text_of(args, where) if args not in ("", None) else ev.region
    return zones(region or ev.region)


def _str(ev: Evaluator, args: Any, where: str) -> str:
    return ev._text_of(args, where)


def _replace(ev: Evaluator, args: Any, where: str) -> str:
    replacements, text = _args(args, 2, where, "[{old: new}, string]")
    replacements = ev.evaluate(replacements, where)
    if not isinstance(replacements, dict):
        raise TemplateError(f"{where}: the replacements must be a mapping.")
    result = ev._text_of(text, where)
    for old, new in replacements.items():
        result = result.replace(str(old), as_text(new))
    return result


def _length(ev: Evaluator, args: Any, where: str) -> int:
    value = ev.evaluate(args, where)
    if not isinstance(value, (list, dict, str)):
        raise TemplateError(f"{where}: Fn::Length needs a list, a mapping or a string.")
    return len(value)


_HANDLERS: dict[str, Callable[[Evaluator, Any, str], Any]] = {
    "Ref": _ref,
    "Fn::GetAtt": _get_att,
    "Fn::Join": _join,
    "Fn::Sub": _sub,
    "Fn::Select": _select,
    "Fn::Split": _split,
    "Fn::If": _if,
    "Fn::Equals": _equals,
    "Fn::And": lambda ev, a, w: all(_conditions(ev, a, w)),
    "Fn::Or": lambda ev, a, w: any(_conditions(ev, a, w)),
    "Fn::Not": _not,
    "Fn::FindInMap": _find_in_map,
    "Fn::Base64Encode": _base64,
    "Fn::GetAZs": _get_azs,
    "Fn::Str": _str,
    "Fn::Replace": _replace,
    "Fn::Length": _length,
}
