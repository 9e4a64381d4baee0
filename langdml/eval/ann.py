"""Approximate kNN search for large evaluation sets: faiss ``IndexIVFFlat`` and ``IndexHNSWFlat``.

``retrieval_metrics(..., search="ivf" | "hnsw", search_params={...})`` runs here; ``"exact"`` (the
default) is ``langdml.eval.knn``. Scores are the exact ones of ``knn``: inner products of
L2-normalised vectors for ``metric="cosine"``, squared L2 distances for ``"euclidean"``.

* ``"ivf"``: k-means cells (``nlist``, default round(4 sqrt(N))), trained on a seeded sample of
  ``train_size`` reference rows (default min(N, 64 nlist)); a query scans the ``nprobe`` cells
  nearest to it (default 64; ``nprobe = nlist`` scans everything, i.e. exact search). Deterministic
  for a fixed ``seed``. On faiss-gpu (``device="cuda"``) the index is copied to the GPU.
* ``"hnsw"``: a navigable small-world graph with ``M`` links per node (default 32), built with
  beam width ``efConstruction`` (default 80) and searched with ``efSearch`` (default 128, raised to
  k when k is larger). Always on the CPU. The graph depends on the blocks the vectors are added
  in (``ROWS``) and, built by several threads, may change in the last digits from run to run.
* On the torch backend (a GPU without faiss-gpu) both fall back to the exact torch search.

Tie order and leave-one-out are those of exact search (``ExactKNN.search``): each row is sorted by
(score, reference index), a tie group straddling the cut-off is searched again with a larger k, and
query i of a leave-one-out search asks for k + 1 neighbours and drops reference row i by index (or
the last one when the index did not return it). Cells or graphs that hold fewer than k reachable
items pad the row with index -1, which never counts as a relevant neighbour.

Accuracy: ``neighbor_recall`` searches a seeded sample of the queries (``recall_queries``, default
1000) exactly as well -- a scan of the reference in blocks -- and reports the mean fraction of each
query's k exact neighbours that the approximate search returned (a returned item whose score ties
the k-th exact score, within float rounding, counts as found). It is 1.0 for exact search.

Memory: embeddings are read a block of ``ROWS`` rows at a time (validated, converted to float32 and
normalised per block), so a ``np.load(mmap_mode="r")`` array or a memory-mapped torch tensor (e.g.
from safetensors) is never copied whole; faiss's index holds the only full float32 copy
(IVF: N x d floats + N ids; HNSW: N x d floats + about 2M links per node). Only k-means (the
"clustering" part: NMI / AMI) still needs the whole matrix in memory.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from langdml.errors import INT32_MAX, LangDMLError
from langdml.eval.knn import (
    CPU,
    ExactKNN,
    SearchBackend,
    _faiss,
    check_knn_shapes,
    check_metric,
    exact_knn_search,
    l2_normalize,
    resolve_backend,
)

log = logging.getLogger(__name__)

SEARCHES = ("exact", "ivf", "hnsw", "auto")
# Every key a search accepts, with its default (None: derived from N, see SearchSpec.resolve).
DEFAULTS: dict[str, dict[str, int | None]] = {
    "exact": {"recall_queries": 0},
    "ivf": {"nlist": None, "nprobe": None, "train_size": None, "recall_queries": 1000},
    "hnsw": {"M": 32, "efConstruction": 80, "efSearch": 128, "recall_queries": 1000},
    # chosen by measurement (langdml.eval.autotune); target_recall is a fraction in (0, 1]
    "auto": {"target_recall": None, "recall_queries": 1000},
}
_MINIMUM = {"recall_queries": 0, "M": 2}  # every other parameter must be >= 1
ROWS = 1 << 16  # rows per block when validating, adding and searching
GPU_MAX_NPROBE = 2048  # faiss-gpu IVF limit
_TRAIN_PER_CELL = 64
DEFAULT_NPROBE = 64  # at most nlist
DEFAULT_TARGET = 0.95  # search="auto": neighbour recall to reach on the query sample


# ---------------------------------------------------------------------------------------------
# parameters
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchSpec:
    """A checked ``search`` / ``search_params`` pair; ``params`` holds every key (defaults)."""

    kind: str = "exact"
    params: Mapping[str, int | None] = field(default_factory=lambda: dict(DEFAULTS["exact"]))

    @property
    def approximate(self) -> bool:
        return self.kind != "exact"

    @property
    def recall_queries(self) -> int:
        return int(self.params["recall_queries"] or 0)

    def resolve(self, n: int) -> dict[str, int]:
        """The parameters for a reference of n rows: IVF defaults filled and checked against n."""
        p = dict(self.params)
        if self.kind != "ivf":
            return p
        if p["nlist"] is None:
            p["nlist"] = max(1, min(n, round(4 * math.sqrt(n))))
            how = f"nlist={p['nlist']} (the default round(4*sqrt(N)) for N={n:,})"
        elif p["nlist"] > n:
            raise LangDMLError(
                f"search_params['nlist']={p['nlist']} exceeds the {n:,} reference rows; "
                "expected 1 <= nlist <= N"
            )
        else:
            how = f"nlist={p['nlist']}"
        if p["nprobe"] is None:
            p["nprobe"] = min(DEFAULT_NPROBE, p["nlist"])
        elif p["nprobe"] > p["nlist"]:
            raise LangDMLError(
                f"search_params['nprobe']={p['nprobe']} exceeds {how}; expected 1 <= nprobe <= "
                "nlist (nprobe = nlist scans every cell)"
            )
        if p["train_size"] is None:
            p["train_size"] = min(n, _TRAIN_PER_CELL * p["nlist"])
        elif p["train_size"] < p["nlist"]:
            raise LangDMLError(
                f"search_params['train_size']={p['train_size']} is below {how}; expected "
                "train_size >= nlist (k-means needs a point per cell)"
            )
        p["train_size"] = min(p["train_size"], n)
        return p


def check_search(search: Any = "exact", search_params: Any = None) -> SearchSpec:
    """Validate ``search`` and ``search_params``; a LangDMLError (one line) names what is wrong."""
    if isinstance(search, SearchSpec):
        return search
    if not isinstance(search, str) or search not in SEARCHES:
        raise LangDMLError(f"search must be one of {', '.join(SEARCHES)}; got {search!r}")
    if search_params is None:
        search_params = {}
    if not isinstance(search_params, Mapping):
        raise LangDMLError(
            f"search_params must be a mapping such as {{'nprobe': 32}}; got {search_params!r}"
        )
    allowed = DEFAULTS[search]
    if search == "auto":
        target, n = auto_params(dict(search_params))
        return SearchSpec("auto", {"target_recall": target, "recall_queries": n})
    params = dict(allowed)
    for key, value in search_params.items():
        if key not in allowed:
            raise LangDMLError(
                f"search_params: unknown key {key!r} for search={search!r}; expected any of "
                f"{', '.join(allowed)}"
            )
        low = _MINIMUM.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
            raise LangDMLError(f"search_params[{key!r}] must be an integer >= {low}; got {value!r}")
        if value > INT32_MAX:  # faiss's search and build parameters are C ints
            raise LangDMLError(
                f"search_params[{key!r}] must be at most {INT32_MAX} (faiss holds it in a 32-bit "
                f"int); got {value}"
            )
        params[key] = int(value)
    spec = SearchSpec(search, params)
    if search == "ivf" and params["nlist"] is not None:
        spec.resolve(params["nlist"])  # nprobe / train_size against an explicit nlist
    return spec


def auto_params(search_params: dict[str, Any] | None) -> tuple[float, int]:
    """(target_recall, recall_queries) of ``search="auto"``'s parameters, checked."""
    p = dict(search_params or {})
    unknown = sorted(set(p) - {"target_recall", "recall_queries"})
    if unknown:
        raise LangDMLError(
            f"search_params: unknown key(s) {unknown} for search='auto'; expected any of "
            "target_recall, recall_queries"
        )
    target = p.get("target_recall", DEFAULT_TARGET)
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 < target <= 1:
        raise LangDMLError(f"search_params['target_recall'] must be in (0, 1]; got {target!r}")
    n = p.get("recall_queries", 1000)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= INT32_MAX:
        raise LangDMLError(
            f"search_params['recall_queries'] must be an integer in [1, {INT32_MAX}]; got {n!r}"
        )
    return float(target), int(n)


