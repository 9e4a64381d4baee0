"""An index folder's integrity: its manifest, and replacing a folder as a whole.

``manifest.json`` ties ``gallery.safetensors`` and ``index.faiss`` to each other and to the run:
the row count, the dimension, the metric, the search kind and its parameters, the run's
fingerprint, and the size and SHA-256 of both files. It is written last, atomically, in a
temporary sibling folder that then takes the index folder's place, so a reader sees the old
index or the new one, never a mix. :func:`verify_files` checks the files against it before they
are parsed; :func:`verify_loaded` checks what was parsed. Any disagreement is one
``LangDMLError`` line naming the file.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from langdml.errors import LangDMLError
from langdml.io import atomic_write_json, file_sha256

MANIFEST = "manifest.json"
FORMAT = "langdml-index/1"
REBUILD = "rebuild it with: langdml index RUN_DIR --images DIR -o INDEX_DIR"


def manifest_record(
    files: dict[str, Path],
    rows: int,
    dim: int,
    metric: str,
    search: tuple[str, dict],
    fingerprint: dict,
) -> dict[str, Any]:
    """The manifest of an index whose files are ``files`` (name → path)."""
    kind, params = search
    return {
        "format": FORMAT,
        "rows": int(rows),
        "dim": int(dim),
        "metric": metric,
        "search": {"kind": kind, "params": dict(params)},
        "fingerprint": fingerprint,
        "files": {
            name: {"size": path.stat().st_size, "sha256": file_sha256(path)}
            for name, path in files.items()
        },
    }


def check_target(folder: str | os.PathLike, names: tuple[str, ...]) -> Path:
    """``folder`` may become an index folder: new, empty, or an index folder (replaced whole);
    a file, or a folder holding anything else, is one line (checked again before the swap)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise LangDMLError(f"index folder {str(folder)!r} is a file; expected a folder path")
    if folder.is_dir():
        others = sorted(p.name for p in folder.iterdir() if p.name not in (*names, MANIFEST))
        if others:
            raise LangDMLError(
                f"{str(folder)!r} exists and is not an index folder (it holds {others[0]!r}); "
                "choose a new or empty folder for -o"
            )
    return folder


def write_folder(folder: Path, names: tuple[str, ...], write: Callable[[Path], dict]) -> Path:
    """Build the index folder in a temporary sibling (``write(tmp)`` writes ``names`` and returns
    the manifest), then swap it in. An existing ``folder`` must be an index folder (or empty):
    anything else there is refused, never deleted."""
    folder = check_target(folder, names)
    parent = folder.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=parent))
    old = None
    try:
        atomic_write_json(tmp / MANIFEST, write(tmp))  # last: the folder is complete now
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; an index is ordinary data
        if folder.is_dir():
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".old", dir=parent))
            os.replace(folder, old / folder.name)
        os.replace(tmp, folder)
    except BaseException:
        if old is not None and not folder.exists():  # put the previous index back
            with contextlib.suppress(OSError):
                os.replace(old / folder.name, folder)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return folder


def read_manifest(folder: Path) -> dict[str, Any]:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise LangDMLError(
            f"{str(path)!r} is missing: {str(folder)!r} is not a complete index folder (built "
            f"by an older langdml, or interrupted); {REBUILD}"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if manifest.get("format") != FORMAT:
            raise ValueError(f"format {manifest.get('format')!r}, expected {FORMAT!r}")
        for key in ("rows", "dim", "metric", "search", "fingerprint", "files"):
            manifest[key]  # noqa: B018  (present, or KeyError below)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise LangDMLError(f"{str(path)!r} is not an index manifest ({exc}); {REBUILD}") from None
    return manifest


def verify_files(folder: Path, manifest: dict[str, Any], names: tuple[str, ...]) -> None:
    """Each of ``names`` exists with the size and SHA-256 the manifest records."""
    where = Path(folder) / MANIFEST
    for name in names:
        path = Path(folder) / name
        recorded = manifest["files"].get(name) if isinstance(manifest["files"], dict) else None
        if not isinstance(recorded, dict):
            raise LangDMLError(f"{str(where)!r} records no {name}; {REBUILD}")
        if not path.is_file():
            raise LangDMLError(f"{str(path)!r} is missing from the index folder; {REBUILD}")
        if path.stat().st_size != recorded.get("size") or file_sha256(path) != recorded.get(
            "sha256"
        ):
            raise LangDMLError(
                f"{str(path)!r} does not match the index's manifest {str(where)!r} (replaced, "
                f"truncated or from another index); {REBUILD}"
            )


def verify_loaded(
    folder: Path, manifest: dict[str, Any], table: Any, index: Any, search: tuple[str, dict]
) -> None:
    """The parsed gallery and faiss index agree with the manifest and with each other."""
    gallery, faiss_file = Path(folder) / "gallery.safetensors", Path(folder) / "index.faiss"
    n, d = int(manifest["rows"]), int(manifest["dim"])
    emb = table.embeddings
    sizes = {"embeddings": len(emb), "labels": len(table.labels), "paths": len(table.paths)}
    for what, size in sizes.items():
        if size != n:
            raise LangDMLError(f"{str(gallery)!r} holds {size} {what}; the manifest says {n}")
    if emb.ndim != 2 or emb.shape[1] != d:
        raise LangDMLError(f"{str(gallery)!r} holds {tuple(emb.shape)} embeddings; expected d={d}")
    if int(index.ntotal) != n or int(index.d) != d:
        raise LangDMLError(
            f"{str(faiss_file)!r} holds {index.ntotal} rows of dimension {index.d}; the gallery "
            f"and the manifest hold {n} of dimension {d}"
        )
    recorded = manifest["search"]
    if [search[0], search[1]] != [recorded.get("kind"), recorded.get("params")]:
        raise LangDMLError(
            f"{str(faiss_file)!r} is a {search[0]} index {search[1]}; the manifest records "
            f"{recorded.get('kind')} {recorded.get('params')}"
        )
    if table.fingerprint != manifest["fingerprint"] or table.metric != manifest["metric"]:
        raise LangDMLError(
            f"{str(gallery)!r} was embedded by another run or metric than the index's manifest "
            f"records; {REBUILD}"
        )
