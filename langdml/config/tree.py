"""Config trees before validation: YAML loading, dotted overrides, one-line error messages and
deprecation notices. Free of the experiment models (they import this, not back)."""

from __future__ import annotations

import difflib
import os
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from langdml.errors import ConfigError


def deprecated(message: str) -> None:
    """A one-line deprecation message on stderr (once per message and process)."""
    if message not in _SAID:
        _SAID.add(message)
        print(f"langdml: deprecated: {message}", file=sys.stderr)


_SAID: set[str] = set()


def _section(tree: dict, dotted: str, create: bool) -> dict | None:
    node = tree
    for key in dotted.split(".")[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            if not create:
                return None
            child = node[key] = {}
        node = child
    return node


def _field_names(model: type[BaseModel], loc: tuple) -> list[str]:
    """Valid keys at ``loc`` (a pydantic error location), for 'did you mean' hints."""
    for part in loc:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return list(model.model_fields)
        model = ann
    return list(model.model_fields)


def _format_error(err: dict, root: type[BaseModel]) -> str:
    loc = tuple(err["loc"])
    dotted = ".".join(str(p) for p in loc)
    if err["type"] == "extra_forbidden":
        valid = _field_names(root, loc[:-1])
        near = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.5)
        hint = f"; did you mean {'.'.join([*map(str, loc[:-1]), near[0]])!r}?" if near else ""
        return f"unknown config key {dotted!r}{hint} (valid here: {', '.join(valid)})"
    msg = err["msg"].removeprefix("Value error, ")
    value = err.get("input")
    shown = f" (got {value!r})" if not isinstance(value, dict | list) and dotted else ""
    return f"config key {dotted or '<root>'!r}: {msg}{shown}"


def parse_value(text: str) -> Any:
    """A CLI override value parsed as YAML: ``5`` → int, ``[a, b]`` → list."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def set_dotted(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        child = node.get(k)
        if child is None:
            child = node[k] = {}
        elif not isinstance(child, dict):
            raise ConfigError(f"cannot set {dotted!r}: {k!r} holds a value, not a section")
        node = child
    node[keys[-1]] = value


def apply_overrides(tree: dict, overrides: list[str] | dict[str, Any]) -> dict:
    items = (
        overrides.items()
        if isinstance(overrides, dict)
        else [_split_override(o) for o in overrides]
    )
    for key, value in items:
        set_dotted(tree, key, value)
    return tree


def _split_override(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} must look like dotted.key=value")
    return key.strip(), parse_value(value)


def load_yaml(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {path} is not UTF-8 text (byte {exc.start}); is it the right file?"
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}".splitlines()[0]) from None
    if not isinstance(tree, dict):
        raise ConfigError(f"config file {path} must hold a mapping, got {type(tree).__name__}")
    return tree
