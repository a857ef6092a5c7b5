"""Reading a template (JSON or YAML, `ROSTemplateFormatVersion: '2015-09-01'`) and the checks
that need no parameter values: sections, parameter declarations, resource entries, function
names, references and attributes. Anything outside alisim's subset is a `TemplateError` that
names it and where it is, never a crash.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import yaml

from alisim.ros.template.errors import (
    TemplateError,
    bad_attribute,
    bad_reference,
    unsupported,
)

FORMAT_VERSION = "2015-09-01"
MAX_TEMPLATE_BYTES = 524_288
SECTIONS = (
    "ROSTemplateFormatVersion",
    "Description",
    "Metadata",
    "Parameters",
    "Mappings",
    "Conditions",
    "Resources",
    "Outputs",
)
KNOWN_UNSUPPORTED_SECTIONS = ("Rules", "Transform", "Workspace", "Locals", "Conditions2")
PARAMETER_TYPES = ("String", "Number", "Json", "Boolean", "CommaDelimitedList")
PARAMETER_KEYS = {
    "Type",
    "Default",
    "AllowedPattern",
    "AllowedValues",
    "ConstraintDescription",
    "Description",
    "MaxLength",
    "MaxValue",
    "MinLength",
    "MinValue",
    "NoEcho",
    "Label",
    "AssociationProperty",
    "AssociationPropertyMetadata",
    "Confirm",
    "TextArea",
    "Required",
    "Placeholder",
}
RESOURCE_KEYS = {
    "Type",
    "Properties",
    "DependsOn",
    "Condition",
    "DeletionPolicy",
    "Metadata",
    "Description",
    "Count",
}
OUTPUT_KEYS = {"Value", "Description", "Condition", "Label"}
PSEUDO_PARAMETERS = (
    "ALIYUN::Region",
    "ALIYUN::StackId",
    "ALIYUN::StackName",
    "ALIYUN::AccountId",
    "ALIYUN::TenantId",
    "ALIYUN::NoValue",
    "ALIYUN::Index",
)
FUNCTIONS = (
    "Ref",
    "Fn::GetAtt",
    "Fn::Join",
    "Fn::Sub",
    "Fn::Select",
    "Fn::Split",
    "Fn::If",
    "Fn::Equals",
    "Fn::And",
    "Fn::Or",
    "Fn::Not",
    "Fn::FindInMap",
    "Fn::Base64Encode",
    "Fn::GetAZs",
    "Fn::Str",
    "Fn::Replace",
    "Fn::Length",
)
CONDITION_FUNCTIONS = ("Fn::Equals", "Fn::And", "Fn::Or", "Fn::Not", "Condition")
SUPPORTED_FUNCTIONS_TEXT = ", ".join(FUNCTIONS)
_SUB_VARIABLE = re.compile(r"\$\{([^!}][^}]*)\}")


class ResourceTypeInfo(Protocol):
    """What the checks need to know of a resource type (`alisim.ros.resources`)."""

    attributes: frozenset[str]
    required: tuple[str, ...]


class _Missing:
    def __repr__(self) -> str:
        return "<no default>"


NO_DEFAULT: Any = _Missing()


@dataclass(frozen=True)
class ParameterSpec:
    name: str
    type: str
    default: Any = NO_DEFAULT
    allowed_values: list[Any] | None = None
    allowed_pattern: str | None = None
    min_value: float | None = None
    max_value: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    no_echo: bool = False
    description: str = ""
    label: str = ""
    constraint_description: str = ""
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ResourceSpec:
    name: str
    type: str
    properties: dict[str, Any]
    depends_on: tuple[str, ...] = ()
    condition: str | None = None
    deletion_policy: str = "Delete"
    count: Any = None
    metadata: dict[str, Any] = field(default_factory=dict)
    description: str = ""


@dataclass
class Template:
    body: dict[str, Any]
    description: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    parameters: dict[str, ParameterSpec] = field(default_factory=dict)
    mappings: dict[str, Any] = field(default_factory=dict)
    conditions: dict[str, Any] = field(default_factory=dict)
    resources: dict[str, ResourceSpec] = field(default_factory=dict)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)


# ----- loading


class _Loader(yaml.SafeLoader):
    """YAML as ROS reads it: short function tags (`!Ref`, `!GetAtt a.b`, `!Sub`…) and dates
    kept as the text they were written as (`2015-09-01` stays a string)."""


def _tagged(loader: _Loader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "Condition":
        return {"Condition": value}
    return {f"Fn::{suffix}": value}


def _timestamp_as_text(loader: _Loader, node: yaml.Node) -> str:
    return str(loader.construct_scalar(node))  # type: ignore[arg-type]


_Loader.add_multi_constructor("!", _tagged)  # type: ignore[no-untyped-call]
_Loader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp_as_text)


def _plain(value: Any) -> Any:
    """Only JSON's kinds of values: YAML's dates, sets or binary are made text."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def load(body: str) -> dict[str, Any]:
    """The template as a mapping, from JSON or YAML text."""
    if len(body.encode("utf-8", "surrogatepass")) > MAX_TEMPLATE_BYTES:
        raise TemplateError(f"The template is larger than {MAX_TEMPLATE_BYTES} bytes.")
    stripped = body.lstrip()
    if not stripped:
        raise TemplateError("The template is empty.")
    try:
        is_json = stripped.startswith("{")
        value = json.loads(body) if is_json else yaml.load(body, Loader=_Loader)
    except json.JSONDecodeError as exc:
        raise TemplateError(f"Template format error: JSON not well-formed: {exc}.") from None
    except yaml.YAMLError as exc:
        reason = str(exc).replace("\n", " ")
        raise TemplateError(f"Template format error: YAML not well-formed: {reason}.") from None
    except RecursionError:
        raise TemplateError("The template is nested too deeply.") from None
    if not isinstance(value, dict):
        raise TemplateError("Template format error: the template must be a mapping.")
    return _plain(value)


