"""The package's shape: no import cycle, stages above the trainer reach it only through its
public entry points, modules ≤ 500 lines and functions ≤ 80 lines."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import langdml

ROOT = Path(langdml.__file__).parent
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _imports(name: str, path: Path) -> set[str]:
    """langdml modules ``name`` imports anywhere in its source (function-level imports too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from pkg import sub`` imports the submodule pkg.sub when there is one
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names
            ]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _cycles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in GRAPH:
        if v not in index:
            visit(v)
    return out


def test_the_graph_sees_the_known_edges():
    assert "langdml.losses.text_proxies" in GRAPH["langdml.losses.combined"]
    assert "langdml.experiment" in GRAPH["langdml.train.trainer"]


def test_no_import_cycle_inside_the_package():
    assert _cycles() == []


@pytest.mark.parametrize("name", sorted(set(MODULES) - {"langdml.__main__"}))  # runs the CLI
def test_every_module_imports(name):
    importlib.import_module(name)


def test_only_train_imports_the_trainer_and_the_trainer_imports_no_stage_above_it():
    allowed = ("langdml.train.", "langdml.pipeline")
    outside = [
        n
        for n, deps in GRAPH.items()
        if "langdml.train.trainer" in deps and not n.startswith(allowed)
    ]
    assert outside == []
    above = ("langdml.eval.commands", "langdml.xmodal", "langdml.ablation", "langdml.pipeline")
    for name, deps in GRAPH.items():
        # the trainer's modules (the `langdml train` command wires later stages via the pipeline)
        if name.startswith("langdml.train") and name != "langdml.train.commands":
            assert not [d for d in deps if d.startswith(above)], name


def test_module_and_function_sizes():
    long_modules, long_functions = [], []
    for name, path in MODULES.items():
        source = path.read_text()
        if len(source.splitlines()) > MAX_MODULE_LINES:
            long_modules.append(name)
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES:
                    long_functions.append(f"{name}.{node.name}")
    assert long_modules == [] and long_functions == []
