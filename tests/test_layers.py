"""Invariants of the import graph of passes/ and rewrite/: layers import downwards only, no cycles.

Layers, bottom up: ``passes`` (AST and FX passes, errors, report), the ``rewrite`` core (decorator,
runtime, frontend, backend, hoist, offline_split, lint, testing), ``rewrite.tools`` (CLI, inspection,
bench). ``rewrite.__main__`` is the ``python -m rewrite`` entry point: it runs the CLI, so it
belongs with the tools. Every import counts, module-level or inside a function.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("passes", "rewrite")
TOOLS = ("rewrite.tools", "rewrite.__main__")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


MODULES = _modules()


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The modules ``node`` (an import statement in ``module``) imports, as absolute names."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        here = module.split(".") if is_package else module.split(".")[:-1]
        anchor = here[:len(here) - node.level + 1]
        base = ".".join(anchor + ([base] if base else []))
    # ``from package import name``: a submodule when one has that name, else the package itself.
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]


def _imports(source: str, module: str, is_package: bool = False) -> set[str]:
    """The modules of passes/ and rewrite/ that ``source`` (``module``'s code) imports anywhere."""
    found = {target for node in ast.walk(ast.parse(source))
             if isinstance(node, (ast.Import, ast.ImportFrom))
             for target in _imported(node, module, is_package)}
    return {m for m in found if m in MODULES and m != module}


@pytest.fixture(scope="module")
def import_graph() -> dict[str, set[str]]:
    """Each module's imports. A fixture, not a module constant: parsing every module at import
    would cost each pytest-xdist worker's collection, not just the one that runs these tests."""
    return {module: _imports(path.read_text(), module, path.name == "__init__.py")
            for module, path in MODULES.items()}


def _in(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (its modules in order, the first repeated at the end)."""
    state: dict[str, str] = {}  # module -> "open" while on the stack, "done" after
    stack: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = "open"
        stack.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        stack.pop()
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state:
            found = visit(module)
            if found:
                return found
    return None


def test_the_graph_sees_every_kind_of_import():
    source = """
import passes.errors
from passes.report import Report
from .. import frontend
from ..offline_split import split
from . import bench


def run():
    from ...passes import pipeline  # lazy
    import rewrite.lint
"""
    assert _imports(source, "rewrite.tools.cli") == {
        "passes.errors", "passes.report", "rewrite.frontend", "rewrite.offline_split", "rewrite.tools.bench",
        "passes.pipeline", "rewrite.lint"}
    assert _imports("from . import runtime\nfrom .hoist import Plan", "rewrite", is_package=True) == {
        "rewrite.runtime", "rewrite.hoist"}


def test_passes_never_import_rewrite(import_graph):
    upward = {(m, t) for m, targets in import_graph.items() if _in(m, ("passes",))
              for t in targets if _in(t, ("rewrite",))}
    assert not upward


def test_rewrite_core_never_imports_the_tools(import_graph):
    upward = {(m, t) for m, targets in import_graph.items() if not _in(m, TOOLS)
              for t in targets if _in(t, TOOLS)}
    assert not upward


def test_no_import_cycle(import_graph):
    assert _cycle(import_graph) is None


@pytest.mark.parametrize("graph, cycle", [
    ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
    ({"a": {"b", "c"}, "b": set(), "c": {"c2"}, "c2": {"c"}}, ["c", "c2", "c"]),
])
def test_cycle_finder(graph, cycle):
    assert _cycle(graph) == cycle
