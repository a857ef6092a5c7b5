"""Every public task, flow and block says how to use it with an example that parses, as
prefect-aws does: a stale example (a renamed parameter, a broken line) fails here."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import textwrap

import pytest
from prefect import Flow, Task
from prefect.blocks.core import Block

MODULES = [
    "tasks.instances",
    "tasks.commands",
    "tasks.waits",
    "tasks.reporting",
    "tasks.stacks",
    "flows.provision_and_run",
    "flows.run_command",
    "flows.fleet_run",
    "flows.deploy_stack",
    "flows.delete_stack",
    "flows.stack_and_run",
    "flows.diagnose_stack",
    "tasks.reactions",
    "flows.reactions",
    "flows.steps",
    "alicloud_runbooks.blocks",
]
FENCE = re.compile(r"```python\n(.*?)```", re.DOTALL)


def public_objects() -> list[tuple[str, object]]:
    found = []
    for name in MODULES:
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            own = getattr(value, "__module__", None) == name or (
                isinstance(value, Task | Flow) and value.fn.__module__ == name
            )
            if attr.startswith("_") or not own:
                continue
            is_block = inspect.isclass(value) and issubclass(value, Block)
            if isinstance(value, Task | Flow) or is_block or attr == "CommandSpec":
                found.append((f"{name}.{attr}", value))
    return found


OBJECTS = public_objects()


def test_the_public_objects_are_found() -> None:
    names = {n.rsplit(".", 1)[1] for n, _ in OBJECTS}
    assert {"run_command", "wait_for_results", "provision_and_run", "fleet_run"} <= names
    assert {"AlibabaCloudCredentials", "CommandSpec", "publish_outputs"} <= names


@pytest.mark.parametrize(("name", "obj"), OBJECTS, ids=[n for n, _ in OBJECTS])
def test_each_has_an_example_that_parses(name: str, obj: object) -> None:
    doc = inspect.getdoc(obj.fn if isinstance(obj, Task | Flow) else obj) or ""
    examples = FENCE.findall(doc)
    assert "Example" in doc and examples, f"{name} has no ```python example in its docstring"
    for example in examples:
        ast.parse(textwrap.dedent(example))  # top-level await parses as an expression
