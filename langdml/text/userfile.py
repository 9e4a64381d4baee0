"""User-supplied class embeddings: ``text_model: file:PATH``.

For embeddings computed elsewhere (CLIP, BERT, an LLM, …). Two formats:

- ``PATH.safetensors``: a tensor ``embeddings`` of shape (C, d) (any float dtype) and the C names as
  a JSON list under the metadata key ``names``
  (``save_file({"embeddings": t}, path, metadata={"names": json.dumps(names)})``). A file written
  by ``langdml precompute`` (names in its ``langdml`` metadata) works as well.
- ``PATH.npy``: a (C, d) float array (``numpy.save``; no pickles) and its names in a sibling file
  with the same stem: ``NAME.names.txt`` (one name per line, blank lines ignored) or
  ``NAME.names.json`` (a JSON list), e.g. ``emb.npy`` + ``emb.names.txt``.

Row i belongs to name i. Names are matched to the requested class names after the same cleaning
the class names get (default: drop a leading ``NNN.``, underscores → spaces, collapse whitespace),
then compared in Unicode NFC, ignoring case and repeated whitespace; the file may hold more names
than requested. Rows are L2-normalised like every other text model's output. Prompts do not
apply. Nothing here loads a model library except safetensors.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from langdml.errors import ModelError
from langdml.io import file_sha256

if TYPE_CHECKING:
    import torch

SUFFIXES = (".safetensors", ".npy")
NAMES_KEY = "names"
_SHOW_MISSING = 10


@dataclass
class EmbeddingTable:
    """A ``file:`` embedding file: ``embeddings`` (C, d) float32 unit rows and their ``names``."""

    embeddings: torch.Tensor
    names: list[str]
    path: Path


def names_file(path: Path) -> Path:
    """The names file of an ``.npy`` embedding file: ``<stem>.names.txt`` or ``.names.json``."""
    candidates = [path.with_name(path.stem + ext) for ext in (".names.txt", ".names.json")]
    found = [p for p in candidates if p.is_file()]
    if not found:
        raise ModelError(
            f"embedding file {str(path)!r} needs its class names in {candidates[0].name} (one per "
            f"line) or {candidates[1].name} (a JSON list) next to it"
        )
    if len(found) > 1:
        raise ModelError(
            f"embedding file {str(path)!r} has both {found[0].name} and {found[1].name}; keep one"
        )
    return found[0]


def _check_suffix(path: Path) -> None:
    if path.suffix.lower() not in SUFFIXES:
        raise ModelError(
            f"embedding file {str(path)!r}: expected a .safetensors file (tensor 'embeddings' + "
            "metadata 'names') or a .npy file with a NAME.names.txt / NAME.names.json beside it"
        )


def source_files(path: str | Path) -> list[Path]:
    """The files that define the table (the embeddings, plus the names file for ``.npy``)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ModelError(f"embedding file {str(path)!r} does not exist")
    _check_suffix(p)
    return [p, names_file(p)] if p.suffix.lower() == ".npy" else [p]


def file_identity(path: str | Path) -> dict:
    """Cache-key identity: the resolved paths and content hashes (re-saved file = new key)."""
    files = source_files(path)
    ident = {"kind": "file", "path": str(files[0].resolve()), "sha256": file_sha256(files[0])}
    if len(files) > 1:
        ident.update(names_file=files[1].name, names_sha256=file_sha256(files[1]))
    return ident


def _read_names_file(path: Path) -> list:
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            return json.loads(text)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelError(f"cannot read names file {str(path)!r}: {exc}") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def _read_safetensors(path: Path) -> tuple[torch.Tensor, object]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if "embeddings" not in f.keys():
                raise ModelError(
                    f"embedding file {str(path)!r} has no tensor 'embeddings' "
                    f"(has {list(f.keys())})"
                )
            tensor = f.get_tensor("embeddings")
    except SafetensorError as exc:
        raise ModelError(f"embedding file {str(path)!r} is not valid safetensors: {exc}") from None
    try:
        if NAMES_KEY in meta:
            return tensor, json.loads(meta[NAMES_KEY])
        if "langdml" in meta:  # a `langdml precompute` cache file
            return tensor, json.loads(meta["langdml"]).get("class_names")
    except ValueError as exc:
        raise ModelError(f"embedding file {str(path)!r}: metadata is not JSON: {exc}") from None
    raise ModelError(
        f"embedding file {str(path)!r} has no '{NAMES_KEY}' metadata: store the class names as "
        f"metadata={{'{NAMES_KEY}': json.dumps(names)}}"
    )


