"""The layout's one-way dependencies: the toolkit never imports what is built on it."""

import ast
from pathlib import Path

from conftest import BASE_DIR

CORE = BASE_DIR / "project" / "core"
# Everything under project/ that is built on core/: its apps and view helpers.
ABOVE_CORE = (
    "project.aggregation",
    "project.demo",
    "project.example",
    "project.health",
    "project.http",
    "project.observability",
)


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_core_imports_nothing_built_on_it():
    offenders = {
        f"{path.relative_to(BASE_DIR)}: {name}"
        for path in CORE.rglob("*.py")
        for name in _imports(path)
        if name.startswith(ABOVE_CORE)
    }
    assert offenders == set()


def test_core_reads_no_settings_module_directly():
    offenders = {
        f"{path.relative_to(BASE_DIR)}: {name}"
        for path in CORE.rglob("*.py")
        for name in _imports(path)
        if name == "settings" or name.startswith("settings.")
    }
    assert offenders == set()
