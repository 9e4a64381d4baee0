"""Atomic file writes, content hashing and the cache root shared by all stages."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

_PACKAGE_DIR = Path(__file__).resolve().parent


def source_checkout() -> Path | None:
    """The repository root when langdml is imported from a source checkout (a pyproject.toml
    naming langdml beside the package folder, as in an editable install), else None."""
    root = _PACKAGE_DIR.parent
    try:
        text = (root / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:
        return None
    return root if re.search(r'^name\s*=\s*"langdml"', text, re.MULTILINE) else None


def user_cache_dir() -> Path:
    """The platform's per-user cache folder for langdml."""
    home = Path.home()
    if sys.platform == "win32":
        local = os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local"
        return Path(local) / "langdml" / "Cache"
    if sys.platform == "darwin":
        return home / "Library" / "Caches" / "langdml"
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(xdg) if os.path.isabs(xdg) else home / ".cache") / "langdml"


def cache_root(override: str | os.PathLike | None = None) -> Path:
    """The cache directory: explicit argument, else $LANGDML_CACHE, else the checkout's ./cache
    when langdml runs from a source checkout (relative when the working directory is the checkout
    root, as before), else the platform cache dir (``$XDG_CACHE_HOME/langdml``, by default
    ``~/.cache/langdml``), so an installed langdml never writes a cache into the working dir."""
    if override is not None:
        return Path(override)
    env = os.environ.get("LANGDML_CACHE")
    if env:
        return Path(env)
    checkout = source_checkout()
    if checkout is not None:
        try:
            here = Path.cwd().resolve()
        except OSError:  # the working directory was removed
            here = None
        return Path("cache") if here == checkout else checkout / "cache"
    return user_cache_dir()


def text_cache_dir(root: str | os.PathLike | None = None) -> Path:
    """Where text embeddings live under a cache root: ``<root>/text`` (derived here only)."""
    return cache_root(root) / "text"


def atomic_write(path: str | os.PathLike, writer: Callable[[Path], Any]) -> Path:
    """Call ``writer(tmp_path)`` then rename onto ``path``, so readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:  # read-only or denied: name the target, not the temporary name
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        writer(tmp_path)
        os.replace(tmp_path, path)
    except OSError as exc:
        # a failed write() (e.g. a full disk) names no file; one of the temporary file names it
        # by a name the user never chose
        if exc.filename is None or str(exc.filename) == tmp:
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
    return path


def check_writable(path: str | os.PathLike, what: str = "output", folder: bool = False) -> Path:
    """Check, before the work that fills it, that ``path`` can be created or replaced: a file, or
    with ``folder`` a folder written as a whole beside itself (an index folder). A folder where a
    file is expected (or a file where a folder is), a file where a parent folder is needed, or a
    place that cannot be written (read-only, denied) is one LangDMLError line naming ``what`` and
    ``path`` (never the probe's name); leaves nothing behind."""
    from langdml.errors import LangDMLError, describe_os_error

    path = Path(path).expanduser()
    if path.is_dir() and not folder:
        raise LangDMLError(f"{what} {str(path)!r} is a directory; expected a file path")
    if folder and path.exists() and not path.is_dir():
        raise LangDMLError(f"{what} {str(path)!r} is a file; expected a folder path")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise LangDMLError(
            f"{what} {str(path)!r}: {str(parent)!r} is a file where a directory is needed"
        )
    try:  # a probe file: os.access misses read-only mounts on some file systems
        fd, probe = tempfile.mkstemp(prefix=".langdml-write-check.", dir=parent)
    except OSError as exc:
        named = OSError(exc.errno, exc.strerror or str(exc), str(path))
        raise LangDMLError(f"cannot write {what}: {describe_os_error(named)}") from None
    os.close(fd)
    os.unlink(probe)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, checksum: bool = False) -> Path:
    """Write ``obj`` as JSON atomically; with ``checksum``, with a ``.sha256`` sidecar too."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"
    if checksum:
        return atomic_write_checked(path, text.encode("utf-8"))
    return atomic_write_text(path, text)


CHECKSUM_SUFFIX = ".sha256"


def checksum_path(path: str | os.PathLike) -> Path:
    """The sidecar holding ``path``'s SHA-256 (``sha256sum -c`` reads it)."""
    path = Path(path)
    return path.with_name(path.name + CHECKSUM_SUFFIX)


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> Path:
    """``torch.save`` atomically with a ``.sha256`` sidecar. The sidecar is written first, from
    the serialised bytes, so a kill at any point leaves either the old pair, or a sidecar whose file
    is missing or old (which :func:`langdml.weights.load_weights_file` reports as damaged): never
    an unverifiable new file."""
    import io as _io

    import torch

    buf = _io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_checked(path, buf.getvalue())


def atomic_write_checked(path: str | os.PathLike, blob: bytes) -> Path:
    """Write ``blob`` atomically after its ``.sha256`` sidecar (see :func:`atomic_torch_save`)."""
    digest = hashlib.sha256(blob).hexdigest()
    atomic_write_text(checksum_path(path), f"{digest}  {Path(path).name}\n")
    return atomic_write(path, lambda p: p.write_bytes(blob))


def verify_checksum(path: str | os.PathLike) -> str | None:
    """Why ``path`` fails its ``.sha256`` sidecar, or None when it matches or has no sidecar
    (files written before checksums existed are checked by parsing alone)."""
    sidecar = checksum_path(path)
    try:
        recorded = sidecar.read_text(encoding="utf-8").split()[0]
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, IndexError):
        return f"its checksum file {sidecar} is unreadable"
    if file_sha256(path) != recorded:
        return f"it does not match its checksum in {sidecar} (truncated or corrupted)"
    return None


def stable_hash(obj: Any, length: int = 16) -> str:
    """Hex digest of a JSON-serialisable object, independent of dict key order."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks (weights, asset parts, user files)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