def _read_npy(path: Path) -> tuple[torch.Tensor, object]:
    import numpy as np
    import torch

    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read embedding file {str(path)!r}: {exc}") from None
    if not np.issubdtype(array.dtype, np.floating):
        raise ModelError(f"embedding file {str(path)!r} holds {array.dtype}, expected floats")
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)), _read_names_file(
        names_file(path)
    )


def load_table(path: str | Path) -> EmbeddingTable:
    """Read and validate an embedding file (see the module docstring for the formats)."""
    import torch
    import torch.nn.functional as F

    p = source_files(path)[0]
    tensor, names = _read_safetensors(p) if p.suffix.lower() == ".safetensors" else _read_npy(p)
    if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
        raise ModelError(
            f"embedding file {str(p)!r}: the names must be a list of non-empty strings"
        )
    if tensor.ndim != 2 or tensor.shape[0] != len(names) or tensor.shape[1] < 1:
        raise ModelError(
            f"embedding file {str(p)!r}: embeddings of shape {tuple(tensor.shape)} do not match "
            f"its {len(names)} names; expected ({len(names)}, d)"
        )
    if not tensor.is_floating_point():
        raise ModelError(f"embedding file {str(p)!r} holds {tensor.dtype}, expected floats")
    tensor = tensor.float()
    if not torch.isfinite(tensor).all():
        raise ModelError(f"embedding file {str(p)!r} holds non-finite values")
    zero = [names[i] for i in torch.nonzero(tensor.norm(dim=1) == 0).flatten().tolist()]
    if zero:
        raise ModelError(f"embedding file {str(p)!r} has all-zero rows for {zero[:5]!r}")
    return EmbeddingTable(F.normalize(tensor, dim=1), list(names), p)


def _key(text: str) -> str:
    from langdml.data.names import match_key

    return match_key(text)


def lookup(
    table: EmbeddingTable,
    texts: Sequence[str],
    cleaner: Callable[[str], str],
    what: str = "class name",
) -> torch.Tensor:
    """Rows of ``table`` for the (already cleaned) ``texts``, (len(texts), d).

    The table's names are cleaned with ``cleaner`` and both sides compared by
    :func:`langdml.data.names.match_key` (Unicode NFC, whitespace collapsed, case folded). Names
    missing from the file are one error listing them and their count.
    """
    import torch

    keys = [_key(cleaner(n)) for n in table.names]
    dup = [k for k, c in Counter(keys).items() if c > 1]
    if dup:
        raise ModelError(
            f"embedding file {str(table.path)!r}: {len(dup)} names are the same after cleaning "
            f"and ignoring case: {dup[:_SHOW_MISSING]!r}"
        )
    row = {k: i for i, k in enumerate(keys)}
    wanted = [_key(t) for t in texts]
    missing = list(dict.fromkeys(t for t, k in zip(texts, wanted) if k not in row))
    if missing:
        shown = ", ".join(repr(m) for m in missing[:_SHOW_MISSING])
        more = f", … ({len(missing) - _SHOW_MISSING} more)" if len(missing) > _SHOW_MISSING else ""
        raise ModelError(
            f"embedding file {str(table.path)!r} has no row for {len(missing)} of the "
            f"{len(set(wanted))} {what}s: {shown}{more} (names are matched after cleaning, "
            f"ignoring case; the file has {len(table.names)} names)"
        )
    return table.embeddings[torch.tensor([row[k] for k in wanted], dtype=torch.long)]
