"""mkdocs hook: the architecture page's import table, computed from the code when the site builds.

The page holds the marker line ``<!-- import-table -->``; this hook replaces it with one row per
unit of the package -- a sub-package (``langdml.eval``) or a top-level module (``langdml.cli``) --
giving the first sentence of its docstring, the units it imports and the units that import it.
Imports count wherever they stand (function-level imports too: that is how the CLI and the stages
defer torch), and so does a string that names a module of the package (``"langdml.eval.commands"``,
``"langdml.pipeline:train_experiment"``): the CLI's list of command modules and the lazy exports
of a package's ``_EXPORTS`` table (``langdml._lazy``) import their module by name.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

PACKAGE = Path(__file__).resolve().parents[2] / "langdml"
MARKER = "<!-- import-table -->"
MODULE_NAME = re.compile(r"^[a-z_]+(?:\.[a-z_0-9]+)+(?::\w+)?$")


def units(root: Path = PACKAGE) -> list[str]:
    """The package's units: every sub-package and every top-level module but ``__init__``."""
    out = []
    for path in sorted(root.iterdir()):
        if path.is_dir() and (path / "__init__.py").is_file():
            out.append(f"{root.name}.{path.name}")
        elif path.suffix == ".py" and path.name != "__init__.py":
            out.append(f"{root.name}.{path.stem}")
    return out


def _unit(module: str, top: str) -> str | None:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == top and len(parts) > 1 else None


def _targets(node: ast.AST, package: str, top: str) -> list[str]:
    """The absolute module names an import statement, or a string naming a module, reaches."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join([*anchor, base] if base else anchor)
        if base == top:  # ``from langdml import config``
            return [f"{top}.{alias.name}" for alias in node.names]
        return [base]
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        if node.value.startswith(f"{top}.") and MODULE_NAME.match(node.value):
            return [node.value.partition(":")[0]]
    return []


def _modules(root: Path) -> set[str]:
    names = set()
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        names.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """unit → the other units of the package it imports."""
    top = root.name
    modules = _modules(root)
    graph: dict[str, set[str]] = {u: set() for u in units(root)}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        unit = _unit(module, top)
        if unit not in graph:
            continue  # the package's own __init__
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            for target in _targets(node, package, top):
                if isinstance(node, ast.Constant) and target not in modules:
                    continue  # a string that only looks like a module name
                other = _unit(target, top)
                if other in graph and other != unit:
                    graph[unit].add(other)
    return graph


def summary(unit: str, root: Path = PACKAGE) -> str:
    """The first sentence of the unit's docstring (its ``__init__``'s for a sub-package)."""
    name = unit.split(".", 1)[1]
    path = root / name / "__init__.py" if (root / name).is_dir() else root / f"{name}.py"
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    text = " ".join(doc.split("\n\n")[0].split())
    text = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", text).replace("``", "`")  # rST roles → code
    first = re.split(r"(?<=\.)\s+(?=[A-Z`(])", text, maxsplit=1)[0]
    return first.replace("|", "\\|") or "—"


def render_table(root: Path = PACKAGE) -> str:
    """The markdown table: unit, what it holds, what it imports, what imports it."""
    graph = import_graph(root)
    users = {u: sorted(v for v, deps in graph.items() if u in deps) for u in graph}

    def names(items: list[str] | set[str]) -> str:
        return ", ".join(f"`{i.split('.', 1)[1]}`" for i in sorted(items)) or "—"

    rows = ["| unit | holds | imports | imported by |", "| --- | --- | --- | --- |"]
    for unit in graph:
        rows.append(
            f"| `{unit}` | {summary(unit, root)} | {names(graph[unit])} | {names(users[unit])} |"
        )
    return "\n".join(rows) + "\n"


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """mkdocs event: expand the import-table marker."""
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, render_table())