# ---------------------------------------------------------------------------------------------
# embeddings read a block at a time
# ---------------------------------------------------------------------------------------------


class Rows:
    """(N, d) embeddings -- numpy array, ``np.memmap``, torch tensor or nested list -- read in
    float32 blocks (L2-normalised when ``normalize``), never converted whole.

    The constructor checks shape, dtype and finiteness, one block at a time.
    """

    def __init__(self, x: Any, name: str, normalize: bool) -> None:
        self.name, self.normalize = name, normalize
        self.torch = hasattr(x, "detach") and hasattr(x, "cpu")
        if not self.torch:
            try:
                x = np.asarray(x)  # a memmap or array stays a view: no copy
            except (TypeError, ValueError) as exc:
                raise LangDMLError(
                    f"{name} must be a 2-D numeric array (N, d); got {type(x).__name__}"
                ) from exc
            if x.dtype.kind not in "fiub":
                raise LangDMLError(
                    f"{name} must be a 2-D numeric array (N, d); got dtype {x.dtype}"
                )
        elif x.is_complex():
            raise LangDMLError(f"{name} must be a real 2-D tensor (N, d); got dtype {x.dtype}")
        shape = tuple(x.shape)
        if len(shape) != 2:
            raise LangDMLError(f"{name} must be a 2-D array (N, d); got shape {shape}")
        if 0 in shape:
            raise LangDMLError(f"{name} is empty (shape {shape}); expected N >= 1 rows, d >= 1")
        self.x = x
        self.n, self.d = shape
        self._check_finite()

    def _raw(self, sel: Any) -> np.ndarray:
        if self.torch:
            import torch

            if isinstance(sel, np.ndarray):
                sel = torch.from_numpy(sel)
            return self.x[sel].detach().to(device="cpu", dtype=torch.float32).numpy()
        return np.ascontiguousarray(self.x[sel], dtype=np.float32)

    def _check_finite(self) -> None:
        for start in range(0, self.n, ROWS):
            finite = np.isfinite(self._raw(slice(start, start + ROWS))).all(axis=1)
            if not finite.all():
                row = start + int(np.flatnonzero(~finite)[0])
                raise LangDMLError(
                    f"{self.name} contains NaN or infinite values (first at row {row}); "
                    "expected finite embeddings"
                )

    def _prepared(self, block: np.ndarray) -> np.ndarray:
        return l2_normalize(block) if self.normalize else np.ascontiguousarray(block)

    def block(self, start: int, stop: int) -> np.ndarray:
        """Rows start:stop as a float32 (stop - start, d) array."""
        return self._prepared(self._raw(slice(start, stop)))

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The given rows (sorted row ids read fastest from a memmap)."""
        return self._prepared(self._raw(np.asarray(rows, dtype=np.int64)))

    def blocks(self, size: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        size = size or ROWS
        for start in range(0, self.n, size):
            yield start, self.block(start, min(start + size, self.n))

    def materialize(self) -> np.ndarray:
        """The whole (prepared) matrix in memory: for k-means, which needs it anyway."""
        return self.block(0, self.n)


# ---------------------------------------------------------------------------------------------
# the approximate engine
# ---------------------------------------------------------------------------------------------


class ApproxKNN(ExactKNN):
    """An IVF or HNSW faiss index over ``reference`` with ``ExactKNN``'s search contract: the same
    ``search(rows, k, self_ids)`` (tie order, leave-one-out by index); rows padded with -1 where
    the index reached fewer than k items."""

    def __init__(
        self,
        reference: Rows,
        metric: str,
        spec: SearchSpec,
        seed: int = 0,
        backend: SearchBackend | None = None,
    ) -> None:
        self.metric = check_metric(metric)
        self.n, self.d = reference.n, reference.d
        self.spec = spec
        self.params = spec.resolve(self.n)
        self.backend = CPU
        faiss = _faiss()
        mt = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
        if spec.kind == "ivf":
            self.cpu_index = self._build_ivf(reference, mt, seed)
        elif spec.kind == "hnsw":
            self.cpu_index = faiss.IndexHNSWFlat(self.d, self.params["M"], mt)
            self.cpu_index.hnsw.efConstruction = self.params["efConstruction"]
            for _, block in reference.blocks():
                self.cpu_index.add(block)
            self.cpu_index.hnsw.efSearch = self.params["efSearch"]
        else:
            raise LangDMLError(f"ApproxKNN needs search 'ivf' or 'hnsw'; got {spec.kind!r}")
        self.index = self.cpu_index
        if backend is not None and backend.kind == "faiss-gpu":
            if spec.kind == "ivf":
                self._to_gpu(backend)
            else:
                log.info("faiss has no GPU HNSW index; HNSW search runs on the CPU")

    def _build_ivf(self, reference: Rows, mt: int, seed: int):
        faiss = _faiss()
        p = self.params
        self._quantizer = (
            faiss.IndexFlatIP(self.d)
            if mt == faiss.METRIC_INNER_PRODUCT
            else faiss.IndexFlatL2(self.d)
        )
        index = faiss.IndexIVFFlat(self._quantizer, self.d, p["nlist"], mt)
        index.cp.seed = int(seed)
        index.cp.min_points_per_centroid = 1  # small sets: no "please provide ..." warning
        index.cp.max_points_per_centroid = 1 << 30  # we sampled already; faiss must not again
        rng = np.random.default_rng(seed)
        sample = np.sort(rng.choice(self.n, p["train_size"], replace=False))
        index.train(reference.take(sample))
        for _, block in reference.blocks():
            index.add(block)
        index.nprobe = p["nprobe"]
        return index

    def _to_gpu(self, backend: SearchBackend) -> None:
        if self.params["nprobe"] > GPU_MAX_NPROBE:
            log.info(
                "nprobe > %d is not supported by faiss-gpu; IVF stays on the CPU", GPU_MAX_NPROBE
            )
            return
        faiss = _faiss()
        try:
            self._gpu_res = faiss.StandardGpuResources()
            index = faiss.index_cpu_to_gpu(self._gpu_res, backend.gpu, self.cpu_index)
            faiss.GpuParameterSpace().set_index_parameter(index, "nprobe", self.params["nprobe"])
        except (AttributeError, RuntimeError) as exc:
            log.warning("faiss GPU IVF index failed (%s); using CPU faiss", exc)
            return
        self.index, self.backend = index, backend


def iter_rows_knn(
    engine: ExactKNN,
    rows: Rows,
    ids: np.ndarray,
    k: int,
    loo: bool,
    chunk_size: int | None = None,
    self_ids: np.ndarray | None = None,
) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
    """Yield (start, stop, distances, indices) for the query rows ``ids[start:stop]``, read from
    ``rows`` a chunk at a time; ``loo``: query row i is reference row i and is left out;
    ``self_ids`` (aligned with ``ids``, -1: none): the reference row left out of each query."""
    step = chunk_size or max(1024, min(ROWS, (1 << 24) // max(k, 1)))
    everything = len(ids) == rows.n
    for start in range(0, len(ids), step):
        stop = min(start + step, len(ids))
        sel = ids[start:stop]
        q = rows.block(start, stop) if everything else rows.take(sel)
        leave_out = sel if loo else None if self_ids is None else self_ids[start:stop]
        D, I = engine.search(q, k, leave_out)
        yield start, stop, D, I


def approx_knn_search(
    query: Any,
    reference: Any,
    k: int,
    exclude_self: bool,
    metric: str,
    device: Any,
    chunk_size: int | None,
    spec: SearchSpec,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """``knn_search`` with an approximate ``spec``: the same contract, embeddings read in blocks.
    On the torch backend (a GPU without faiss-gpu) it is the exact torch search."""
    backend = resolve_backend(device)
    if backend.kind == "torch":
        log.info("search=%r on %s runs the exact torch search", spec.kind, backend)
        return exact_knn_search(
            query,
            reference,
            k,
            exclude_self=exclude_self,
            metric=metric,
            device=backend,
            chunk_size=chunk_size,
        )
    q = Rows(query, "query", metric == "cosine")
    ref = q if reference is None else Rows(reference, "reference", metric == "cosine")
    k = check_knn_shapes((q.n, q.d), (ref.n, ref.d), k, exclude_self)
    engine = ApproxKNN(ref, metric, spec, seed, backend)
    D = np.empty((q.n, k), dtype=np.float32)
    I = np.empty((q.n, k), dtype=np.int64)
    ids = np.arange(q.n, dtype=np.int64)
    for start, stop, d_chunk, i_chunk in iter_rows_knn(engine, q, ids, k, exclude_self, chunk_size):
        D[start:stop], I[start:stop] = d_chunk, i_chunk
    return D, I


# ---------------------------------------------------------------------------------------------
# measured accuracy
# ---------------------------------------------------------------------------------------------


def exact_sample_knn(
    reference: Rows,
    q: np.ndarray,
    k: int,
    metric: str,
    self_ids: np.ndarray | None = None,
    setup: list[float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k neighbours of the (prepared) query rows ``q``, scanning ``reference`` in blocks:
    CPU faiss per block, merged in (score, index) order; leave-one-out as ``ExactKNN.search``.
    ``setup``: a list that receives the CPU seconds spent reading and indexing the reference
    blocks, a cost paid once whatever the number of queries."""
    kk = k + (self_ids is not None)
    D = I = None
    for start in range(0, reference.n, 4 * ROWS):
        t0 = time.process_time()
        block = reference.block(start, min(start + 4 * ROWS, reference.n))
        part = ExactKNN(block, metric)
        if setup is not None:
            setup.append(time.process_time() - t0)
        Db, Ib = part._search_with_tail(q, min(kk, len(block)))
        Ib += start
        if D is None:
            D, I = Db, Ib
        else:
            D, I = part._canonical(np.hstack([D, Db]), np.hstack([I, Ib]))
            D, I = D[:, :kk].copy(), I[:, :kk].copy()
    if self_ids is None:
        return D, I
    is_self = I == self_ids[:, None]
    is_self[~is_self.any(axis=1), -1] = True
    keep = ~is_self
    return D[keep].reshape(len(q), k), I[keep].reshape(len(q), k)


