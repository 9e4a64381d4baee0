"""A rendered benchmark on disk (emoji, shapes): an HF dataset saved to a folder, with a metadata
file recording the SHA-256 and size of every data file, so a damaged cache is found and rebuilt
instead of being read silently."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from langdml._extras import require
from langdml.io import atomic_write_json, file_sha256
from langdml.paths import escape_outside

META = "langdml_meta.json"


def manifest(folder: Path) -> dict[str, dict]:
    """name -> {size, sha256} of every file of a built dataset but its metadata."""
    return {
        p.name: {"size": p.stat().st_size, "sha256": file_sha256(p)}
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != META
    }


def temporary_dir(out_dir: Path) -> Path:
    """A sibling folder a build writes into before :func:`install` moves it into place."""
    return out_dir.with_name(out_dir.name + f".tmp-{os.getpid()}-{int(time.time() * 1000)}")


def save(ds, out_dir: Path, meta: dict) -> Path:
    """Write the HF dataset ``ds`` and ``meta`` (plus the file manifest) to ``out_dir``
    atomically: readers see the old build or the new one, never half of one."""
    datasets = require("datasets", "data", "saving a built dataset")
    tmp = temporary_dir(out_dir)
    datasets.disable_progress_bars()
    ds.save_to_disk(str(tmp))
    meta = {**meta, "files": manifest(tmp)}
    atomic_write_json(tmp / META, meta)
    install(tmp, out_dir)
    return out_dir


def install(tmp: Path, out_dir: Path) -> None:
    """Move a finished build into place; a concurrent build that got there first (and verifies)
    wins, and this one is dropped (both rendered the same rows)."""
    old = out_dir.with_name(out_dir.name + ".old-" + tmp.name.split(".tmp-")[-1])
    try:
        out_dir.rename(old)  # a rename, not rmtree: readers never see a half-deleted folder
    except FileNotFoundError:
        pass
    try:
        tmp.rename(out_dir)
    except OSError:
        if verify_built(out_dir) is not None:
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)


def verify_built(out_dir: Path) -> str | None:
    """None when the build at ``out_dir`` matches its recorded checksums, else one phrase naming
    the damaged file. A build from before checksums existed is read in full once (a truncated
    Arrow file fails) and its checksums are recorded."""
    meta_path = out_dir / META
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        return f"{meta_path} is unreadable ({str(exc).splitlines()[0]})"
    files = meta.get("files")
    if files is None:
        return _adopt_legacy(out_dir, meta)
    try:
        recorded = sorted((str(k), int(v["size"]), str(v["sha256"])) for k, v in files.items())
    except (AttributeError, KeyError, TypeError, ValueError):
        return f"{meta_path} holds a malformed checksum list"
    for name, size, digest in recorded:
        if escape_outside(name) is not None:  # the list names files of this folder only
            return f"{meta_path} lists {name!r}, outside {out_dir}"
        path = out_dir / name
        if not path.is_file():
            return f"{path} is missing"
        if path.stat().st_size != size or file_sha256(path) != digest:
            return f"{path} does not match its checksum (truncated or corrupted)"
    return None


def _adopt_legacy(out_dir: Path, meta: dict) -> str | None:
    datasets = require("datasets", "data", f"dataset {out_dir.name!r}")
    try:
        ds = datasets.load_from_disk(str(out_dir))
        ds.data.table.validate(full=True)
        len(ds["label"])
    except Exception as exc:  # pyarrow and datasets raise many types for a damaged file
        return f"{out_dir} is unreadable ({type(exc).__name__}: {str(exc).splitlines()[0]})"
    meta["files"] = manifest(out_dir)
    atomic_write_json(out_dir / META, meta)
    return None
