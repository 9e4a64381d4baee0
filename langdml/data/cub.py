"""CUB-200-2011 from its official files."""

from __future__ import annotations

import os
from pathlib import Path

from langdml.data._files import (
    check_files,
    compact,
    existing_path,
    file_dataset,
    find_root,
    id_map,
    read_table,
)
from langdml.data.names import clean_class_name
from langdml.data.records import ImageDataset
from langdml.errors import DataError


def load_cub200(
    path: str | os.PathLike | None, cache_dir: str | Path | None = None
) -> ImageDataset:
    """CUB-200-2011 from its official files.

    ``PATH`` is the ``CUB_200_2011`` folder (or its parent) holding ``images.txt`` (``<image_id>
    <relative path>``), ``classes.txt`` (``<class_id> <folder name>``), ``image_class_labels.txt``
    (``<image_id> <class_id>``) and ``images/``. Images are ordered by image id, labels by class id
    (1..200 → 0..199, so the class-disjoint split is the usual 100/100), class names cleaned with
    :func:`clean_class_name` ("001.Black_footed_Albatross" → "black footed albatross").
    """
    kind = "cub200"
    root = find_root(
        existing_path(path, kind),
        "images.txt",
        "CUB_200_2011",
        kind,
        "the CUB_200_2011 folder with images.txt, classes.txt, image_class_labels.txt and images/",
    )
    images = id_map(
        read_table(root / "images.txt", kind, ["image_id", "path"]), root / "images.txt", kind
    )
    classes = id_map(
        read_table(root / "classes.txt", kind, ["class_id", "name"]), root / "classes.txt", kind
    )
    label_file = root / "image_class_labels.txt"
    image_labels = id_map(read_table(label_file, kind, ["image_id", "class_id"]), label_file, kind)

    unknown_images = sorted(set(image_labels) - set(images))
    if unknown_images:
        raise DataError(
            f"{kind}: image_class_labels.txt labels {len(unknown_images)} image id(s) not in "
            f"images.txt, first: {unknown_images[0]}"
        )
    image_ids = sorted(images)
    unlabelled = [i for i in image_ids if i not in image_labels]
    if unlabelled:
        raise DataError(
            f"{kind}: {len(unlabelled)} image(s) of images.txt have no label in "
            f"image_class_labels.txt, first: image id {unlabelled[0]}"
        )
    unknown = sorted({c for c in image_labels.values() if c not in classes})
    if unknown:
        raise DataError(
            f"{kind}: image_class_labels.txt uses class id(s) {unknown[:5]} not in classes.txt "
            f"(known ids {min(classes)}..{max(classes)})"
        )
    class_ids = sorted(classes)
    raw = [image_labels[i] for i in image_ids]
    labels, kept = compact(raw, class_ids)
    rel = [f"images/{images[i]}" for i in image_ids]
    paths = check_files(root, rel, kind, "images.txt")
    names = [clean_class_name(classes[class_ids[k]]) for k in kept]
    return file_dataset("cub200", kind, paths, rel, labels, names, root=root)