def found_fraction(
    D: np.ndarray, I: np.ndarray, De: np.ndarray, Ie: np.ndarray, metric: str
) -> np.ndarray:
    """Per query, the fraction of its exact neighbours (De, Ie) that (D, I) returned; a returned
    item scoring at least as well as the k-th exact one (within float rounding) also counts."""
    k = Ie.shape[1]
    kth = De[:, -1:]
    tol = 1e-5 * np.maximum(1.0, np.abs(kth))
    as_good = (D >= kth - tol) if metric == "cosine" else (D <= kth + tol)
    found = np.empty(len(I))
    for i in range(len(I)):
        real = I[i] >= 0
        hit = np.isin(I[i], Ie[i]) | as_good[i]
        found[i] = min(k, int((hit & real).sum())) / k
    return found


def neighbor_recall(
    engine: ExactKNN,
    queries: Rows | np.ndarray,
    reference: Rows,
    ids: np.ndarray,
    k: int,
    loo: bool,
    n_queries: int,
    seed: int = 0,
) -> float:
    """Mean fraction of the k exact neighbours that ``engine`` returns, over a seeded sample of
    ``n_queries`` of the query rows ``ids`` (module docstring)."""
    rng = np.random.default_rng(seed)
    sample = ids[np.sort(rng.choice(len(ids), min(n_queries, len(ids)), replace=False))]
    q = queries.take(sample) if isinstance(queries, Rows) else queries[sample]
    self_ids = sample.astype(np.int64) if loo else None
    D, I = engine.search(q, k, self_ids)
    De, Ie = exact_sample_knn(reference, q, k, engine.metric, self_ids)
    return float(found_fraction(D, I, De, Ie, engine.metric).mean())
