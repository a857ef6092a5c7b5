"""The design's direction of dependencies: flows → tasks → core; alisim and the local stack
stand apart. A test rather than a convention, so a stray import fails CI."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "alicloud_runbooks": {"flows", "tasks", "deployments", "alisim", "local_stack", "scripts"},
    "alisim": {"alicloud_runbooks", "flows", "tasks", "deployments", "local_stack", "scripts"},
    "tasks": {"flows", "deployments", "alisim", "local_stack", "scripts"},
    "flows": {"deployments", "alisim", "local_stack", "scripts"},
}


def imported_packages(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_each_package_imports_only_what_the_design_allows() -> None:
    wrong = [
        f"{path.relative_to(ROOT)} imports {', '.join(sorted(bad))}"
        for package, forbidden in FORBIDDEN.items()
        for path in sorted((ROOT / package).rglob("*.py"))
        if (bad := imported_packages(path) & forbidden)
    ]
    assert not wrong, "\n".join(wrong)
