"""Exact k-nearest-neighbour search with faiss, chunked over queries, with a defined tie order.
(Approximate IVF / HNSW search with the same contract: ``langdml.eval.ann``.)

Scores: ``metric="cosine"`` searches ``faiss.IndexFlatIP`` on L2-normalised float32 vectors and
returns cosine similarities (higher is nearer); ``metric="euclidean"`` searches
``faiss.IndexFlatL2`` on the raw float32 vectors and returns *squared* Euclidean distances (lower
is nearer), exactly what faiss (and pytorch-metric-learning's ``FaissKNN``) return.

Tie order (documented contract): neighbours are ranked by score, and neighbours with an *equal*
score by ascending reference index, i.e. the first k entries of a stable sort of the full score row.
faiss itself does not guarantee this: ``IndexFlatIP`` returns equal scores in descending index order
and, at the cut-off, keeps whichever tied items its heap kept; for k >= 100 (reservoir selection)
or on GPU the kept subset is arbitrary. We therefore search one extra neighbour, sort each row by
(score, index) and, for the rare rows whose k-th and last returned scores are equal (an exact tie
straddling the cut-off, e.g. duplicate embeddings), search that row again with a doubled k until the
tie group fits (at most the whole reference). For ``IndexFlatL2`` with k < 100 on CPU faiss's own
order already is this order, which is why the numbers equal pytorch-metric-learning's default
``FaissKNN`` even with duplicate embeddings. A reference in which copies of earlier rows make up
``DEDUPE_MIN_SHARE`` or more, or one row appears ``DEDUPE_MIN_GROUP`` times (a collapsed class,
repeated images), is indexed by its distinct rows
and every neighbour list expanded into their copies (``langdml.eval.duplicates``, exact by the
argument there): a big tie group of identical rows then costs no second search.

Leave-one-out (``exclude_self=True``): query i is reference row i, and it is removed *by index*, as
pytorch-metric-learning does for ``ref_includes_query``: we search k + 1 neighbours, drop query i's
own index where it appears, and otherwise (its duplicates outranked it) drop the last one. A
duplicate of the query therefore stays a neighbour at distance 0.

Chunking: queries are searched in chunks whose boundaries are multiples of faiss's BLAS query block
(``faiss.cvar.distance_compute_blas_query_bs``, 4096), and a short tail is merged into the previous
chunk, so every query is scored by the same BLAS call shape as one big ``index.search`` over all
queries: results are bit-identical whatever ``chunk_size`` is, and memory stays bounded (faiss works
on 4096 x 1024 distance blocks; we keep only chunk x k results, never an N x N matrix).

Devices (``resolve_backend``): CPU faiss by default; on ``device="cuda"`` faiss's GPU index when
faiss was built with GPU support, otherwise an exact torch search on the GPU (blocks of queries x
the whole reference: one matmul + ``topk`` per block, ~1 GiB of scores at a time), otherwise CPU
faiss. GPU scores differ from CPU faiss's by float rounding only; the tie order above is applied to
every backend, so neighbours differ only where two scores are within rounding of each other.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from langdml.errors import LangDMLError
from langdml.eval.duplicates import DuplicateRows, expand_neighbours, find_duplicates

log = logging.getLogger(__name__)

METRICS = ("cosine", "euclidean")
# faiss GPU brute-force search supports k <= 2048; larger searches run on the CPU index.
GPU_MAX_K = 2048
# Results kept per chunk (rows x k entries) before a chunk is cut: ~200 MB of distances + indices.
_CHUNK_ENTRIES = 1 << 24
# A reference whose copies of earlier rows are at least this share of it, or that holds a row
# this many times, is searched by its distinct rows (``langdml.eval.duplicates``): big tie
# groups then cost no extra searches.
DEDUPE_MIN_SHARE = 0.05
DEDUPE_MIN_GROUP = 32


def _faiss():
    import faiss

    return faiss


# ---------------------------------------------------------------------------------------------
# input conversion and validation
# ---------------------------------------------------------------------------------------------


def as_float32_matrix(x: Any, name: str) -> np.ndarray:
    """A C-contiguous float32 (N, d) copy-if-needed of a torch tensor / numpy array / nested list.

    Raises LangDMLError for non-2-D or empty input and for NaN / infinite values.
    """
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch tensor (any device, any float dtype)
        import torch

        x = x.detach().to(device="cpu", dtype=torch.float32).numpy()
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise LangDMLError(
            f"{name} must be a 2-D numeric array (N, d); got {type(x).__name__}"
        ) from exc
    if arr.dtype.kind not in "fiub":
        raise LangDMLError(f"{name} must be a 2-D numeric array (N, d); got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise LangDMLError(f"{name} must be a 2-D array (N, d); got shape {tuple(arr.shape)}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise LangDMLError(
            f"{name} is empty (shape {tuple(arr.shape)}); expected N >= 1 rows, d >= 1"
        )
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        bad = int((~finite).sum())
        raise LangDMLError(
            f"{name} contains NaN or infinite values ({bad} row(s), first at row {row}); "
            "expected finite embeddings"
        )
    return arr


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows divided by their L2 norm (float32, a new array); all-zero rows stay zero."""
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float32))
    # A zero vector has no direction; keep it at 0 (cosine 0 to everything) instead of NaN.
    return x / np.maximum(norms, np.float32(1e-12))[:, None]


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise LangDMLError(f"metric must be one of {', '.join(METRICS)}; got {metric!r}")
    return metric


