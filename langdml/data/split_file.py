"""Split files: a researcher's own protocol over any dataset (``data.split_file``).

A split file is a CSV (``.csv``) or tab-separated file (any other name) with a header row and
one row per image that takes part; images the file does not list take no part. Columns:

* ``path`` (required): the image, relative to the dataset root (the folder its loader reads
  image paths from, e.g. the ``imagefolder:PATH`` folder itself); for datasets whose images are
  rows of a table (``emoji``, ``hf:``) the row number, from 0.
* ``label`` (required): the image's class as the dataset names it: the class name, or, for a
  dataset whose class names are shared by several classes (SOP, In-Shop), the class id (the
  label ``langdml data info`` counts in). It is checked, not assigned: a file cannot relabel.
* ``split`` (optional): ``train``, ``val`` or ``test``; replaces the default class split
  (``data.train_fraction`` ...). A class has one split; train and test must both occur.
* ``is_query``, ``is_gallery`` (optional, together): the image's evaluation roles in a val/test
  part: queries search the gallery only, and a row that is both is searched without itself.
  Booleans are ``1/0``, ``true/false``, ``yes/no`` (any case); an empty cell is false.
* ``category`` (optional): the class's parent in a class hierarchy (one per class).

Every problem is one :class:`~langdml.errors.DataError` line naming the file, the line and the
value, raised before any image is read: an unknown path, a path outside the dataset root, a
label that is not the image's class, a class in two splits or two categories, a query without a
gallery image of its class, a missing or unknown column, a bad boolean or split name.
"""

from __future__ import annotations

import csv
import hashlib
import os
import posixpath
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from langdml.data.records import ImageDataset
from langdml.errors import DataError
from langdml.io import stable_hash

REQUIRED = ("path", "label")
OPTIONAL = ("split", "is_query", "is_gallery", "category")
PARTS = ("train", "val", "test")
TRUE = frozenset({"1", "true", "t", "yes", "y"})
FALSE = frozenset({"0", "false", "f", "no", "n", ""})
# per-image columns a split file adds to ``ImageDataset.extras``
FILE_SPLIT, IS_QUERY, IS_GALLERY, CATEGORY = "file_split", "is_query", "is_gallery", "category"


@dataclass(frozen=True)
class SplitRow:
    """One row of a split file (``line``: its line number, the header being line 1)."""

    line: int
    path: str
    label: str
    split: str | None = None
    is_query: bool = False
    is_gallery: bool = False
    category: str | None = None


@dataclass(frozen=True)
class SplitTable:
    """A split file, parsed: its columns and rows, and its content hash."""

    file: Path
    columns: tuple[str, ...]
    rows: tuple[SplitRow, ...]
    sha256: str

    @property
    def has_roles(self) -> bool:
        return IS_QUERY in self.columns

    def error(self, line: int, message: str) -> DataError:
        return DataError(f"split file {self.file}: line {line}: {message}")


def delimiter_of(path: str | os.PathLike) -> str:
    return "," if Path(path).suffix.lower() == ".csv" else "\t"


