"""DeepFashion In-Shop Clothes Retrieval (Liu et al., CVPR 2016)."""

from __future__ import annotations

import os
from pathlib import Path

from langdml.data._files import check_files, compact, existing_path, file_dataset, require_dir
from langdml.data.names import clean_class_name, natural_key
from langdml.data.records import ImageDataset
from langdml.errors import DataError

PARTITION = "list_eval_partition.txt"
STATUSES = ("train", "query", "gallery")


def load_inshop(
    path: str | os.PathLike | None, cache_dir: str | Path | None = None
) -> ImageDataset:
    """In-Shop from ``list_eval_partition.txt`` (in ``PATH`` or ``PATH/Eval``).

    The file's first line is the image count, the second the header ``image_name item_id
    evaluation_status``, then rows like ``img/WOMEN/Dresses/id_00000002/02_1_front.jpg
    id_00000002 train``. Image paths are relative to ``PATH`` (or ``PATH/Img``, the download's
    layout). Each item id is a class, labels in item-id order; train items and query/gallery
    items are disjoint (3,997 / 3,985 in the release).

    The evaluation is the papers' protocol: training on the train items, then each query image
    searches the gallery images only (no leave-one-out); ``extras["official_split"]`` holds each
    image's status (train / query / gallery), so ``class_disjoint_split`` gives the official
    split and the evaluation reads the query / gallery roles from the test half
    (``langdml.data.roles.eval_roles``, the roles a split file can give any dataset).

    The class name is the gender and category folder (``img/WOMEN/Dresses/...`` → "women
    dresses"), shared by many items, so ``class_names`` are NOT unique here (as for SOP).
    """
    kind = "inshop"
    root = require_dir(existing_path(path, kind), kind)
    partition = next(
        (d / PARTITION for d in (root, root / "Eval") if (d / PARTITION).is_file()), None
    )
    if partition is None:
        raise DataError(
            f"{kind}: {PARTITION} not found in {root} (nor in {root / 'Eval'}); expected the "
            "In-Shop folder with Eval/list_eval_partition.txt and img/"
        )
    rows = _read_partition(partition, kind)
    rel = [r[0] for r in rows]
    image_root = next((d for d in (root, root / "Img") if (d / rel[0]).is_file()), root)
    paths = check_files(image_root, rel, kind, PARTITION)
    items = sorted({r[1] for r in rows}, key=natural_key)
    status: dict[str, str] = {}
    for image, item, split in rows:
        side = "train" if split == "train" else "test"
        if status.setdefault(item, side) != side:
            raise DataError(
                f"{kind}: item {item} has images in train and in query/gallery ({image}); "
                "expected disjoint train and test items"
            )
    labels, kept = compact([r[1] for r in rows], items)
    name_of = {r[1]: _category_name(r[0]) for r in rows}
    names = [name_of[items[k]] for k in kept]
    extras = {"item_id": [r[1] for r in rows], "official_split": [r[2] for r in rows]}
    return file_dataset("inshop", kind, paths, rel, labels, names, extras, root=image_root)


def _read_partition(file: Path, kind: str) -> list[tuple[str, str, str]]:
    try:
        lines = [ln for ln in file.read_text(encoding="utf-8-sig").splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{kind}: cannot read {file}: {exc}") from None
    header = ["image_name", "item_id", "evaluation_status"]
    if len(lines) < 3 or not lines[0].strip().isdigit() or lines[1].split() != header:
        raise DataError(
            f"{kind}: {file.name} must start with the image count and the header "
            f"'{' '.join(header)}'; got {lines[:2]!r}"
        )
    rows = []
    for lineno, line in enumerate(lines[2:], start=3):
        fields = line.split()
        if len(fields) != 3 or fields[2] not in STATUSES:
            raise DataError(
                f"{kind}: {file.name} line {lineno}: expected '<image_name> <item_id> "
                f"train|query|gallery', got {line.strip()!r}"
            )
        rows.append((fields[0].replace("\\", "/"), fields[1], fields[2]))
    if int(lines[0]) != len(rows):
        raise DataError(
            f"{kind}: {file.name} announces {int(lines[0])} images but lists {len(rows)}"
        )
    return rows


def _category_name(rel_path: str) -> str:
    parts = rel_path.split("/")
    # img/<GENDER>/<Category>/<item>/<file>; a shorter path has no category folders
    folders = parts[1:3] if len(parts) >= 5 and parts[0].lower() == "img" else parts[:-2]
    return clean_class_name(" ".join(folders)) if folders else "clothes"