@dataclass(frozen=True)
class SearchBackend:
    """Where exact search runs: ``"faiss"`` (CPU), ``"faiss-gpu"`` (faiss GPU ``gpu``) or
    ``"torch"`` (torch matmul + topk on ``torch_device``, used for CUDA without faiss-gpu)."""

    kind: str = "faiss"
    gpu: int = 0
    torch_device: str = "cpu"

    def __str__(self) -> str:
        if self.kind == "faiss-gpu":
            return f"faiss GPU {self.gpu}"
        return f"torch on {self.torch_device}" if self.kind == "torch" else "faiss CPU"


CPU = SearchBackend()


def resolve_backend(device: Any) -> SearchBackend:
    """The search backend for ``device``.

    "cpu" -> CPU faiss. "cuda" / "cuda:N" / torch.device("cuda", N) -> faiss GPU N when faiss has
    GPU support, else torch on cuda:N when torch sees that GPU, else CPU faiss (logged, no error).
    "auto" -> the same for GPU 0 when a GPU is usable, but it only asks torch when torch is already
    imported (importing it costs ~0.5 GB of RSS). Other torch device types (mps, xpu) -> CPU faiss.
    A ``SearchBackend`` is used as given (e.g. ``SearchBackend("torch", torch_device="cpu")``).
    """
    if isinstance(device, SearchBackend):
        if device.kind not in ("faiss", "faiss-gpu", "torch"):
            raise LangDMLError(
                f"SearchBackend kind must be 'faiss', 'faiss-gpu' or 'torch'; got {device.kind!r}"
            )
        return device
    text = str(device) if device is not None else "auto"
    if text == "cpu":  # the common case needs no torch import
        return CPU
    if text == "auto":
        if _faiss_gpu_count() > 0:
            return SearchBackend("faiss-gpu", 0)
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            return SearchBackend("torch", 0, "cuda:0")
        return CPU
    try:
        import torch

        dev = torch.device(text)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise LangDMLError(
            f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto'; got {device!r}"
        ) from exc
    if dev.type != "cuda":
        return CPU
    gpu = dev.index or 0
    if gpu < _faiss_gpu_count():
        return SearchBackend("faiss-gpu", gpu)
    if torch.cuda.is_available() and gpu < torch.cuda.device_count():
        return SearchBackend("torch", gpu, f"cuda:{gpu}")
    log.info("no usable GPU %d for search; using CPU faiss", gpu)
    return CPU


