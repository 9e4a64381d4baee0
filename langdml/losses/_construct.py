"""Turning a config entry (a name or {name: ..., <arguments>}) into a constructed module, with
bad arguments as one line naming the entry."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from langdml.errors import ConfigError, LangDMLError


def split_entry(entry: Any, where: str) -> tuple[str, dict[str, Any]]:
    if isinstance(entry, str):
        return entry, {}
    if not isinstance(entry, Mapping) or "name" not in entry:
        raise ConfigError(f"{where}: expected a name or a mapping with a 'name' key, got {entry!r}")
    kwargs = {k: v for k, v in entry.items() if k != "name"}
    return str(entry["name"]), kwargs


def construct(factory: Callable[..., nn.Module], kwargs: dict[str, Any], where: str) -> nn.Module:
    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where}: bad arguments {sorted(kwargs)} ({exc})") from None
    try:
        return factory(**kwargs)
    except LangDMLError as exc:
        raise ConfigError(f"{where}: {exc}") from None
