"""Stanford Online Products (SOP)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from langdml.data._files import (
    check_files,
    compact,
    existing_path,
    file_dataset,
    find_root,
    read_table,
)
from langdml.data.names import clean_class_name
from langdml.data.records import ImageDataset
from langdml.errors import DataError


def load_sop(path: str | os.PathLike | None, cache_dir: str | Path | None = None) -> ImageDataset:
    """Stanford Online Products from ``Ebay_train.txt`` and ``Ebay_test.txt``.

    ``PATH`` is the ``Stanford_Online_Products`` folder (or its parent). Each file has the header
    ``image_id class_id super_class_id path`` and rows like
    ``1 1 1 bicycle_final/111085122871_0.JPG``.
    Labels follow class ids; the official split has train classes 1..11318 and test classes
    11319..22634, so train classes come first. The first-half rule of ``class_disjoint_split``
    on all 22634 classes puts 11317 classes in train, i.e. it moves ONE class (id 11318) from the
    official train side to test; :func:`official_split` gives the exact official split.

    The class name is the super-class name from the folder (``bicycle_final`` → ``bicycle``), as
    language-guided DML used for SOP: 12 names over 22634 classes, so ``class_names`` are NOT
    unique here. Per-image extras: ``super_class`` (that name), ``super_class_id`` and
    ``official_split`` (``"train"``/``"test"``, the file the image came from).
    """
    kind = "sop"
    root = find_root(
        existing_path(path, kind),
        "Ebay_train.txt",
        "Stanford_Online_Products",
        kind,
        "the Stanford_Online_Products folder with Ebay_train.txt and Ebay_test.txt",
    )
    columns = ["image_id", "class_id", "super_class_id", "path"]
    rows: list[tuple[str, list]] = []
    for split in ("train", "test"):
        file = root / f"Ebay_{split}.txt"
        rows += [(split, r) for r in read_table(file, kind, columns, header=True)]

    class_split: dict[int, str] = {}
    class_super: dict[int, str] = {}
    for split, (_, class_id, _, rel) in rows:
        if class_split.setdefault(class_id, split) != split:
            raise DataError(
                f"{kind}: class id {class_id} appears in both Ebay_train.txt and Ebay_test.txt"
            )
        if class_id not in class_super:
            class_super[class_id] = _sop_super_class(rel)
    rel = [r[3].replace("\\", "/") for _, r in rows]
    paths = check_files(root, rel, kind, "Ebay_train.txt/Ebay_test.txt")
    class_ids = sorted(class_split)
    labels, kept = compact([r[1] for _, r in rows], class_ids)
    names = [class_super[class_ids[k]] for k in kept]
    extras = {
        "super_class": [class_super[r[1]] for _, r in rows],
        "super_class_id": [int(r[2]) for _, r in rows],
        "official_split": [split for split, _ in rows],
    }
    return file_dataset("sop", kind, paths, rel, labels, names, extras, root=root)


def _sop_super_class(rel_path: str) -> str:
    folder = rel_path.replace("\\", "/").split("/", 1)[0]
    return clean_class_name(re.sub(r"_final$", "", folder))
