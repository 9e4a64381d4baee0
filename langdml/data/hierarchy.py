"""Class hierarchies (class name → its groups, coarsest first) for the mistake-severity metrics.

Sources (``eval.hierarchy``):

* ``null`` (default): the dataset's own hierarchy when it has one. The emoji benchmark has the
  Unicode emoji group / subgroup of each class (``emoji_groups.tsv`` beside this module, taken from
  ``emoji-test.txt`` of Unicode Emoji 17.0), e.g. "grinning face" → ("Smileys & Emotion",
  "face-smiling"). Other datasets have none.
* ``none``: no hierarchy (no severity metrics).
* ``PATH``: a user file, CSV (``.csv``) or tab-separated (anything else), two columns per row:
  the class name and its group path, ``group`` or ``group/subgroup`` (any depth, ``/``-separated),
  e.g. ``black footed albatross,seabirds/albatrosses``. Lines starting with ``#`` and a header row
  whose first cell is ``class`` or ``class_name`` are skipped. Every class must have a path of
  the same depth (the metrics compare levels), and every evaluated class must be listed.

A split file's ``category`` column (``langdml.data.split_file``) is a two-level hierarchy of its
own: :func:`class_categories` gives each class's parent.

Class names are matched by :func:`~langdml.data.names.match_key` (Unicode NFC, collapsed
whitespace, case folded: the loaders' cleaned names are lower-case; a file may keep the original
capitals).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from langdml.data.names import match_key
from langdml.data.records import ImageDataset
from langdml.errors import DataError

EMOJI_GROUPS = Path(__file__).with_name("emoji_groups.tsv")
Hierarchy = dict[str, tuple[str, ...]]


def _key(name: str) -> str:
    return match_key(str(name))


def read_hierarchy(path: str | Path) -> Hierarchy:
    """A user hierarchy file (module docstring) as {class name: (group, subgroup, ...)}."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(
            f"eval.hierarchy: {file} is not a file; expected a CSV/TSV of class_name,group[/sub]"
        )
    try:
        text = file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"eval.hierarchy: cannot read {file}: {exc}") from None
    delimiter = "," if file.suffix.lower() == ".csv" else "\t"
    out: Hierarchy = {}
    for lineno, row in enumerate(csv.reader(text.splitlines(), delimiter=delimiter), start=1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        if not out and row[0].strip().lower() in ("class", "class_name"):
            continue
        path_parts = [p.strip() for p in row[1].split("/")] if len(row) == 2 else []
        if len(row) != 2 or not row[0].strip() or not all(path_parts):
            raise DataError(
                f"eval.hierarchy: {file.name} line {lineno}: expected 'class_name"
                f"{delimiter!r}group[/subgroup]', got {delimiter.join(row)!r}"
            )
        name = _key(row[0])
        if name in out and out[name] != tuple(path_parts):
            raise DataError(
                f"eval.hierarchy: {file.name} line {lineno}: class {row[0].strip()!r} is listed "
                f"twice with different groups ({'/'.join(out[name])} and {row[1].strip()})"
            )
        out[name] = tuple(path_parts)
    if not out:
        raise DataError(f"eval.hierarchy: {file} lists no classes")
    return out


def emoji_hierarchy() -> Hierarchy:
    """The emoji benchmark's classes → (Unicode group, subgroup)."""
    out: Hierarchy = {}
    for line in EMOJI_GROUPS.read_text(encoding="utf-8").splitlines()[1:]:
        if line.startswith("#") or line.startswith("code_point"):
            continue
        _, name, group, subgroup = line.split("\t")
        out[_key(name)] = (group, subgroup)
    return out


def resolve_hierarchy(setting: str | None, dataset_name: str) -> Hierarchy | None:
    """The hierarchy ``eval.hierarchy`` names for a dataset (module docstring)."""
    if setting is None:
        return emoji_hierarchy() if dataset_name.split(":")[0] == "emoji" else None
    if str(setting).strip().lower() == "none":
        return None
    return read_hierarchy(setting)


def group_path(class_name: str, hierarchy: Hierarchy) -> tuple[str, ...]:
    """The groups of ``class_name`` in ``hierarchy`` (coarsest first); DataError when absent."""
    found = hierarchy.get(_key(class_name))
    if found is None:
        raise DataError(f"class {class_name!r} is not in the class hierarchy")
    return found


def class_group_codes(class_names: Sequence[str], hierarchy: Hierarchy) -> np.ndarray:
    """(C, D) integer codes: entry [c, j] identifies class c's group at level j (0 = coarsest);
    two classes share a level-j code exactly when their paths agree on levels 0..j.

    Classes missing from the hierarchy, or paths of different depths, are one DataError line."""
    missing = [n for n in dict.fromkeys(class_names) if _key(n) not in hierarchy]
    if missing:
        raise DataError(
            f"eval.hierarchy: {len(missing)} of {len(set(class_names))} evaluated classes are "
            f"not in the hierarchy, first: {missing[0]!r}; expected one row per class name"
        )
    paths = [hierarchy[_key(n)] for n in class_names]
    depths = sorted({len(p) for p in paths})
    if len(depths) > 1:
        short = next(n for n, p in zip(class_names, paths) if len(p) == depths[0])
        raise DataError(
            f"eval.hierarchy: group paths have different depths {depths} (e.g. {short!r}); "
            "expected the same number of levels for every class"
        )
    codes = np.empty((len(paths), depths[0] if paths else 0), dtype=np.int64)
    for level in range(codes.shape[1]):
        prefixes = {p[: level + 1] for p in paths}
        index = {prefix: i for i, prefix in enumerate(sorted(prefixes))}
        codes[:, level] = [index[p[: level + 1]] for p in paths]
    return codes


def class_categories(dataset: ImageDataset) -> dict[int, str]:
    """{class label: its category} from a split file's ``category`` column (the class's parent
    in a two-level hierarchy), for every class of ``dataset`` (a split part relabels its
    classes 0..C-1, so ask the part you sample from). A dataset without the column is one
    DataError line."""
    from langdml.data.split_file import CATEGORY

    column = dataset.extras.get(CATEGORY)
    if column is None:
        raise DataError(
            f"dataset {dataset.name!r} has no class categories; give data.split_file a "
            "'category' column (the parent of each class)"
        )
    out: dict[int, str] = {}
    for label, category in zip(dataset.labels.tolist(), column):
        if out.setdefault(int(label), str(category)) != str(category):
            raise DataError(
                f"dataset {dataset.name!r}: class {dataset.class_names[label]!r} has two "
                f"categories ({out[int(label)]!r} and {category!r}); expected one per class"
            )
    return out
