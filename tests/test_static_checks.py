"""The style guide's gates as tests, so `python -m pytest` is the whole check."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_ruff_is_clean() -> None:
    result = _run("ruff", "check", "src", "tests", "bench", "scripts")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_is_clean() -> None:
    result = _run("mypy", "--strict", "src/scheduler", "bench/run.py", "bench/fleet.py")
    assert result.returncode == 0, result.stdout + result.stderr


def _imports_of(path: Path, module: str) -> set[str]:
    """Every ``scheduler.*`` module that ``path`` imports, at top level or inside a function."""
    import ast

    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("scheduler")}


def _module_graph() -> dict[str, set[str]]:
    src = ROOT / "src"
    modules = {
        ".".join(path.relative_to(src).with_suffix("").parts).removesuffix(".__init__"): path
        for path in (src / "scheduler").rglob("*.py")
    }
    return {name: _imports_of(path, name) & set(modules) - {name} for name, path in modules.items()}


def test_no_import_cycles_even_through_lazy_imports() -> None:
    graph = _module_graph()
    # A package's __init__ importing its own submodules is not a layering cycle.
    for name, deps in graph.items():
        graph[name] = {d for d in deps if not name.startswith(d + ".")}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycle = [*path[path.index(dep):], dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_nothing_imports_the_main_module() -> None:
    importers = [name for name, deps in _module_graph().items() if "scheduler.__main__" in deps]
    assert importers == []


def test_only_the_store_knows_its_backends() -> None:
    """Everything above the store speaks store.api; only store/ reaches a backend module."""
    reaching = sorted(
        name for name, deps in _module_graph().items()
        if not name.startswith("scheduler.store")
        and any(d.startswith("scheduler.store.sqlite") for d in deps)
    )
    assert reaching == []
