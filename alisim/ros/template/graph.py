"""The dependency graph of a template's resources: `DependsOn` plus the implicit edges of
`Ref`, `Fn::GetAtt` and `Fn::Sub`. A cycle is `CircularDependency`, naming it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from alisim.ros.template.errors import TemplateError
from alisim.ros.template.parse import function_of, sub_variables

if TYPE_CHECKING:
    from alisim.ros.template.parse import Template


def references(value: Any, resources: set[str] | dict[str, Any]) -> set[str]:
    """The resources `value` refers to."""
    found: set[str] = set()
    _collect(value, resources, found)
    return found


def _collect(value: Any, resources: set[str] | dict[str, Any], found: set[str]) -> None:
    call = function_of(value)
    if call is not None:
        name, args = call
        if name == "Ref" and isinstance(args, str) and args in resources:
            found.add(args)
        elif name == "Fn::GetAtt":
            target = args.split(".", 1)[0] if isinstance(args, str) else None
            if isinstance(args, list) and args and isinstance(args[0], str):
                target = args[0]
            if target in resources:
                found.add(target)
        elif name == "Fn::Sub":
            text = args[0] if isinstance(args, list) and args else args
            local = args[1] if isinstance(args, list) and len(args) > 1 else {}
            if isinstance(text, str):
                for variable in sub_variables(text):
                    if isinstance(local, dict) and variable in local:
                        continue
                    target = variable.split(".", 1)[0]
                    if target in resources:
                        found.add(target)
        _collect(args, resources, found)
        return
    if isinstance(value, dict):
        for item in value.values():
            _collect(item, resources, found)
    elif isinstance(value, list):
        for item in value:
            _collect(item, resources, found)


def dependencies(template: Template) -> dict[str, set[str]]:
    """For each resource, the resources it needs first."""
    names = set(template.resources)
    return {
        name: set(spec.depends_on) | references(spec.properties, names)
        for name, spec in template.resources.items()
    }


def order(deps: dict[str, set[str]]) -> list[str]:
    """The names in an order where each comes after what it depends on (template order kept
    where free); a cycle is `CircularDependency`."""
    done: list[str] = []
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = [*path[path.index(name) :], name]
            raise TemplateError(
                f"Circular Dependency Found: {' -> '.join(cycle)}.", "CircularDependency"
            )
        state[name] = 1
        for dependency in sorted(deps.get(name, ()), key=list(deps).index):
            visit(dependency, [*path, name])
        state[name] = 2
        done.append(name)

    for name in deps:
        visit(name, [])
    return done


def dependents(deps: dict[str, set[str]], roots: set[str]) -> set[str]:
    """`roots` and everything that depends on them, directly or not."""
    found = set(roots)
    changed = True
    while changed:
        changed = False
        for name, needs in deps.items():
            if name not in found and needs & found:
                found.add(name)
                changed = True
    return found
