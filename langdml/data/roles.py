"""Evaluation roles of a dataset part: which images query and which are searched.

Without roles a part is evaluated leave-one-out: every image queries all the others. With roles
(a split file's ``is_query`` / ``is_gallery`` columns, or In-Shop's own query / gallery
statuses) the queries search the gallery only, and a query that is also a gallery image is
searched without itself. A part none of whose images is a query is evaluated leave-one-out;
images with neither role take no part in its evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from langdml.data.records import ImageDataset
from langdml.data.split_file import IS_GALLERY, IS_QUERY


@dataclass(frozen=True)
class EvalRoles:
    """Rows of a dataset part: ``query`` (Q,) and ``gallery`` (G,) row ids, and per query the
    position in ``gallery`` of the query's own row (``self_index``, (Q,), -1 when the query is
    not a gallery image)."""

    query: np.ndarray
    gallery: np.ndarray
    self_index: np.ndarray


def role_masks(dataset: ImageDataset) -> tuple[np.ndarray, np.ndarray] | None:
    """(is_query, is_gallery) boolean rows: a split file's columns, else In-Shop's statuses
    (``extras["official_split"]`` "query" / "gallery"); None when the dataset has no roles."""
    if IS_QUERY in dataset.extras:
        query = np.asarray(dataset.extras[IS_QUERY], dtype=bool)
        return query, np.asarray(dataset.extras[IS_GALLERY], dtype=bool)
    marks = dataset.extras.get("official_split")
    if marks is None or not {"query", "gallery"} & set(marks):
        return None
    arr = np.asarray(marks)
    return arr == "query", arr == "gallery"


def eval_roles(dataset: ImageDataset) -> EvalRoles | None:
    """The query / gallery rows of ``dataset`` (module docstring); None: leave-one-out."""
    masks = role_masks(dataset)
    if masks is None or not masks[0].any():
        return None
    query, gallery = (np.flatnonzero(m) for m in masks)
    position = np.full(len(dataset), -1, dtype=np.int64)
    position[gallery] = np.arange(len(gallery))
    return EvalRoles(query=query, gallery=gallery, self_index=position[query])