def read_split_file(path: str | os.PathLike) -> SplitTable:
    """Parse a split file (module docstring); its rows are not yet matched to a dataset."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"split file {file} is not a file; expected a CSV/TSV with path,label")
    try:
        raw = file.read_bytes()
        text = raw.decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"split file {file}: cannot read it: {exc}") from None
    lines = csv.reader(text.splitlines(), delimiter=delimiter_of(file))
    header = [c.strip().lower() for c in next(lines, [])]
    columns = _check_header(file, header)
    rows = []
    for line, cells in enumerate(lines, start=2):
        if not "".join(cells).strip():
            continue
        if len(cells) != len(header):
            raise DataError(
                f"split file {file}: line {line}: {len(cells)} cells, expected {len(header)} "
                f"({','.join(header)}); got {delimiter_of(file).join(cells)!r}"
            )
        rows.append(_row(file, line, dict(zip(header, (c.strip() for c in cells)))))
    if not rows:
        raise DataError(f"split file {file} lists no images")
    return SplitTable(file, columns, tuple(rows), hashlib.sha256(raw).hexdigest())


def _check_header(file: Path, header: list[str]) -> tuple[str, ...]:
    expected = f"{','.join(REQUIRED)}[,{','.join(OPTIONAL)}]"
    unknown = [c for c in header if c not in REQUIRED + OPTIONAL]
    if unknown:
        raise DataError(
            f"split file {file}: line 1: unknown column {unknown[0]!r}; expected {expected}"
        )
    if len(set(header)) != len(header):
        twice = next(c for c in header if header.count(c) > 1)
        raise DataError(f"split file {file}: line 1: column {twice!r} appears twice")
    missing = [c for c in REQUIRED if c not in header]
    if IS_QUERY in header and IS_GALLERY not in header:
        missing.append(IS_GALLERY)
    if IS_GALLERY in header and IS_QUERY not in header:
        missing.append(IS_QUERY)
    if missing:
        raise DataError(
            f"split file {file}: line 1: missing column {missing[0]!r} (header "
            f"{','.join(header) or 'empty'}); expected {expected}"
        )
    return tuple(header)


def _row(file: Path, line: int, cell: dict[str, str]) -> SplitRow:
    def fail(message: str) -> DataError:
        return DataError(f"split file {file}: line {line}: {message}")

    for name in REQUIRED + (("category",) if "category" in cell else ()):
        if not cell[name]:
            raise fail(f"empty {name}; every row needs one")
    split = cell.get("split")
    if split is not None:
        split = split.lower()
        if split not in PARTS:
            raise fail(f"split {cell['split']!r} is not one of {', '.join(PARTS)}")
    roles = {}
    for name in (IS_QUERY, IS_GALLERY):
        value = cell.get(name, "").lower()
        if value not in TRUE | FALSE:
            raise fail(f"{name} {cell[name]!r} is not a boolean; expected 1/0, true/false, yes/no")
        roles[name] = value in TRUE
    if split == "train" and (roles[IS_QUERY] or roles[IS_GALLERY]):
        raise fail("a train row cannot be a query or gallery image; roles apply to val/test rows")
    return SplitRow(
        line, cell["path"], cell["label"], split, category=cell.get("category"), **roles
    )


def image_keys(dataset: ImageDataset) -> list[str]:
    """How a split file names each image of ``dataset``: its path relative to the dataset root
    (``/``-separated), or the row number for a dataset whose images are table rows."""
    if dataset.image_root is None:
        return [str(item) for item in dataset.images.items]
    root = dataset.image_root
    prefix = root.rstrip(os.sep) + os.sep
    # loaders join root and the relative path, so slicing is exact (and fast on 120k images)
    return [
        (p[len(prefix) :] if p.startswith(prefix) else os.path.relpath(p, root)).replace(
            os.sep, "/"
        )
        for p in map(str, dataset.images.items)
    ]


def class_keys(dataset: ImageDataset) -> list[str]:
    """The ``label`` a split file gives each class: its name, or its id when names are shared."""
    if dataset.shares_names:
        return [str(c) for c in range(dataset.num_classes)]
    return list(dataset.class_names)


def apply_split_file(dataset: ImageDataset, path: str | os.PathLike) -> ImageDataset:
    """``dataset`` restricted to the images the split file lists, in the dataset's order, with
    the file's columns as per-image extras (``file_split``, ``is_query``, ``is_gallery``,
    ``category``); classes without a listed image are dropped. Checked whole before returning."""
    table = read_split_file(path)
    rows = _match_rows(table, dataset)
    _check_classes(table, rows, dataset)
    _check_queries(table, rows)
    order = sorted(rows, key=lambda r: rows[r][0])
    keep = np.asarray([rows[r][0] for r in order], dtype=np.int64)
    extras = {k: [v[i] for i in keep] for k, v in dataset.extras.items()}
    by_index = [rows[r][1] for r in order]
    if "split" in table.columns:
        extras[FILE_SPLIT] = [r.split for r in by_index]
    if table.has_roles:
        extras[IS_QUERY] = [r.is_query for r in by_index]
        extras[IS_GALLERY] = [r.is_gallery for r in by_index]
    if "category" in table.columns:
        extras[CATEGORY] = [r.category for r in by_index]
    present = np.unique(dataset.labels[keep])
    remap = np.full(dataset.num_classes, -1, dtype=np.int64)
    remap[present] = np.arange(len(present))
    return ImageDataset(
        name=dataset.name,
        images=dataset.images.select(keep),
        labels=remap[dataset.labels[keep]],
        class_names=[dataset.class_names[c] for c in present],
        extras=extras,
        fingerprint=stable_hash([dataset.fingerprint, "split_file", table.sha256]),
        image_root=dataset.image_root,
    )


def _match_rows(table: SplitTable, dataset: ImageDataset) -> dict[int, tuple[int, SplitRow]]:
    """{row position in the file: (dataset row, the row)}; unknown, escaping or repeated paths
    are refused."""
    from langdml.paths import escape_outside

    index = {key: i for i, key in enumerate(image_keys(dataset))}
    if dataset.image_root is None:
        where = f"its images are table rows, named 0..{len(dataset) - 1}"
    else:
        where = f"paths are relative to {dataset.image_root}"
    seen: dict[int, int] = {}
    out = {}
    for pos, row in enumerate(table.rows):
        why = escape_outside(row.path)
        if why is not None:
            raise table.error(row.line, f"path {row.path!r} is outside the dataset root ({why})")
        key = posixpath.normpath(row.path.replace("\\", "/"))
        found = index.get(key)
        if found is None:
            raise table.error(
                row.line, f"path {row.path!r} is not an image of dataset {dataset.name} ({where})"
            )
        if found in seen:
            raise table.error(
                row.line, f"path {row.path!r} is listed twice (also line {seen[found]})"
            )
        seen[found] = row.line
        out[pos] = (found, row)
    return out


def _check_classes(
    table: SplitTable, rows: dict[int, tuple[int, SplitRow]], dataset: ImageDataset
) -> None:
    """Labels agree with the dataset; a class has one split and one category."""
    names = class_keys(dataset)
    what = "class id" if dataset.shares_names else "class name"
    split_of: dict[str, tuple[str | None, int]] = {}
    category_of: dict[str, tuple[str | None, int]] = {}
    for found, row in sorted(rows.values(), key=lambda x: x[1].line):
        expected = names[int(dataset.labels[found])]
        if row.label != expected:
            raise table.error(
                row.line,
                f"label {row.label!r} but {row.path!r} is in class {expected!r} (the "
                f"dataset's {what}); a split file cannot relabel images",
            )
        for kind, value, seen in (
            ("split", row.split, split_of),
            ("category", row.category, category_of),
        ):
            first = seen.setdefault(row.label, (value, row.line))
            if first[0] != value:
                raise table.error(
                    row.line,
                    f"class {row.label!r} has {kind} {value!r} here but {first[0]!r} "
                    f"on line {first[1]}; a class has one {kind}",
                )
    if "split" in table.columns:
        used = {s for s, _ in split_of.values()}
        missing = [part for part in ("train", "test") if part not in used]
        if missing:
            raise DataError(
                f"split file {table.file}: no {missing[0]} rows; expected train and test "
                "classes (val optional)"
            )


def _check_queries(table: SplitTable, rows: dict[int, tuple[int, SplitRow]]) -> None:
    """Every query has a gallery image of its class other than itself."""
    if not table.has_roles:
        return
    galleries: dict[str, int] = {}
    for _, row in rows.values():
        galleries[row.label] = galleries.get(row.label, 0) + row.is_gallery
    for _, row in sorted(rows.values(), key=lambda x: x[1].line):
        if row.is_query and galleries[row.label] - row.is_gallery < 1:
            raise table.error(
                row.line,
                f"query {row.path!r} (class {row.label!r}) has no gallery image of "
                "its class other than itself; mark one of its class's images is_gallery",
            )


def split_file_parts(path: str | os.PathLike) -> set[str]:
    """The parts (train / val / test) a split file's ``split`` column names; empty without one."""
    table = read_split_file(path)
    return {r.split for r in table.rows if r.split is not None}
