"""Datasets: one record type (:class:`ImageDataset`) and one entry point (:func:`load_dataset`).

A dataset SPEC is ``emoji``, ``shapes`` (or ``shapes:holdout``), ``cub200:PATH``,
``cars196:PATH``, ``sop:PATH``, ``inshop:PATH``, ``imagefolder:PATH`` or ``hf:NAME_OR_PATH``.
A split file (``langdml.data.split_file``) gives any of them a protocol of its own: its train /
val / test classes, query / gallery roles (``langdml.data.roles``) and class categories
(:func:`class_categories`).
"""

from __future__ import annotations

import importlib
from pathlib import Path

from langdml.data.hierarchy import class_categories
from langdml.data.records import (
    DatasetSplit,
    ImageDataset,
    ImageSource,
    class_disjoint_split,
    class_fold_split,
)
from langdml.data.roles import EvalRoles, eval_roles
from langdml.data.split_file import apply_split_file, read_split_file
from langdml.data.split_writer import write_split_file
from langdml.data.splits import ClassSplits, class_splits
from langdml.errors import DataError

# Kinds that need no argument (built into the cache by `langdml data build`).
_BUILT = ("emoji", "shapes")
# kind -> (module, function); the function takes (argument after the colon or None, cache_dir).
_LOADERS: dict[str, tuple[str, str]] = {
    "emoji": ("langdml.data.emoji", "load_emoji"),
    "shapes": ("langdml.data.shapes", "load_shapes"),
    "cub200": ("langdml.data.cub", "load_cub200"),
    "cars196": ("langdml.data.cars", "load_cars196"),
    "sop": ("langdml.data.sop", "load_sop"),
    "inshop": ("langdml.data.inshop", "load_inshop"),
    "imagefolder": ("langdml.data.imagefolder", "load_imagefolder"),
    "hf": ("langdml.data.hf", "load_hf"),
}


def known_kinds() -> list[str]:
    return list(_LOADERS)


def parse_spec(spec: str) -> tuple[str, str | None]:
    kind, sep, arg = str(spec).partition(":")
    kind = kind.strip().lower()
    if kind not in _LOADERS:
        raise DataError(
            f"unknown dataset spec {spec!r}; expected one of: emoji, shapes, cub200:PATH, "
            "cars196:PATH, sop:PATH, inshop:PATH, imagefolder:PATH, hf:NAME_OR_PATH"
        )
    if kind not in _BUILT and not arg:
        raise DataError(f"dataset spec {spec!r} needs a path: {kind}:PATH")
    return kind, (arg or None)


def load_dataset(spec: str, cache_dir: str | Path | None = None) -> ImageDataset:
    """Load a dataset by SPEC (see module docstring)."""
    kind, arg = parse_spec(spec)
    module_name, func_name = _LOADERS[kind]
    loader = getattr(importlib.import_module(module_name), func_name)
    return loader(arg, cache_dir=cache_dir)


__all__ = [
    "ClassSplits",
    "DatasetSplit",
    "EvalRoles",
    "ImageDataset",
    "ImageSource",
    "apply_split_file",
    "class_categories",
    "class_disjoint_split",
    "class_fold_split",
    "class_splits",
    "eval_roles",
    "known_kinds",
    "load_dataset",
    "parse_spec",
    "read_split_file",
    "write_split_file",
]
