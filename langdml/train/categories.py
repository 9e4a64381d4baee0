"""The categories of the hierarchical sampler: one category per training class.

Sources, the first that applies:

1. ``eval.hierarchy`` set to a file: the group at ``train.category_level`` (0 = coarsest);
2. the ``category`` column of a split file (``data.split_file``), read by
   :func:`langdml.data.hierarchy.class_categories`: one level, the class's parent;
3. the dataset's own hierarchy (emoji: the Unicode groups), at ``train.category_level``.

Every source ends as ``{class label: category name}``; :func:`category_codes` turns that into
the sampler's per-class codes, so another source only has to produce such a mapping.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from langdml.config import ExperimentConfig
from langdml.data import ImageDataset
from langdml.data.hierarchy import class_categories as split_file_categories
from langdml.data.hierarchy import class_group_codes, resolve_hierarchy
from langdml.data.split_file import CATEGORY
from langdml.errors import ConfigError


def column_categories(train: ImageDataset) -> dict[int, str] | None:
    """{class label: category} from the training rows' ``category`` column (a split file's),
    or None without one; a class with two categories is one DataError line."""
    if CATEGORY not in getattr(train, "extras", {}):
        return None
    return split_file_categories(train)


def hierarchy_categories(
    cfg: ExperimentConfig, train: ImageDataset, setting: str | None
) -> dict[int, str] | None:
    """{class label: its group at ``train.category_level``, named by the group's code} from
    the hierarchy ``setting`` names (``eval.hierarchy``'s values), or None when it names none."""
    hierarchy = resolve_hierarchy(setting, train.name)
    if hierarchy is None:
        return None
    codes = class_group_codes(train.class_names, hierarchy)
    level = cfg.train.category_level
    if level >= codes.shape[1]:
        raise ConfigError(
            f"train.category_level {level} is past the hierarchy's {codes.shape[1]} level(s); "
            f"use 0..{codes.shape[1] - 1}"
        )
    # Two classes share a category exactly when their level codes agree; zero-padded, the
    # names sort as the codes do (the order of the groups' paths).
    return {c: f"{int(code):09d}" for c, code in enumerate(codes[:, level])}


def category_codes(categories: Mapping[int, str], num_classes: int) -> np.ndarray:
    """(C,) integer code of each class label 0..C-1 (codes follow the sorted category names);
    a class without a category is one ConfigError line."""
    missing = [c for c in range(num_classes) if c not in categories]
    if missing:
        raise ConfigError(
            f"train.sampler hierarchical: {len(missing)} of {num_classes} training classes have "
            f"no category (first: class {missing[0]}); expected one per class"
        )
    names = [categories[c] for c in range(num_classes)]
    return np.unique(np.asarray(names, dtype=object).astype(str), return_inverse=True)[1]


def class_categories(cfg: ExperimentConfig, train: ImageDataset) -> np.ndarray:
    """(C,) category code of each training class, from the first source (module docstring)."""
    setting = cfg.eval.hierarchy
    explicit = setting is not None and str(setting).strip().lower() != "none"
    found = hierarchy_categories(cfg, train, setting) if explicit else None
    if found is None:
        found = column_categories(train)
        if found is not None and cfg.train.category_level:
            raise ConfigError(
                f"train.category_level {cfg.train.category_level} is past the one level of the "
                "data's category column; use 0, or set eval.hierarchy to a deeper hierarchy"
            )
    if found is None and setting is None:
        found = hierarchy_categories(cfg, train, None)
    if found is None:
        raise ConfigError(
            "train.sampler hierarchical needs class categories: set eval.hierarchy to a CSV/TSV "
            "of class_name,group[/subgroup], or give the data a category column (a split "
            "file's); this dataset has none of its own"
        )
    return category_codes(found, len(train.class_names))
