"""Embedding files and gallery indexes.

An embedding file (``langdml embed -o OUT.safetensors``) holds the tensors ``embeddings``
(N, d) float32 and ``labels`` (N,) int64 (-1: no label), and in its safetensors metadata (all
strings) ``paths`` (JSON list, one per row), ``class_names`` (JSON list, indexed by label),
``fingerprint`` (JSON: the run's config and checkpoint SHA-256 prefixes), ``metric`` and
``source``.

An index folder (``langdml index -o INDEX_DIR``) is ``gallery.safetensors`` (the same layout) plus
``index.faiss``: an exact faiss index (inner product on unit vectors for cosine runs, L2 for
euclidean runs), or with ``--search hnsw`` / ``ivf`` an approximate one built by
``langdml.eval.ann.ApproxKNN`` (the evaluation's own construction, same parameters and defaults).
The kind and the search-time parameter (``efSearch`` / ``nprobe``) are stored in the faiss index
itself and read back from it. ``manifest.json`` ties the two files together
(``langdml.inference.index_folder``): loading refuses, in one line, a folder whose files do not
match it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from langdml.errors import LangDMLError

GALLERY = "gallery.safetensors"
FAISS = "index.faiss"


def save_embeddings(path: str | Path, table: GalleryTable) -> Path:
    from safetensors.torch import save

    from langdml.io import atomic_write

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        "embeddings": table.embeddings.float().contiguous(),
        "labels": torch.as_tensor(table.labels, dtype=torch.long).contiguous(),
    }
    meta = {
        "paths": json.dumps(table.paths),
        "class_names": json.dumps(table.class_names),
        "fingerprint": json.dumps(table.fingerprint),
        "metric": table.metric,
        "source": table.source,
    }
    blob = save(tensors, metadata=meta)  # a full disk is then an OSError naming the file
    return atomic_write(path, lambda tmp: tmp.write_bytes(blob))


def load_embeddings(path: str | Path) -> GalleryTable:
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise LangDMLError(f"embedding file {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            emb, labels = f.get_tensor("embeddings"), f.get_tensor("labels")
        table = GalleryTable(
            emb,
            labels.numpy(),
            json.loads(meta.get("paths", "[]")),
            json.loads(meta.get("class_names", "[]")),
            json.loads(meta.get("fingerprint", "{}")),
            meta.get("metric", "cosine"),
            meta.get("source", ""),
        )
    except Exception as exc:  # a foreign or truncated file
        why = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise LangDMLError(f"{str(path)!r} is not a langdml embedding file ({why})") from None
    if len(table.paths) != len(emb) or len(table.labels) != len(emb):
        raise LangDMLError(
            f"{str(path)!r} is damaged: {len(emb)} embeddings, {len(table.labels)} labels, "
            f"{len(table.paths)} paths"
        )
    return table


@dataclass
class GalleryTable:
    embeddings: torch.Tensor  # (N, d)
    labels: np.ndarray  # (N,), -1 = unlabelled
    paths: list[str]
    class_names: list[str] = field(default_factory=list)
    fingerprint: dict[str, Any] = field(default_factory=dict)
    metric: str = "cosine"
    source: str = ""

    def class_name(self, row: int) -> str | None:
        label = int(self.labels[row])
        return self.class_names[label] if 0 <= label < len(self.class_names) else None


def _faiss():
    import faiss

    return faiss


AUTO_K = 10  # search="auto" tunes the index for this many neighbours per query


class GalleryIndex:
    """A faiss index over a gallery table: exact (default), or ``search="hnsw"`` / ``"ivf"``
    with ``search_params`` as in ``retrieval_metrics`` (``langdml.eval.ann``)."""

    def __init__(
        self,
        table: GalleryTable,
        index: Any | None = None,
        search: str = "exact",
        search_params: dict | None = None,
        seed: int = 0,
    ) -> None:
        from langdml.eval.ann import check_search

        self.table = table
        self.folder: Path | None = None  # the index folder it was loaded from
        self.choice: Any = None  # search="auto": the eval.autotune.AutoChoice it made
        self.manifest: dict | None = None  # the manifest it was loaded with
        spec = check_search(search, search_params)
        if index is None:
            index = self._build_approx(table, spec, seed) if spec.approximate else None
        self.index = index if index is not None else self._build(table)

    def _build_approx(self, table: GalleryTable, spec: Any, seed: int):
        from langdml.eval.ann import ApproxKNN, Rows

        if len(table.embeddings) == 0:
            raise LangDMLError(f"an approximate ({spec.kind}) index needs a non-empty gallery")
        rows = Rows(table.embeddings, "embeddings", normalize=table.metric == "cosine")
        if spec.kind != "auto":
            return ApproxKNN(rows, table.metric, spec, seed).cpu_index
        from langdml.eval.autotune import auto_search

        # the gallery searched by a seeded sample of its own rows (each without itself), for
        # the AUTO_K nearest neighbours a search usually asks for
        self.choice = auto_search(
            rows,
            None,
            min(AUTO_K, max(1, rows.n - 1)),
            table.metric,
            loo=True,
            target_recall=float(spec.params["target_recall"]),
            recall_queries=spec.recall_queries,
            seed=seed,
        )
        return None if self.choice.engine is None else self.choice.engine.cpu_index

    @property
    def search_kind(self) -> tuple[str, dict[str, int]]:
        """("exact" | "hnsw" | "ivf", the index's parameters), read from the faiss index."""
        faiss = _faiss()
        if isinstance(self.index, faiss.IndexHNSW):
            h = self.index.hnsw
            return "hnsw", {
                "M": int(h.nb_neighbors(1)),
                "efConstruction": int(h.efConstruction),
                "efSearch": int(h.efSearch),
            }
        if isinstance(self.index, faiss.IndexIVF):
            return "ivf", {"nlist": int(self.index.nlist), "nprobe": int(self.index.nprobe)}
        return "exact", {}

    def set_search_params(self, params: dict) -> None:
        """Search-time parameters of an approximate index: ``efSearch`` (hnsw), ``nprobe``
        (ivf); anything else is one clear error line."""
        from langdml.eval.ann import check_search

        kind, current = self.search_kind
        allowed = {"hnsw": ("efSearch",), "ivf": ("nprobe",)}.get(kind, ())
        for key in params:
            if key not in allowed:
                raise LangDMLError(
                    f"search parameter {key!r} cannot change on a built {kind} index; expected "
                    f"{' or '.join(allowed) if allowed else 'none (an exact index has none)'}"
                )
        check_search(kind, params)  # the values: integers >= 1, one line otherwise
        if "nprobe" in params and params["nprobe"] > current["nlist"]:
            raise LangDMLError(
                f"nprobe={params['nprobe']} exceeds the index's nlist={current['nlist']}; "
                "expected 1 <= nprobe <= nlist"
            )
        if "efSearch" in params:
            self.index.hnsw.efSearch = params["efSearch"]
        if "nprobe" in params:
            self.index.nprobe = params["nprobe"]

    @staticmethod
    def _prepare(x: torch.Tensor, metric: str) -> np.ndarray:
        from langdml.eval.knn import as_float32_matrix, l2_normalize

        x = as_float32_matrix(x, "embeddings")
        return l2_normalize(x) if metric == "cosine" else x

    @classmethod
    def build(
        cls,
        embeddings: torch.Tensor,
        metric: str = "cosine",
        search: str = "exact",
        search_params: dict | None = None,
    ) -> GalleryIndex:
        n = len(embeddings)
        table = GalleryTable(embeddings, -np.ones(n, np.int64), [""] * n, metric=metric)
        return cls(table, search=search, search_params=search_params)

    @staticmethod
    def _build(table: GalleryTable):
        faiss = _faiss()
        x = GalleryIndex._prepare(table.embeddings, table.metric)
        d = x.shape[1] if x.ndim == 2 else 1
        index = faiss.IndexFlatIP(d) if table.metric == "cosine" else faiss.IndexFlatL2(d)
        if len(x):
            index.add(x)
        return index

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries: torch.Tensor, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows), each (Q, min(k, N)): cosine similarity (higher first) or squared L2
        distance (lower first). An approximate index may return fewer than k items: row -1."""
        if k < 1:
            raise LangDMLError(f"k must be at least 1, got {k}")
        q = self._prepare(torch.as_tensor(queries).reshape(-1, self.index.d), self.table.metric)
        return self.index.search(q, min(k, len(self)))

    def save(self, folder: str | Path, tower: tuple[Any, Any] | None = None) -> Path:
        """Write the index folder: gallery, faiss index, optionally ``tower`` (a traced image
        tower and its :class:`~langdml.models.eval_view.EvalView`,
        :mod:`langdml.inference.tower_file`) and (last) their manifest, in a temporary sibling
        folder that replaces ``folder`` whole (``index_folder``)."""
        from langdml.inference.index_folder import manifest_record, write_folder
        from langdml.inference.tower_file import TOWER, view_record
        from langdml.io import atomic_write

        def write(tmp: Path) -> dict:
            save_embeddings(tmp / GALLERY, self.table)
            atomic_write(tmp / FAISS, lambda t: _faiss().write_index(self.index, str(t)))
            files = {GALLERY: tmp / GALLERY, FAISS: tmp / FAISS}
            if tower is not None:
                atomic_write(tmp / TOWER, lambda t: tower[0].save(str(t)))
                files[TOWER] = tmp / TOWER
            d = int(self.index.d)
            record = manifest_record(
                files, len(self), d, self.table.metric, self.search_kind, self.table.fingerprint
            )
            if tower is not None:
                record["tower"] = view_record(tower[1])
            return record

        return write_folder(Path(folder), (GALLERY, FAISS, TOWER), write)

    def portable_tower(self):
        """The image tower the index folder carries (verified against its manifest), or None
        (an index built without one, or not loaded from a folder)."""
        from langdml.inference.index_folder import verify_files
        from langdml.inference.tower_file import TOWER, PortableTower

        record = (self.manifest or {}).get("tower")
        if self.folder is None or not isinstance(record, dict):
            return None
        verify_files(self.folder, self.manifest, (TOWER,))
        return PortableTower.load(self.folder, record)

    @classmethod
    def load(cls, folder: str | Path) -> GalleryIndex:
        """Reopen an index folder, verified against its manifest (one line on any mismatch)."""
        from langdml.inference.index_folder import (
            MANIFEST,
            read_manifest,
            verify_files,
            verify_loaded,
        )

        folder = Path(folder)
        if not any((folder / name).is_file() for name in (GALLERY, FAISS, MANIFEST)):
            raise LangDMLError(
                f"{str(folder)!r} is not an index folder (no {MANIFEST}, {GALLERY}, {FAISS}); "
                "build one with: langdml index RUN_DIR --images DIR -o INDEX_DIR"
            )
        manifest = read_manifest(folder)
        verify_files(folder, manifest, (GALLERY, FAISS))
        table = load_embeddings(folder / GALLERY)
        try:
            raw = _faiss().read_index(str(folder / FAISS))
        except RuntimeError as exc:
            raise LangDMLError(
                f"{str(folder / FAISS)!r} is not a faiss index ({str(exc).splitlines()[-1][:120]})"
            ) from None
        index = cls(table, raw, search=manifest["search"].get("kind", "exact"))
        verify_loaded(folder, manifest, table, raw, index.search_kind)
        index.folder, index.manifest = folder, manifest
        return index
