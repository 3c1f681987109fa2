"""The layout's one-way dependencies: the toolkit never imports what is built on
it, the server edge sits above the toolkit, the service imports none of the
tooling around it (``devtools``, ``loadtests``, ``deploy``, ``tests``), the
deployment none of the load tests, tests take helpers from modules and never
from a conftest, and no modules import each other in a loop (not even through
an import inside a function)."""

import ast
from pathlib import Path

import pytest

from tests.helpers import BASE_DIR

PROJECT = BASE_DIR / "project"
CORE = PROJECT / "core"
# Everything under project/ that is built on core/: its apps, view helpers and
# the server edge.
ABOVE_CORE = (
    "project.aggregation",
    "project.demo",
    "project.example",
    "project.health",
    "project.http",
    "project.observability",
    "project.server",
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(BASE_DIR).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, anywhere in it, relative imports resolved;
    ``from package import name`` counts ``package.name`` too (it may be a
    module), and every import counts the packages above what it imports."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            names.add(source)
            names.update(f"{source}.{alias.name}" for alias in node.names)
    # Importing a.b.c runs a/__init__.py and a/b/__init__.py first.
    return names | {
        name.rsplit(".", depth)[0]
        for name in names
        for depth in range(1, name.count(".") + 1)
    }


def _graph(root: Path) -> dict[str, set[str]]:
    """Which modules under ``root`` each module under ``root`` imports."""
    modules = {_module_name(path): path for path in root.rglob("*.py")}
    # A module's own packages are imported before it, never because of it.
    return {
        name: {
            imported
            for imported in _imports(path)
            if imported in modules and not (name + ".").startswith(imported + ".")
        }
        for name, path in modules.items()
    }


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


@pytest.mark.parametrize("package", ["project", "devtools", "loadtests", "deploy"])
def test_no_modules_of_a_package_import_each_other_in_a_loop(package):
    assert _cycles(_graph(BASE_DIR / package)) == []


def test_the_loop_finder_finds_a_loop():
    """The check above can fail: a loop of three is found."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [
        ["a", "b", "c"]
    ]


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


def _importers(root: Path, forbidden: tuple[str, ...]) -> set[str]:
    """``path: module`` for every import under ``root`` of a module in (or
    below) one of the ``forbidden`` packages."""
    return {
        f"{path.relative_to(BASE_DIR)}: {name}"
        for path in root.rglob("*.py")
        for name in _imports(path)
        if name in forbidden or name.startswith(tuple(f"{f}." for f in forbidden))
    }


def test_the_service_imports_none_of_the_tooling_around_it():
    assert _importers(PROJECT, ("devtools", "loadtests", "deploy", "tests")) == set()


def test_the_shared_tooling_imports_nothing_built_on_it():
    assert _importers(BASE_DIR / "devtools", ("loadtests", "deploy", "tests")) == set()


def test_the_deployment_imports_no_load_test():
    assert _importers(BASE_DIR / "deploy", ("loadtests",)) == set()


def test_no_test_imports_a_conftest():
    """Helpers live in plain modules (tests/helpers.py); a conftest holds the
    fixtures and hooks pytest finds by itself."""
    offenders = {
        f"{path.relative_to(BASE_DIR)}: {name}"
        for path in [*BASE_DIR.glob("*.py"), *(BASE_DIR / "tests").rglob("*.py")]
        for name in _imports(path)
        if "conftest" in name.split(".")
    }
    assert offenders == set()
