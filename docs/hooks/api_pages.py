"""mkdocs hook: the API reference pages list each stage's public names, resolved at build time.

A page holds a marker line ``<!-- api: langdml.losses -->``; this hook replaces it with one
mkdocstrings block (``::: module.Name``) per public name of that package — its ``__all__``, or, for
a module without one, the classes and functions it defines — each pointing at the module that
defines the name, so a page follows the code when a module moves. Constants get a small table.
mkdocstrings then renders signatures and docstrings.
"""

from __future__ import annotations

import importlib
import inspect
import re
from typing import Any

MARKER = re.compile(r"^<!-- api: ([\w.]+) -->$", re.MULTILINE)


def public_names(module: Any) -> list[str]:
    """The names a module exports: ``__all__``, else its own public classes and functions."""
    names = getattr(module, "__all__", None)
    if names is not None:
        return list(names)
    return [
        name
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and (inspect.isclass(obj) or inspect.isfunction(obj))
        and getattr(obj, "__module__", "").startswith(module.__name__)
    ]


def _constant(value: Any) -> str:
    if isinstance(value, dict):
        text = ", ".join(map(str, value))
    elif isinstance(value, list | tuple | set | frozenset):
        text = ", ".join(sorted(map(str, value)) if isinstance(value, set | frozenset) else value)
    else:
        text = repr(value)
    return text.replace("|", "\\|")


def render_api(package: str) -> str:
    """The markdown that documents ``package``'s public names."""
    module = importlib.import_module(package)
    blocks, constants = [], []
    for name in public_names(module):
        obj = getattr(module, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            blocks.append(f"::: {obj.__module__}.{obj.__qualname__}\n")
        elif callable(obj) and hasattr(obj, "__module__") and hasattr(obj, "__qualname__"):
            blocks.append(f"::: {obj.__module__}.{obj.__qualname__}\n")
        else:
            constants.append(f"| `{name}` | {_constant(obj)} |")
    out = [f"::: {package}\n    options:\n      members: false\n      show_root_heading: false\n"]
    if constants:
        out += ["| constant | value |", "|---|---|", *constants, ""]
    return "\n".join(out + blocks)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """mkdocs event: expand every API marker of a page."""
    return MARKER.sub(lambda m: render_api(m.group(1)), markdown)
