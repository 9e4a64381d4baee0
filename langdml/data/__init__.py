"""Datasets: one record type (:class:`ImageDataset`) and one entry point (:func:`load_dataset`).

A dataset SPEC is ``emoji``, ``cub200:PATH``, ``cars196:PATH``, ``sop:PATH``, ``inshop:PATH``,
``imagefolder:PATH`` or ``hf:NAME_OR_PATH``.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from langdml.data.records import (
    DatasetSplit,
    ImageDataset,
    ImageSource,
    class_disjoint_split,
    class_fold_split,
)
from langdml.data.splits import ClassSplits, class_splits
from langdml.errors import DataError

# kind -> (module, function); the function takes (argument after the colon or None, cache_dir).
_LOADERS: dict[str, tuple[str, str]] = {
    "emoji": ("langdml.data.emoji", "load_emoji"),
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
            f"unknown dataset spec {spec!r}; expected one of: emoji, cub200:PATH, cars196:PATH, "
            "sop:PATH, inshop:PATH, imagefolder:PATH, hf:NAME_OR_PATH"
        )
    if kind != "emoji" and not arg:
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
    "ImageDataset",
    "ImageSource",
    "class_disjoint_split",
    "class_fold_split",
    "class_splits",
    "known_kinds",
    "load_dataset",
    "parse_spec",
]
