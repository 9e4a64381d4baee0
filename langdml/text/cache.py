"""The text-embedding cache: one safetensors file per content key, metadata as JSON in its header.

File ``<cache_dir>/<kind>-<model-slug>-<key>.safetensors`` holds tensor ``embeddings`` (float32,
(C, d) for class names, (C, k, d) for pseudo-labels) and header metadata ``langdml`` = a JSON
object (model spec, dims, prompts, class names in order, library versions, date, …). The key is
``stable_hash`` of everything that determines the numbers, so equal inputs find the same file.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langdml.errors import LangDMLError
from langdml.io import atomic_write, stable_hash, text_cache_dir

if TYPE_CHECKING:
    import torch

FORMAT = "langdml-text-embeddings"
FORMAT_VERSION = 1
_META_KEY = "langdml"


class CacheMismatchError(LangDMLError):
    """A cache file that exists but was made for other inputs (e.g. other class names)."""


@dataclass
class TextEmbeddings:
    """Class-name (``(C, d)``) or pseudo-label (``(C, k, d)``) embeddings with their provenance."""

    embeddings: torch.Tensor
    class_names: list[str]
    path: Path
    meta: dict[str, Any] = field(default_factory=dict)
    cache_hit: bool = False

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[-1])

    def __len__(self) -> int:
        return len(self.class_names)


def default_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """``cache_dir`` itself, else ``<cache_root()>/text``."""
    return Path(cache_dir) if cache_dir is not None else text_cache_dir()


def cache_key(fields: dict[str, Any]) -> str:
    return stable_hash({"format": FORMAT, "version": FORMAT_VERSION, **fields}, length=20)


def cache_path(cache_dir: Path, kind: str, model_label: str, key: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", model_label).strip("-.")[-48:] or "model"
    return cache_dir / f"{kind}-{slug}-{key}.safetensors"


def tensor_sha256(tensor: torch.Tensor) -> str:
    """SHA-256 of a CPU tensor's raw bytes: the checksum a cache entry's metadata carries (the
    JSON header is checked by parsing it against the key and class names)."""
    return hashlib.sha256(tensor.contiguous().numpy().tobytes()).hexdigest()


def save_embeddings(path: Path, embeddings: torch.Tensor, meta: dict[str, Any]) -> Path:
    """Write atomically (temp file + rename): readers see the old file or the complete new one.
    Adds ``meta["sha256"]``, the checksum of the embeddings verified on every load."""
    import torch
    from safetensors.torch import save

    tensor = embeddings.detach().to("cpu", dtype=torch.float32).contiguous()
    meta["sha256"] = tensor_sha256(tensor)
    header = {_META_KEY: json.dumps(meta, sort_keys=True, default=str)}
    # serialised in memory, written by Python: a full disk is an OSError naming the file (the
    # Rust writer of save_file raises an opaque SafetensorError)
    blob = save({"embeddings": tensor}, metadata=header)
    return atomic_write(path, lambda tmp: tmp.write_bytes(blob))


def read_embeddings(path: Path) -> tuple[torch.Tensor, dict[str, Any]]:
    """Tensor and metadata; ``ValueError`` (or ``OSError``) if the file is not a valid entry."""
    import torch
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            if "embeddings" not in f.keys():
                raise ValueError("no 'embeddings' tensor")
            tensor = f.get_tensor("embeddings")
    except SafetensorError as exc:
        raise ValueError(f"unreadable safetensors: {exc}") from None
    if _META_KEY not in header:
        raise ValueError("no langdml metadata")
    meta = json.loads(header[_META_KEY])
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError("not a langdml text-embedding file")
    names = meta.get("class_names")
    if not isinstance(names, list) or tensor.ndim not in (2, 3) or tensor.shape[0] != len(names):
        raise ValueError("embedding rows do not match the stored class names")
    if list(tensor.shape) != list(meta.get("shape", [])):
        raise ValueError(
            f"tensor shape {list(tensor.shape)} differs from metadata {meta.get('shape')}"
        )
    if tensor.dtype != torch.float32 or not torch.isfinite(tensor).all():
        raise ValueError("embeddings are not finite float32")
    # entries written before checksums existed have none: the checks above are all they get
    if "sha256" in meta and meta["sha256"] != tensor_sha256(tensor):
        raise ValueError("embeddings do not match their checksum (corrupted)")
    return tensor, meta


def try_load_cached(path: Path, key: str, class_names: Sequence[str]) -> TextEmbeddings | None:
    """The cached entry at ``path`` if it is valid for ``key`` and ``class_names``; else ``None``.

    A corrupt or foreign file (unreadable, wrong key, other class names) is never used: it is
    reported with a warning and the caller rebuilds it.
    """
    if not path.exists():
        return None
    try:
        tensor, meta = read_embeddings(path)
    except (OSError, ValueError, RuntimeError) as exc:
        warnings.warn(
            f"text-embedding cache {path} is corrupt ({exc}); rebuilding it", stacklevel=3
        )
        return None
    if meta.get("key") != key or meta.get("class_names") != list(class_names):
        warnings.warn(
            f"text-embedding cache {path} was made for other inputs (class names or settings "
            "differ); rebuilding it",
            stacklevel=3,
        )
        return None
    return TextEmbeddings(tensor, list(meta["class_names"]), path, meta, cache_hit=True)


def load_text_embeddings(
    path: str | Path, expected_class_names: Sequence[str] | None = None
) -> TextEmbeddings:
    """Load a cache file; with ``expected_class_names``, refuse one made for other class names."""
    path = Path(path)
    if not path.is_file():
        raise LangDMLError(f"text-embedding file {str(path)!r} does not exist")
    try:
        tensor, meta = read_embeddings(path)
    except (OSError, ValueError, RuntimeError) as exc:
        raise LangDMLError(f"text-embedding file {str(path)!r} is not valid: {exc}") from None
    names = list(meta["class_names"])
    if expected_class_names is not None and names != list(expected_class_names):
        expected = list(expected_class_names)
        missing = [n for n in expected if n not in set(names)]
        extra = [n for n in names if n not in set(expected)]
        detail = (
            f"missing {missing[:3]!r}, extra {extra[:3]!r}"
            if missing or extra
            else "same names in a different order"
        )
        raise CacheMismatchError(
            f"text embeddings {str(path)!r} are for {len(names)} other class names than the "
            f"{len(expected)} expected ({detail}); rerun langdml precompute for these classes"
        )
    return TextEmbeddings(tensor, names, path, meta, cache_hit=True)
