"""Containment of paths that come from a file's contents or a name.

A run id read from ``results.csv``, a run or ablation name, a file listed in a dataset's split
file or in a manifest names a place *inside* a folder. :func:`inside` resolves it there and
refuses (one ``LangDMLError`` line) an absolute path, a ``..`` step, or a symbolic link that
leads out of the folder.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePath

from langdml.errors import LangDMLError

# Control characters (newline, carriage return, NUL, escape, ...): never part of a name or a path
# that reaches a file system, a log line or a generated script.
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def has_control(text: str) -> bool:
    return CONTROL.search(text) is not None


def escape_outside(rel: str | os.PathLike) -> str | None:
    """Why ``rel`` cannot be a path relative to a folder (absolute, ``..``, control characters),
    or None when it can. Lexical only: links are checked by :func:`inside`."""
    text = os.fspath(rel)
    if not text:
        return "it is empty"
    if has_control(text):
        return "it holds a control character"
    pure = PurePath(text)
    if pure.is_absolute() or pure.drive or text.startswith(("/", "\\")):
        return "it is an absolute path"
    if ".." in pure.parts or ".." in re.split(r"[\\/]", text):
        return "it steps out with '..'"
    return None


def inside(root: str | os.PathLike, rel: str | os.PathLike, what: str) -> Path:
    """``root / rel``, refused in one line when ``rel`` is absolute, steps out with ``..``, or
    resolves (through symbolic links) outside ``root``. ``what`` names where ``rel`` came from."""
    why = escape_outside(rel)
    if why is None:
        base = Path(root).resolve()
        target = (base / rel).resolve()
        if target != base and base not in target.parents:
            why = f"it resolves to {str(target)!r}, outside {str(base)!r} (a symbolic link?)"
    if why is not None:
        raise LangDMLError(
            f"{what} {os.fspath(rel)!r} is refused: {why}; expected a name inside "
            f"{os.fspath(root)!r}"
        )
    return Path(root) / rel