def _faiss_gpu_count() -> int:
    faiss = _faiss()
    if not hasattr(faiss, "StandardGpuResources"):
        return 0
    try:
        return int(faiss.get_num_gpus())
    except Exception:  # a broken CUDA install reads as "no GPU", not as a crash
        return 0


# ---------------------------------------------------------------------------------------------
# the search engine
# ---------------------------------------------------------------------------------------------


class TorchFlatIndex:
    """Exact search with torch on any device: the faiss ``search(q, k) -> (D, I)`` interface.

    Scores of a block of queries against the whole reference are one matmul (cosine: inner
    product; euclidean: |q|^2 + |r|^2 - 2 q.r clamped at 0, faiss's formula), then ``topk``;
    blocks are sized so a block's score matrix stays under ``block_bytes``.
    """

    def __init__(
        self, reference: np.ndarray, metric: str, device: str, block_bytes: int = 1 << 30
    ) -> None:
        import torch

        self.metric = metric
        self.device = torch.device(device)
        self.ref = torch.from_numpy(reference).to(self.device)
        self.ref_sq = (self.ref * self.ref).sum(1) if metric == "euclidean" else None
        self.rows = max(1, block_bytes // (4 * len(reference)))

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import torch

        D = np.empty((len(q), k), dtype=np.float32)
        I = np.empty((len(q), k), dtype=np.int64)
        with torch.no_grad():
            for s in range(0, len(q), self.rows):
                qb = torch.from_numpy(q[s : s + self.rows]).to(self.device, non_blocking=True)
                scores = qb @ self.ref.T
                if self.metric == "euclidean":
                    scores = ((qb * qb).sum(1, keepdim=True) + self.ref_sq).sub_(2 * scores)
                    vals, idx = scores.clamp_(min=0).topk(k, dim=1, largest=False)
                else:
                    vals, idx = scores.topk(k, dim=1)
                D[s : s + len(qb)] = vals.cpu().numpy()
                I[s : s + len(qb)] = idx.cpu().numpy()
        return D, I


class ExactKNN:
    """An exact index over ``reference`` (already prepared: float32, normalised for cosine).

    ``search(rows, k, self_ids)`` returns the k nearest reference items of each query row in the
    documented tie order, with self-matches removed by index when ``self_ids`` is given.
    ``backend`` picks where the search runs (``resolve_backend``); a faiss GPU index that cannot be
    built (e.g. out of GPU memory) falls back to CPU faiss with a warning. A reference with many
    identical rows (``DEDUPE_MIN_SHARE``, ``DEDUPE_MIN_GROUP``) is indexed by its distinct rows,
    each neighbour list expanded into their copies (``duplicates``: the same lists, one search).
    """

    duplicates: DuplicateRows | None = None  # subclasses indexing every row leave it None

    def __init__(
        self, reference: np.ndarray, metric: str, backend: SearchBackend | None = None
    ) -> None:
        self.metric = check_metric(metric)
        self.n, self.d = reference.shape
        self.backend = backend or CPU
        self.cpu_index = None  # faiss CPU index: the index itself, or faiss-gpu's k > 2048 path
        self.duplicates = find_duplicates(reference, DEDUPE_MIN_SHARE, DEDUPE_MIN_GROUP)
        if self.duplicates is not None:
            reference = reference[self.duplicates.first]  # indexed, then let go
        if self.backend.kind == "torch":
            self.index = TorchFlatIndex(reference, metric, self.backend.torch_device)
            return
        faiss = _faiss()
        self.cpu_index = (
            faiss.IndexFlatIP(self.d) if metric == "cosine" else faiss.IndexFlatL2(self.d)
        )
        self.cpu_index.add(reference)
        self.index = self.cpu_index
        if self.backend.kind == "faiss-gpu":
            try:
                self._gpu_res = faiss.StandardGpuResources()
                self.index = faiss.index_cpu_to_gpu(self._gpu_res, self.backend.gpu, self.cpu_index)
            except (AttributeError, RuntimeError) as exc:
                log.warning("faiss GPU index failed (%s); using CPU faiss", exc)
                self.backend = CPU

    @property
    def on_gpu(self) -> bool:
        return self.backend.kind == "faiss-gpu" or self.backend.torch_device.startswith("cuda")

    def _raw_search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self.backend.kind == "faiss-gpu" and k > GPU_MAX_K:
            return self.cpu_index.search(q, k)
        return self.index.search(q, k)

    def _canonical(self, D: np.ndarray, I: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sort each row by (score, index): best score first, equal scores by ascending index."""
        key = -D if self.metric == "cosine" else D
        unsorted = (key[:, 1:] < key[:, :-1]) | (
            (key[:, 1:] == key[:, :-1]) & (I[:, 1:] < I[:, :-1])
        )
        rows = np.flatnonzero(unsorted.any(axis=1))
        if rows.size:
            order = np.lexsort((I[rows], key[rows]), axis=-1)
            D[rows] = np.take_along_axis(D[rows], order, axis=1)
            I[rows] = np.take_along_axis(I[rows], order, axis=1)
        return D, I

    def search(
        self, q: np.ndarray, k: int, self_ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """k neighbours per row of ``q``; ``self_ids[i]`` (if given, and not -1) is removed from
        row i."""
        if self_ids is None:
            return self._search_with_tail(q, k)
        if k >= self.n:
            # every row comes back; a query's own row is cut and its list padded with -1 (never
            # relevant), so queries outside the reference still see all n rows
            D, I = self._search_with_tail(q, self.n)
            pad = -np.inf if self.metric == "cosine" else np.inf
            D = np.concatenate([D, np.full((len(q), k + 1 - self.n), pad, D.dtype)], axis=1)
            I = np.concatenate([I, np.full((len(q), k + 1 - self.n), -1, I.dtype)], axis=1)
        else:
            D, I = self._search_with_tail(q, k + 1)
        ids = np.asarray(self_ids, dtype=I.dtype)[:, None]
        is_self = (I == ids) & (ids >= 0)  # -1 names no row (an index pads with -1)
        # Rows where the query is not among its k+1 neighbours (duplicates outranked it): drop the
        # last one instead, so every row keeps exactly k neighbours (as pytorch-metric-learning).
        is_self[~is_self.any(axis=1), -1] = True
        keep = ~is_self
        return D[keep].reshape(len(q), k), I[keep].reshape(len(q), k)

    def _search_with_tail(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The first k neighbours of each row of ``q`` in (score, index) order."""
        dup = self.duplicates
        if dup is None:
            return self._tail_search(q, k, self.n)
        D, I = self._tail_search(q, min(k, dup.m), dup.m)  # over the distinct rows
        return expand_neighbours(D, I, dup, k, self.metric)

    def _tail_search(self, q: np.ndarray, k: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``_search_with_tail`` over the ``n`` indexed rows: one extra neighbour, and rows whose
        tie group straddles the cut-off searched again with a doubled k."""
        kk = min(k + 1, n)
        D, I = self._canonical(*self._raw_search(q, kk))
        if kk == k:  # k == n: the whole reference came back, nothing can straddle
            return D, I
        # An approximate index pads rows it could not fill with index -1: nothing more to find.
        last = np.where(I[:, kk - 1] >= 0, D[:, kk - 1], np.nan)
        D, I = D[:, :k].copy(), I[:, :k].copy()
        straddle = np.flatnonzero(D[:, k - 1] == last)
        while straddle.size:
            kk = min(2 * kk, n)
            step = max(1, _CHUNK_ENTRIES // kk)  # bounded memory for big tie groups
            still = []
            for s in range(0, straddle.size, step):
                rows = straddle[s : s + step]
                D2, I2 = self._canonical(*self._raw_search(q[rows], kk))
                D[rows], I[rows] = D2[:, :k], I2[:, :k]
                if kk < n:
                    still.append(rows[(D2[:, k - 1] == D2[:, kk - 1]) & (I2[:, kk - 1] >= 0)])
            straddle = np.concatenate(still) if still else np.empty(0, dtype=np.int64)
        return D, I


def chunk_bounds(n: int, k: int, d: int, chunk_size: int | None = None) -> list[tuple[int, int]]:
    """Query chunks [(start, stop)] aligned to faiss's BLAS query block (see module docstring)."""
    faiss = _faiss()
    block = max(1, int(faiss.cvar.distance_compute_blas_query_bs))
    if chunk_size is None:
        chunk_size = max(block, _CHUNK_ENTRIES // max(k, 1))
    if chunk_size < 1:
        raise LangDMLError(f"chunk_size must be a positive number of queries; got {chunk_size}")
    step = max(block, (chunk_size // block) * block)
    starts = list(range(0, n, step))
    # A tail too small for BLAS would be scored by faiss's direct (non-BLAS) kernel, whose float
    # rounding differs; merged into the previous chunk it goes through BLAS like a single search.
    if len(starts) > 1 and (n - starts[-1]) * d < int(faiss.cvar.distance_compute_blas_threshold):
        starts.pop()
    return [(s, starts[i + 1] if i + 1 < len(starts) else n) for i, s in enumerate(starts)]


def iter_knn(
    engine: ExactKNN,
    query: np.ndarray,
    k: int,
    self_ids: np.ndarray | None = None,
    chunk_size: int | None = None,
) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
    """Yield (start, stop, distances, indices) for consecutive query chunks."""
    for start, stop in chunk_bounds(len(query), k + 2, engine.d, chunk_size):
        ids = None if self_ids is None else self_ids[start:stop]
        D, I = engine.search(query[start:stop], k, ids)
        yield start, stop, D, I


def exact_knn_search(
    query: Any,
    reference: Any = None,
    k: int = 10,
    *,
    exclude_self: bool = False,
    metric: str = "cosine",
    device: Any = "auto",
    chunk_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest reference items of every query (see ``langdml.eval.search.knn_search``,
    the public entry point, which also dispatches approximate searches)."""
    check_metric(metric)
    q = as_float32_matrix(query, "query")
    ref = q if reference is None else as_float32_matrix(reference, "reference")
    k = check_knn_shapes(q.shape, ref.shape, k, exclude_self)
    if metric == "cosine":
        q = l2_normalize(q)
        ref = q if reference is None else l2_normalize(ref)
    engine = ExactKNN(ref, metric, resolve_backend(device))
    self_ids = np.arange(len(q), dtype=np.int64) if exclude_self else None
    D = np.empty((len(q), k), dtype=np.float32)
    I = np.empty((len(q), k), dtype=np.int64)
    for start, stop, d_chunk, i_chunk in iter_knn(engine, q, k, self_ids, chunk_size):
        D[start:stop], I[start:stop] = d_chunk, i_chunk
    return D, I


def check_knn_shapes(
    q_shape: tuple[int, int], ref_shape: tuple[int, int], k: Any, exclude_self: bool
) -> int:
    """Check knn_search's query / reference shapes and k; returns k as an int."""
    if ref_shape[1] != q_shape[1]:
        raise LangDMLError(
            f"query and reference dimensions differ: {q_shape[1]} vs {ref_shape[1]}; "
            "expected embeddings of the same size"
        )
    if exclude_self and q_shape[0] > ref_shape[0]:
        raise LangDMLError(
            f"exclude_self needs query row i to be reference row i, but there are {q_shape[0]} "
            f"queries and only {ref_shape[0]} reference rows"
        )
    available = ref_shape[0] - int(bool(exclude_self))
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= available:
        raise LangDMLError(
            f"k must be an integer in [1, {available}] (reference size"
            f"{' minus the query itself' if exclude_self else ''}); got {k!r}"
        )
    return int(k)
