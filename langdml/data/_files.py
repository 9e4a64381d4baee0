"""Shared helpers of the on-disk dataset loaders (one module per format: cub, cars, sop,
imagefolder, hf).

- ``labels`` are ``0..C-1`` in the dataset's own class-id order, so
  :func:`~langdml.data.records.class_disjoint_split` is the DML protocol split. Classes without any
  image are dropped (the order of the rest is kept).
- images load lazily: ``ImageSource`` items are file paths opened by
  :func:`~langdml.data.images.open_rgb`. Loaders check that every file an index lists exists.
- ``fingerprint`` hashes the index content (paths relative to the dataset root, labels, class
  names), so caches key on content and survive moving the dataset folder.
- folder walking (``images_below``, the image-file rule of :mod:`langdml.data.images`) follows
  symlinked directories, but visits each real directory
  at most once (a link such as ``class_05/self -> .`` cannot repeat images or loop), and refuses a
  directory link that resolves outside the dataset root (one ``DataError`` line naming the link).
  Symlinked image *files* are read where they point.
- the ``cache_dir`` argument is accepted for the common loader signature; nothing is cached.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from langdml.data.images import IMAGE_EXTENSIONS, is_skipped_folder, open_rgb, walk_images
from langdml.data.names import name_clashes, natural_key, normalise_class_name
from langdml.data.records import ImageDataset, ImageSource
from langdml.errors import DataError
from langdml.io import stable_hash


def existing_path(arg: str | os.PathLike | None, kind: str) -> Path:
    if arg is None or not str(arg).strip():
        raise DataError(f"{kind}: no path given; expected {kind}:PATH")
    path = Path(str(arg).strip()).expanduser()
    if not path.exists():
        raise DataError(f"{kind}: path {path} does not exist")
    return path.resolve()  # image paths must not depend on the working directory later


def require_dir(path: Path, kind: str) -> Path:
    if not path.is_dir():
        raise DataError(f"{kind}: {path} is not a folder")
    return path


def find_root(path: Path, marker: str, official_dir: str, kind: str, expected: str) -> Path:
    """``path`` itself or its ``official_dir`` child, whichever holds ``marker``."""
    require_dir(path, kind)
    for root in (path, path / official_dir):
        if (root / marker).is_file():
            return root
    raise DataError(
        f"{kind}: {marker} not found in {path} (nor in {path / official_dir}); expected {expected}"
    )


def read_table(file: Path, kind: str, columns: Sequence[str], header: bool = False) -> list[list]:
    """Whitespace-separated rows; columns named ``*id`` are integers, the last may hold spaces."""
    if not file.is_file():
        raise DataError(f"{kind}: missing {file.name} in {file.parent}")
    try:
        lines = file.read_text(encoding="utf-8-sig").splitlines()  # tolerate a BOM
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{kind}: cannot read {file}: {exc}") from None
    rows = []
    expected = " ".join(f"<{c}>" for c in columns)
    header_pending = header
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if header_pending:
            header_pending = False
            if line.split() != list(columns):
                raise DataError(
                    f"{kind}: {file.name} line {lineno}: expected the header "
                    f"{' '.join(columns)!r}, got {line.strip()!r}"
                )
            continue
        fields = line.split(maxsplit=len(columns) - 1)
        try:
            if len(fields) != len(columns):
                raise ValueError
            row = [
                int(f) if c.endswith("id") else f.strip()
                for f, c in zip(fields, columns, strict=True)
            ]
        except ValueError:
            raise DataError(
                f"{kind}: {file.name} line {lineno}: expected {expected!r}, got {line.strip()!r}"
            ) from None
        rows.append(row)
    if not rows:
        raise DataError(f"{kind}: {file} has no entries")
    return rows


def id_map(rows: Iterable[list], file: Path, kind: str) -> dict[int, Any]:
    out: dict[int, Any] = {}
    for row in rows:
        if row[0] in out:
            raise DataError(f"{kind}: {file.name} lists id {row[0]} twice")
        out[row[0]] = row[1]
    return out


def check_files(root: Path, rel_paths: Sequence[str], kind: str, index: str) -> list[str]:
    # Plain strings: pathlib objects cost ~10 µs each, noticeable over SOP's 120k images.
    base = str(root)
    check_contained(root, rel_paths, kind, index)
    paths = [os.path.join(base, p) for p in rel_paths]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise DataError(
            f"{kind}: {len(missing)} of {len(paths)} images listed in {index} are missing, "
            f"first: {missing[0]}"
        )
    return paths


def check_contained(root: Path, rel_paths: Sequence[str], kind: str, index: str) -> None:
    """Every path an index file lists stays inside the dataset root: no absolute path, no
    ``..``, no folder that is a link leading out (a linked image *file* is read where it points,
    as in folder datasets). One DataError line naming the entry and the index file."""
    from langdml.paths import escape_outside

    for rel in rel_paths:
        why = escape_outside(rel)
        if why is not None:
            raise DataError(
                f"{kind}: {index} lists {rel!r}, which is refused ({why}); expected paths "
                f"inside the dataset root {root}"
            )
    real_root = os.path.realpath(root).rstrip(os.sep) + os.sep
    for folder in sorted({os.path.dirname(rel) for rel in rel_paths} - {""}):
        real = os.path.realpath(os.path.join(root, folder))
        if not (real + os.sep).startswith(real_root):
            raise DataError(
                f"{kind}: {index} lists images in {folder!r}, a link to {real}, outside the "
                f"dataset root {root}; copy the images into the dataset or remove the link"
            )


def compact(raw_ids: Sequence[Any], class_order: Sequence[Any]) -> tuple[np.ndarray, list[int]]:
    """Labels 0..K-1 over the classes of ``class_order`` that occur in ``raw_ids``, order kept.

    Returns ``(labels, kept)`` with ``kept[k]`` the position in ``class_order`` of label ``k``.
    """
    position = {cid: i for i, cid in enumerate(class_order)}
    raw_pos = np.fromiter((position[c] for c in raw_ids), dtype=np.int64, count=len(raw_ids))
    present = np.zeros(len(class_order), dtype=bool)
    present[raw_pos] = True
    kept = np.flatnonzero(present)
    remap = np.full(len(class_order), -1, dtype=np.int64)
    remap[kept] = np.arange(len(kept))
    return remap[raw_pos], kept.tolist()


def file_dataset(
    name: str,
    kind: str,
    paths: Sequence[str | Path],
    rel_paths: Sequence[str],
    labels: np.ndarray,
    class_names: list[str],
    extras: dict[str, list] | None = None,
    root: str | os.PathLike | None = None,
) -> ImageDataset:
    """The record of a dataset whose images are files: ``paths[i]`` is ``root / rel_paths[i]``."""
    fingerprint = stable_hash(
        [kind, list(rel_paths), np.asarray(labels).tolist(), class_names, extras or {}]
    )
    return ImageDataset(
        name=name,
        images=ImageSource([str(p) for p in paths], open_rgb),
        labels=labels,
        class_names=class_names,
        extras=extras or {},
        fingerprint=fingerprint,
        image_root=None if root is None else str(root),
    )


def class_dirs(root: Path) -> list[Path]:
    try:
        found = [
            Path(e.path) for e in os.scandir(root) if e.is_dir() and not is_skipped_folder(e.name)
        ]
    except OSError as exc:
        raise DataError(f"cannot list folder {root}: {exc}") from None
    return sorted(found)  # scandir order is arbitrary; image order must be reproducible


def images_below(folder: Path, root: Path, seen: set[str] | None = None) -> list[str]:
    """Image files below ``folder`` (the rule of :mod:`langdml.data.images`) as paths relative to
    ``root`` (posix), in natural order.

    Symlinked directories are followed once per real directory (``seen`` holds the real paths
    walked so far; pass one set for a whole dataset); a link leaving ``root`` is a DataError."""
    real_root = os.path.realpath(root)
    seen = set() if seen is None else seen

    def inside(path: str) -> bool:
        real = os.path.realpath(path)
        return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)

    if not inside(folder):
        raise DataError(
            f"{folder} is a link to {os.path.realpath(folder)}, outside the dataset root "
            f"{root}; copy the images into the dataset or point at the folder that holds both"
        )

    def on_dir(dirpath: str, dirnames: list[str]) -> bool:
        real = os.path.realpath(dirpath)
        if real in seen:  # a link back to a directory walked already
            dirnames[:] = []
            return False
        seen.add(real)
        keep = []
        for d in dirnames:
            sub = os.path.join(dirpath, d)
            if os.path.islink(sub) and not inside(sub):
                raise DataError(
                    f"{sub} is a link to {os.path.realpath(sub)}, outside the dataset root "
                    f"{root}; copy the images into the dataset or remove the link"
                )
            if os.path.realpath(sub) not in seen:
                keep.append(d)
        dirnames[:] = keep
        return True

    found = [os.path.relpath(f, root).replace(os.sep, "/") for f in walk_images(folder, on_dir)]
    return sorted(found, key=natural_key)


def warn_name_clashes(kind: str, root: Path, by_name: dict[str, list[Path]]) -> None:
    """One warning line when class folders become one class only after Unicode/whitespace
    normalisation (they are merged), or give classes that differ only by case (kept apart)."""
    raw = {
        os.path.relpath(f, root).replace(os.sep, "/"): name
        for name, group in by_name.items()
        for f in group
    }
    # Folders of one raw name under train/ and test/ are one class on purpose: compare base names.
    bases = {p.rsplit("/", 1)[-1]: name for p, name in raw.items()}
    merged, by_case = name_clashes(bases)
    if not merged and not by_case:
        return
    folders = {name: [p for p, n in raw.items() if n == name] for name in by_name}
    parts = []
    if merged:
        shown = "; ".join(" + ".join(repr(r) for r in g) for g in merged[:3])
        parts.append(
            f"{len(merged)} class(es) merged from folders whose names differ only by Unicode "
            f"normalisation or whitespace ({shown})"
        )
    if by_case:
        shown = "; ".join(
            " vs ".join(repr(f) for n in g for f in folders[n][:1]) for g in by_case[:3]
        )
        parts.append(
            f"{len(by_case)} group(s) of classes differ only by case, kept apart ({shown})"
        )
    warnings.warn(f"{kind}: {root}: {'; '.join(parts)}", stacklevel=3)


def folder_dataset(
    name: str, kind: str, root: Path, folders: Sequence[Path], to_name: Any, hint: str
) -> ImageDataset:
    """Images grouped by class folder; folders sharing a name (train/ and test/) are one class."""
    by_name: dict[str, list[Path]] = {}
    for folder in folders:
        by_name.setdefault(normalise_class_name(to_name(folder.name)), []).append(folder)
    warn_name_clashes(kind, root, by_name)
    rel: list[str] = []
    labels: list[int] = []
    class_names: list[str] = []
    seen: set[str] = set()  # real directories walked: each at most once in the whole dataset
    for cname in sorted(by_name, key=natural_key):
        files = [f for folder in by_name[cname] for f in images_below(folder, root, seen)]
        if not files:
            continue
        labels += [len(class_names)] * len(files)
        class_names.append(cname)
        rel += files
    if not rel:
        raise DataError(
            f"{kind}: no images ({'/'.join(e[1:] for e in IMAGE_EXTENSIONS)}) in the class folders "
            f"under {root}; {hint}"
        )
    paths = [os.path.join(root, r) for r in rel]
    return file_dataset(name, kind, paths, rel, np.asarray(labels), class_names, root=root)
