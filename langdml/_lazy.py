"""Lazy package exports, so ``langdml --help`` and the CLI start without importing torch; and
old names of renamed functions, kept for a release with a deprecation warning."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from importlib import import_module
from typing import Any


def lazy_getattr(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` resolving ``exports[name]`` on first use: a module path
    (the attribute of the same name there) or ``module:attribute`` (exported under another
    name than the one it is defined with)."""

    def __getattr__(name: str) -> Any:
        if name in exports:
            module, _, attribute = exports[name].partition(":")
            return getattr(import_module(module), attribute or name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__


def renamed_getattr(module: str, renames: dict[str, str]) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` for functions of ``module`` that were renamed: the old
    name (a key of ``renames``) still gives the function, with a ``DeprecationWarning`` naming
    the new one."""

    def __getattr__(name: str) -> Any:
        if name in renames:
            new = renames[name]
            warnings.warn(
                f"{module}.{name} is deprecated; use {module}.{new}",
                DeprecationWarning,
                stacklevel=2,
            )
            return getattr(sys.modules[module], new)
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
