"""Cars196: cars_annos.mat or a folder per class."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from langdml.data._files import (
    check_files,
    class_dirs,
    compact,
    existing_path,
    file_dataset,
    folder_dataset,
)
from langdml.data.names import collapse_whitespace, normalise_class_name
from langdml.data.records import ImageDataset
from langdml.errors import DataError


def load_cars196(
    path: str | os.PathLike | None, cache_dir: str | Path | None = None
) -> ImageDataset:
    """Stanford Cars (196 classes) from ``cars_annos.mat`` or from one folder per class.

    - ``cars_annos.mat`` (``PATH`` is the file or its folder): struct array ``annotations`` with
      fields ``relative_im_path`` (e.g. ``car_ims/000001.jpg``, relative to the .mat's folder) and
      ``class`` (1..196), and the cell array ``class_names``. Images keep the file's order;
      labels follow class ids (1..196 → 0..195, so the class-disjoint split is the usual 98/98).
    - per-class folders: ``PATH/<class name>/<image>``, or ``PATH/train/<class name>/`` and
      ``PATH/test/<class name>/`` merged by class name. Classes are ordered by
      :func:`natural_key` of the folder name. This groups classes by make like the official ids
      but need not match their order within a make, so the 98/98 split can differ from the
      official one by a few classes: use ``cars_annos.mat`` for the exact protocol.

    Class names are kept as given, with whitespace stripped and collapsed.
    """
    kind = "cars196"
    target = existing_path(path, kind)
    mat = target if target.is_file() else target / "cars_annos.mat"
    if mat.is_file():
        return _cars_from_mat(mat, kind)
    layout_root = target
    subdirs = class_dirs(target)
    if subdirs and all(d.name.lower() in ("train", "test") for d in subdirs):
        folders = [c for d in subdirs for c in class_dirs(d)]
    else:
        folders = subdirs
    if not folders:
        raise DataError(
            f"{kind}: {target} has no cars_annos.mat and no class folders; expected "
            "cars_annos.mat with car_ims/, or one folder per class (PATH/<class name>/<image>)"
        )
    return folder_dataset(
        "cars196",
        kind,
        layout_root,
        folders,
        collapse_whitespace,
        hint="expected cars_annos.mat with car_ims/, or one folder per class",
    )


def _mat_scalar(value: Any) -> Any:
    """Unwrap MATLAB's nested 1×1 arrays (``array([[3]])``, ``array(['name'])``) to a scalar."""
    arr = np.asarray(value)
    while arr.dtype == object and arr.size == 1:
        arr = np.asarray(arr.reshape(-1)[0])
    if arr.size != 1:
        raise ValueError(f"expected one value, got an array of shape {arr.shape}")
    value = arr.reshape(-1)[0]
    return value.item() if isinstance(value, np.generic) else value


def _cars_from_mat(mat: Path, kind: str) -> ImageDataset:
    from scipy.io import loadmat

    try:
        data = loadmat(str(mat))
    except Exception as exc:  # scipy raises several unrelated types for non-.mat files
        raise DataError(f"{kind}: cannot read {mat} as a MATLAB file: {exc}") from None
    ann = data.get("annotations")
    names_cell = data.get("class_names")
    fields = getattr(getattr(ann, "dtype", None), "names", None) or ()
    if ann is None or names_cell is None or not {"relative_im_path", "class"} <= set(fields):
        raise DataError(
            f"{kind}: {mat.name} must hold a struct array 'annotations' with fields "
            "relative_im_path and class, and a cell array 'class_names'"
        )
    try:
        class_names = [normalise_class_name(str(_mat_scalar(n))) for n in names_cell.reshape(-1)]
        records = ann.reshape(-1)
        rel = [str(_mat_scalar(r["relative_im_path"])).replace("\\", "/") for r in records]
        raw = [int(_mat_scalar(r["class"])) for r in records]
    except (ValueError, TypeError) as exc:
        raise DataError(f"{kind}: malformed entry in {mat.name}: {exc}") from None
    if not rel:
        raise DataError(f"{kind}: {mat.name} has no annotations")
    class_ids = list(range(1, len(class_names) + 1))
    unknown = sorted({c for c in raw if not 1 <= c <= len(class_names)})
    if unknown:
        raise DataError(
            f"{kind}: {mat.name} uses class id(s) {unknown[:5]} outside 1..{len(class_names)} "
            "(the number of class_names)"
        )
    labels, kept = compact(raw, class_ids)
    paths = check_files(mat.parent, rel, kind, mat.name)
    return file_dataset(
        "cars196", kind, paths, rel, labels, [class_names[k] for k in kept], root=mat.parent
    )
