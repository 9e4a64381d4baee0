"""``langdml data split``: write a split file (``langdml.data.split_file``) for any dataset.

The parts come from :func:`~langdml.data.splits.class_splits` with a seeded class order, so the
file holds exactly the classes a run with ``data.class_order: seeded``, the same
``data.split_seed`` and fractions would use, and reading it back (``data.split_file``) gives
those parts again. Query / gallery roles (``query_gallery``) are drawn per val / test class
from a seeded permutation of its images.
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path

import numpy as np

from langdml.data.records import ImageDataset
from langdml.data.split_file import class_keys, delimiter_of, image_keys
from langdml.data.splits import class_splits
from langdml.errors import DataError
from langdml.io import atomic_write_text


def parse_query_gallery(value: str | float) -> str | float:
    """``none`` (no role columns: leave-one-out), ``all`` (every val/test image is a query and
    a gallery image) or a fraction in (0, 1): that share of each val/test class's images query
    (at least one, and never all), the rest are the gallery."""
    text = str(value).strip().lower()
    if text in ("none", "all"):
        return text
    try:
        fraction = float(text)
    except ValueError:
        fraction = math.nan
    if not 0.0 < fraction < 1.0:
        raise DataError(
            f"--query-gallery must be none, all or a query fraction in (0, 1), got {value!r}"
        )
    return fraction


def dataset_categories(dataset: ImageDataset) -> list[str] | None:
    """Each class's parent when the dataset has one: the coarsest group of its own hierarchy
    (emoji: the Unicode group), or the shared class name of SOP / In-Shop; else None."""
    from langdml.data.hierarchy import group_path, resolve_hierarchy

    hierarchy = resolve_hierarchy(None, dataset.name)
    if hierarchy is not None:
        return [group_path(n, hierarchy)[0] for n in dataset.class_names]
    return list(dataset.class_names) if dataset.shares_names else None


def split_rows(
    dataset: ImageDataset,
    *,
    seed: int = 0,
    train_fraction: float = 0.5,
    validation_fraction: float = 0.0,
    query_gallery: str | float = "none",
) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the split file of ``dataset`` (module docstring), in dataset order."""
    roles = parse_query_gallery(query_gallery)
    splits = class_splits(
        dataset, train_fraction, validation_fraction, class_order="seeded", split_seed=seed
    )
    row_of = {item: i for i, item in enumerate(dataset.images.items)}
    part = np.empty(len(dataset), dtype=object)
    for name in ("train", "val", "test"):
        found = getattr(splits, name)
        if found is not None:
            part[[row_of[i] for i in found.images.items]] = name
    query, gallery = _roles(dataset, part, roles, seed)
    header = ["path", "label", "split"]
    header += [] if roles == "none" else ["is_query", "is_gallery"]
    categories = dataset_categories(dataset)
    header += [] if categories is None else ["category"]
    keys, labels = image_keys(dataset), class_keys(dataset)
    rows = []
    for i, key in enumerate(keys):
        c = int(dataset.labels[i])
        row = [key, labels[c], str(part[i])]
        if roles != "none":
            row += ["true" if query[i] else "false", "true" if gallery[i] else "false"]
        rows.append(row + ([] if categories is None else [categories[c]]))
    return header, rows


def _roles(
    dataset: ImageDataset, part: np.ndarray, roles: str | float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    evaluated = part != "train"
    if roles == "none":  # no role columns are written
        return np.zeros(len(dataset), dtype=bool), np.zeros(len(dataset), dtype=bool)
    if roles == "all":  # a class's lone image has no match but itself: a gallery image only
        lone = np.bincount(dataset.labels[evaluated], minlength=dataset.num_classes) < 2
        return evaluated & ~lone[dataset.labels], evaluated.copy()
    query = np.zeros(len(dataset), dtype=bool)
    rng = np.random.default_rng([int(seed), 0x9A11])
    for c in range(dataset.num_classes):
        rows = np.flatnonzero((dataset.labels == c) & evaluated)
        n = len(rows)
        if n < 2:  # a lone image cannot be both a query and its own match
            continue
        n_query = min(n - 1, max(1, round(float(roles) * n)))
        query[rows[rng.permutation(n)[:n_query]]] = True
    return query, evaluated & ~query


def write_split_file(
    dataset: ImageDataset,
    out: str | os.PathLike,
    **options: object,
) -> Path:
    """Write the split file of ``dataset`` to ``out`` (``.csv``: comma-separated, else tabs),
    atomically; ``options`` are :func:`split_rows`'s."""
    header, rows = split_rows(dataset, **options)  # type: ignore[arg-type]
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=delimiter_of(out), lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path = Path(out).expanduser()
    atomic_write_text(path, buf.getvalue())
    return path