# ----- the structure


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TemplateError(f"{where} must be a mapping.")
    return value


def _text(value: Any, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise TemplateError(f"{where} must be a string.")
    return str(value)


def _number(value: Any, where: str) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TemplateError(f"{where} must be a number, not {value!r}.") from None


def _parameter(name: str, raw: Any) -> ParameterSpec:
    where = f"Parameters.{name}"
    raw = _mapping(raw, where)
    unknown = sorted(set(raw) - PARAMETER_KEYS)
    if unknown:
        raise TemplateError(f"{where} has unknown keys {unknown}.", "InvalidSchema")
    kind = raw.get("Type")
    if kind is None:
        raise TemplateError(f"{where} has no Type.", "InvalidSchema")
    if kind not in PARAMETER_TYPES:
        raise unsupported(f"Parameter type {kind!r}", where, ", ".join(PARAMETER_TYPES))
    for key, value in raw.items():
        if contains_function(value):
            raise TemplateError(f"{where}.{key}: functions cannot be used in Parameters.")
    allowed = raw.get("AllowedValues")
    if allowed is not None and not isinstance(allowed, list):
        raise TemplateError(f"{where}.AllowedValues must be a list.")
    pattern = raw.get("AllowedPattern")
    if pattern is not None:
        try:
            re.compile(str(pattern))
        except re.error as exc:
            raise TemplateError(f"{where}.AllowedPattern is not a valid pattern: {exc}.") from None
    min_length = _number(raw.get("MinLength"), f"{where}.MinLength")
    max_length = _number(raw.get("MaxLength"), f"{where}.MaxLength")
    return ParameterSpec(
        name=name,
        type=kind,
        default=raw.get("Default", NO_DEFAULT),
        allowed_values=allowed,
        allowed_pattern=str(pattern) if pattern is not None else None,
        min_value=_number(raw.get("MinValue"), f"{where}.MinValue"),
        max_value=_number(raw.get("MaxValue"), f"{where}.MaxValue"),
        min_length=int(min_length) if min_length is not None else None,
        max_length=int(max_length) if max_length is not None else None,
        no_echo=str(raw.get("NoEcho", "false")).lower() == "true",
        description=_text(raw.get("Description"), f"{where}.Description")
        if not isinstance(raw.get("Description"), dict)
        else json.dumps(raw["Description"]),
        label=str(raw.get("Label") or name) if not isinstance(raw.get("Label"), dict) else name,
        constraint_description=str(raw.get("ConstraintDescription") or ""),
        raw=raw,
    )


def _resource(name: str, raw: Any, types: Mapping[str, ResourceTypeInfo]) -> ResourceSpec:
    where = f"Resources.{name}"
    if "/" in name:
        raise TemplateError(f"The resource name {name!r} must not contain '/'.")
    raw = _mapping(raw, where)
    unknown = sorted(set(raw) - RESOURCE_KEYS)
    if unknown:
        raise TemplateError(
            f"{where} has unknown keys {unknown}; a resource may have {sorted(RESOURCE_KEYS)}.",
            "InvalidSchema",
        )
    kind = raw.get("Type")
    if not isinstance(kind, str) or not kind:
        raise TemplateError(f"{where} must have a Type that is a string.", "InvalidSchema")
    if kind not in types:
        raise unsupported(f"The resource type {kind}", where, ", ".join(sorted(types)))
    properties = _mapping(raw.get("Properties"), f"{where}.Properties")
    depends = raw.get("DependsOn") or []
    if isinstance(depends, str):
        depends = [depends]
    if not isinstance(depends, list) or not all(isinstance(d, str) for d in depends):
        raise TemplateError(f"{where}.DependsOn must be a name or a list of names.")
    condition = raw.get("Condition")
    if condition is not None and not isinstance(condition, str):
        raise TemplateError(f"{where}.Condition must be the name of a condition.")
    policy = raw.get("DeletionPolicy", "Delete")
    if policy not in ("Delete", "Retain"):
        raise TemplateError(f"{where}.DeletionPolicy must be Delete or Retain, not {policy!r}.")
    return ResourceSpec(
        name=name,
        type=kind,
        properties=properties,
        depends_on=tuple(depends),
        condition=condition,
        deletion_policy=policy,
        count=raw.get("Count"),
        metadata=_mapping(raw.get("Metadata"), f"{where}.Metadata"),
        description=str(raw.get("Description") or ""),
    )


def parse(body: str | dict[str, Any], types: Mapping[str, ResourceTypeInfo]) -> Template:
    """Load and check a template; every problem is a `TemplateError`."""
    raw = load(body) if isinstance(body, str) else body
    version = raw.get("ROSTemplateFormatVersion")
    if version is None:
        raise TemplateError(
            "The template version is invalid: ROSTemplateFormatVersion is missing "
            f"(it must be '{FORMAT_VERSION}').",
            "InvalidTemplateVersion",
        )
    if str(version) != FORMAT_VERSION:
        raise TemplateError(
            f"The template version is invalid: {version!r} (it must be '{FORMAT_VERSION}').",
            "InvalidTemplateVersion",
        )
    for section in raw:
        if section in KNOWN_UNSUPPORTED_SECTIONS:
            raise unsupported(f"The section {section}", "the template", ", ".join(SECTIONS))
        if section not in SECTIONS:
            raise TemplateError(
                f"The template section is invalid: {section} (sections are {', '.join(SECTIONS)}).",
                "InvalidTemplateSection",
            )
    template = Template(
        body=raw,
        description=_text(raw.get("Description"), "Description"),
        metadata=_mapping(raw.get("Metadata"), "Metadata"),
    )
    for name, spec in _mapping(raw.get("Parameters"), "Parameters").items():
        template.parameters[name] = _parameter(name, spec)
    template.mappings = _mapping(raw.get("Mappings"), "Mappings")
    for name, mapping in template.mappings.items():
        if not isinstance(mapping, dict) or not all(isinstance(v, dict) for v in mapping.values()):
            raise TemplateError(f"Mappings.{name} must map keys to mappings.")
        if contains_function(mapping):
            raise TemplateError(f"Mappings.{name}: functions cannot be used in Mappings.")
    template.conditions = _mapping(raw.get("Conditions"), "Conditions")
    for name, spec in _mapping(raw.get("Resources"), "Resources").items():
        template.resources[name] = _resource(name, spec, types)
    for name, output in _mapping(raw.get("Outputs"), "Outputs").items():
        output = _mapping(output, f"Outputs.{name}")
        unknown = sorted(set(output) - OUTPUT_KEYS)
        if unknown:
            raise TemplateError(f"Outputs.{name} has unknown keys {unknown}.", "InvalidSchema")
        if "Value" not in output:
            raise TemplateError(f"Outputs.{name} has no Value.")
        template.outputs[name] = output
    check(template, types)
    return template


# ----- functions and references


def function_of(value: Any) -> tuple[str, Any] | None:
    """`("Fn::Join", args)` when `value` is a function call, else None."""
    if isinstance(value, dict) and len(value) == 1:
        ((key, args),) = value.items()
        if key == "Ref" or key.startswith("Fn::"):
            return key, args
    return None


def contains_function(value: Any) -> bool:
    if function_of(value) is not None:
        return True
    if isinstance(value, dict):
        return any(contains_function(v) for v in value.values())
    if isinstance(value, list):
        return any(contains_function(v) for v in value)
    return False


def walk_functions(value: Any, where: str) -> Iterator[tuple[str, Any, str]]:
    """Every function call in `value`, outermost first, with where it is."""
    call = function_of(value)
    if call is not None:
        yield call[0], call[1], where
        yield from walk_functions(call[1], f"{where}.{call[0]}")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and key.startswith("Fn::"):
                raise TemplateError(f"{where}: {key} must be the only key of its mapping.")
            yield from walk_functions(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from walk_functions(item, f"{where}[{index}]")


def sub_variables(text: str) -> list[str]:
    """The `${Name}` and `${Resource.Attribute}` names of an `Fn::Sub` string."""
    return [m.group(1).strip() for m in _SUB_VARIABLE.finditer(text)]


def _check_calls(
    template: Template,
    value: Any,
    where: str,
    types: Mapping[str, ResourceTypeInfo],
    *,
    resources_allowed: bool = True,
) -> None:
    names = set(template.parameters) | set(PSEUDO_PARAMETERS)
    for name, args, at in walk_functions(value, where):
        if name not in FUNCTIONS:
            raise unsupported(f"The function {name}", at, SUPPORTED_FUNCTIONS_TEXT)
        if name == "Ref" and isinstance(args, str):
            if args in names:
                continue
            if args in template.resources and resources_allowed:
                continue
            raise bad_reference(args, at)
        if name == "Fn::GetAtt":
            _check_get_att(template, args, at, types, resources_allowed)
        if name == "Fn::Sub":
            text = args[0] if isinstance(args, list) and args else args
            local = args[1] if isinstance(args, list) and len(args) > 1 else {}
            if isinstance(text, str):
                for variable in sub_variables(text):
                    if isinstance(local, dict) and variable in local:
                        continue
                    if "." in variable and variable not in names:
                        resource, attribute = variable.split(".", 1)
                        _check_get_att(
                            template, [resource, attribute], at, types, resources_allowed
                        )
                    elif variable not in names and (
                        variable not in template.resources or not resources_allowed
                    ):
                        raise bad_reference(variable, at)
        if name == "Fn::If":
            if not isinstance(args, list) or len(args) != 3:
                raise TemplateError(f"{at}: Fn::If takes [condition, value if true, if false].")
            if isinstance(args[0], str) and args[0] not in template.conditions:
                raise TemplateError(f"{at}: the condition {args[0]!r} is not defined.")


def _check_get_att(
    template: Template,
    args: Any,
    at: str,
    types: Mapping[str, ResourceTypeInfo],
    resources_allowed: bool,
) -> None:
    if isinstance(args, str):
        args = args.split(".", 1)
    if not isinstance(args, list) or len(args) != 2:
        raise TemplateError(f"{at}: Fn::GetAtt takes [resource, attribute].")
    resource, attribute = args
    if not isinstance(resource, str):
        return
    spec = template.resources.get(resource)
    if spec is None or not resources_allowed:
        raise bad_reference(resource, at)
    if isinstance(attribute, str) and attribute not in types[spec.type].attributes:
        raise bad_attribute(resource, attribute)


def _check_conditions(template: Template, types: Mapping[str, ResourceTypeInfo]) -> None:
    for name, expression in template.conditions.items():
        _check_calls(template, expression, f"Conditions.{name}", types, resources_allowed=False)
        for _, args, at in _condition_refs(expression, f"Conditions.{name}"):
            if args not in template.conditions:
                raise TemplateError(f"{at}: the condition {args!r} is not defined.")


def _condition_refs(value: Any, where: str) -> Iterator[tuple[str, Any, str]]:
    if isinstance(value, dict) and set(value) == {"Condition"}:
        yield "Condition", value["Condition"], where
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _condition_refs(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _condition_refs(item, f"{where}[{index}]")


def check(template: Template, types: Mapping[str, ResourceTypeInfo]) -> None:
    """The checks that need no parameter values."""
    from alisim.ros.template import graph

    _check_conditions(template, types)
    for name, spec in template.resources.items():
        where = f"Resources.{name}"
        for dependency in spec.depends_on:
            if dependency not in template.resources:
                raise bad_reference(dependency, f"{where}.DependsOn")
        if spec.condition is not None and spec.condition not in template.conditions:
            raise TemplateError(
                f"{where}.Condition: the condition {spec.condition!r} is not defined."
            )
        info = types[spec.type]
        missing = [p for p in info.required if p not in spec.properties]
        if missing:
            raise TemplateError(
                f"{where}.Properties: the required properties {missing} of {spec.type} are missing."
            )
        _check_calls(template, spec.properties, f"{where}.Properties", types)
        if spec.count is not None:
            _check_calls(template, spec.count, f"{where}.Count", types, resources_allowed=False)
    for name, output in template.outputs.items():
        condition = output.get("Condition")
        if condition is not None and condition not in template.conditions:
            raise TemplateError(f"Outputs.{name}.Condition: {condition!r} is not defined.")
        _check_calls(template, output["Value"], f"Outputs.{name}.Value", types)
    graph.order(graph.dependencies(template))
