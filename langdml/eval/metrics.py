"""Zero-shot retrieval metrics: Recall@k, MAP@R, R-precision (exact faiss kNN) and NMI / AMI.

Definitions (Musgrave et al., "A Metric Learning Reality Check", ECCV 2020; the same numbers as
pytorch-metric-learning 2.9 ``AccuracyCalculator(k="max_bin_count")``):

* For query q with label y_q, R_q = number of reference items labelled y_q, minus 1 when the query
  set is the reference set (leave-one-out: the query itself is never its own neighbour) or when the
  reference contains the query (``self_index``: that row is never its neighbour either).
* ``self_index`` (with ``reference``, when the reference contains some of the queries, e.g. a
  gallery holding the query images): an (N,) integer array, ``self_index[i]`` = the row of
  ``reference`` that is query i itself, or -1 if query i is not in the reference. That row is
  removed from query i's neighbours and from R_q; it must carry query i's label and no row may be
  named twice. ``reference=embeddings, self_index=arange(N)`` gives the leave-one-out numbers.
* rel_q(i) = 1 if the i-th nearest reference item (i = 1, 2, ...) has label y_q, else 0.
* Recall@k = mean over queries of [sum_{i<=k} rel_q(i) >= 1]: the fraction of queries with at least
  one same-label item among their k nearest (Recall@1 == PML ``precision_at_1``).
* R-precision = mean over queries of (1/R_q) sum_{i<=R_q} rel_q(i).
* MAP@R = mean over queries of (1/R_q) sum_{i<=R_q} P_q(i) rel_q(i), with
  P_q(i) = (1/i) sum_{j<=i} rel_q(j) (PML ``mean_average_precision_at_r``).
* ``query_sample``: the means run over a seeded sample of the queries (the reference is unchanged).
* Lone queries -- R_q = 0: a class of size 1 in leave-one-out, or a query label absent from the
  reference -- have nothing to retrieve and are excluded from all kNN metrics (the means run over
  the other queries), exactly as PML does. If every query is lone the kNN metrics are NaN.
* Neighbour order: by score, equal scores by ascending reference index (see ``langdml.eval.knn``).
* NMI / AMI: k-means (faiss, or ``langdml.eval.kmeans`` on the torch GPU backend; ``niter=
  kmeans_iters``, seeded) on the query embeddings with as many clusters as distinct query labels,
  scored against the query labels with ``sklearn.metrics.normalized_mutual_info_score`` (arithmetic
  mean) and the adjusted mutual information (sklearn's definition, ``langdml.eval.mutual_info``). As
  in PML only the queries are clustered, and all of them (lone ones too). With ``metric="cosine"``
  the L2-normalised embeddings are clustered (plain k-means, centroids not re-normalised); PML
  clusters the raw embeddings with faiss's default seed 1234 -- identical results for ``seed=1234``
  on normalised input.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from langdml.errors import LangDMLError
from langdml.eval.ann import (
    ApproxKNN,
    Rows,
    SearchSpec,
    check_search,
    iter_rows_knn,
    neighbor_recall,
)
from langdml.eval.autotune import auto_search
from langdml.eval.index_cache import IndexCache
from langdml.eval.kmeans import kmeans_assign
from langdml.eval.knn import (
    ExactKNN,
    SearchBackend,
    as_float32_matrix,
    check_metric,
    iter_knn,
    l2_normalize,
    resolve_backend,
)
from langdml.eval.map1000_f1 import MAP_AT, average_precision_rows, pairwise_f1
from langdml.eval.mutual_info import adjusted_mutual_info
from langdml.eval.query_sample import check_query_sample, sample_queries  # noqa: F401 (re-export)
from langdml.eval.rerank import RerankSpec, check_rerank, rerank_search
from langdml.eval.self_index import leave_out_rows

log = logging.getLogger(__name__)

PARTS = ("recall", "map_r", "clustering")
EXTRA_PARTS = ("map_1000", "f1")  # opt-in (not in the default include): eval.map1000_f1
DEFAULT_RECALL_KS = (1, 2, 4, 8)
# The keys retrieval_metrics returns by default, in report order.
METRIC_KEYS = (*(f"recall@{k}" for k in DEFAULT_RECALL_KS), "map@r", "r_precision", "nmi", "ami")


def as_labels(y: Any, name: str, n: int, rows_name: str = "embeddings") -> np.ndarray:
    """A 1-D numpy array of n class labels (ints, strings or other hashable values)."""
    if y is None:
        raise LangDMLError(f"{name} is missing; expected one label per row of {rows_name}")
    if hasattr(y, "detach") and hasattr(y, "cpu"):
        y = y.detach().cpu().numpy()
    arr = np.asarray(y)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise LangDMLError(f"{name} must be a 1-D array of class labels; got shape {arr.shape}")
    if len(arr) != n:
        raise LangDMLError(
            f"{name} has {len(arr)} labels but {rows_name} has {n} rows; expected one label per row"
        )
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise LangDMLError(f"{name} contains NaN or infinite labels; expected class ids")
    if arr.dtype.kind not in "iubfUSO":
        raise LangDMLError(f"{name} must hold class ids or names; got dtype {arr.dtype}")
    return arr


def _label_codes(
    query_labels: np.ndarray, ref_labels: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, int]:
    """Integer codes for query and reference labels over their union."""
    if ref_labels is None:
        try:
            _, codes = np.unique(query_labels, return_inverse=True)
        except TypeError as exc:  # e.g. an object array mixing ints and strings
            raise LangDMLError(f"labels cannot be sorted into classes: {exc}") from exc
        codes = codes.reshape(-1)
        return codes, codes, int(codes.max()) + 1
    numeric_q, numeric_r = query_labels.dtype.kind in "iubf", ref_labels.dtype.kind in "iubf"
    if numeric_q != numeric_r and "O" not in (query_labels.dtype.kind, ref_labels.dtype.kind):
        raise LangDMLError(
            f"labels ({query_labels.dtype}) and reference_labels ({ref_labels.dtype}) cannot be "
            "compared; expected both numeric or both strings"
        )
    try:
        uniq, codes = np.unique(np.concatenate([query_labels, ref_labels]), return_inverse=True)
    except TypeError as exc:
        raise LangDMLError(f"labels cannot be compared with reference_labels: {exc}") from exc
    codes = codes.reshape(-1)
    return codes[: len(query_labels)], codes[len(query_labels) :], len(uniq)


def _check_parts(include: Any) -> tuple[str, ...]:
    parts = (include,) if isinstance(include, str) else tuple(include)
    bad = [p for p in parts if p not in PARTS + EXTRA_PARTS]
    if bad or not parts:
        raise LangDMLError(
            f"include must be a non-empty subset of {', '.join(PARTS + EXTRA_PARTS)}; "
            f"got {include!r}"
        )
    return parts


def _check_ks(recall_ks: Iterable[int]) -> tuple[int, ...]:
    ks = tuple(recall_ks)
    if not ks or any(
        isinstance(x, bool) or not isinstance(x, int | np.integer) or x < 1 for x in ks
    ):
        raise LangDMLError(
            f"recall_ks must be positive integers, e.g. (1, 2, 4, 8); got {recall_ks!r}"
        )
    return tuple(int(x) for x in ks)


def retrieval_metrics(
    embeddings: Any,
    labels: Any,
    reference: Any = None,
    reference_labels: Any = None,
    *,
    k: int | None = None,
    metric: str = "cosine",
    device: Any = "auto",
    chunk_size: int | None = None,
    include: Sequence[str] = PARTS,
    seed: int = 0,
    recall_ks: Sequence[int] = DEFAULT_RECALL_KS,
    kmeans_iters: int = 20,
    search: str = "exact",
    search_params: Mapping[str, int] | None = None,
    query_sample: int | None = None,
    index_cache: IndexCache | None = None,
    rerank: str = "none",
    rerank_params: Mapping[str, float] | None = None,
    self_index: Any = None,
) -> dict[str, float]:
    """Retrieval and clustering metrics of ``embeddings`` (queries) with class ``labels``.

    Without ``reference`` every query is searched against all *other* queries (leave-one-out);
    with ``reference``/``reference_labels`` the queries are searched against the reference set
    (which may hold other classes, e.g. class-name text queries against images). Formulas, lone
    queries and tie order: module docstring.

    Args:
        embeddings, reference: (N, d) / (M, d) float arrays or torch tensors (any device/dtype);
            with an approximate ``search`` also memory-mapped arrays, read a block at a time.
        labels, reference_labels: (N,) / (M,) class labels (ints or strings).
        k: neighbours retrieved; None (default) = exactly enough: the largest R_q (PML's
            "max_bin_count") and the largest recall k. An explicit k must cover both.
        metric: "cosine" (inner product of L2-normalised vectors) or "euclidean".
        device: "cpu", "cuda"/"cuda:N" or "auto" (``knn.resolve_backend``; k-means follows it).
        chunk_size: queries per search call (memory bound; None: from k); results never change.
        include: any of "recall", "map_r" (map@r, r_precision), "clustering" (nmi, ami), "map_1000",
            "f1" (``eval.map1000_f1``).
        seed: seeds k-means and the IVF training / neighbour-recall samples. recall_ks: the k
            of recall@k. kmeans_iters: k-means iterations.
        search: "exact" (default), "ivf" or "hnsw" (approximate faiss indexes, ``eval.ann``), or
            "auto" (chosen by measurement, ``eval.autotune``); search_params: e.g. ``{"nprobe":
            128}`` (ivf: nlist, nprobe, train_size; hnsw: M, efConstruction, efSearch; auto:
            target_recall; any: recall_queries).
        query_sample: kNN metrics over a seeded sample (``seed``) of this many queries instead
            of all (None, default); every row stays in the reference (leave-one-out as usual).
            The same seed picks the same queries for any ``search``, so exact metrics of a
            sample price an approximate search at a size where exact over all is too slow.
        rerank: "none" (default), "qe" or "k_reciprocal": kNN metrics of the re-ranked lists of
            an exact search (``eval.rerank``); rerank_params: e.g. ``{"k1": 20, "lambda": 0.3}``.
        self_index: with ``reference`` only: (N,) ints, the reference row that is query i
            itself, or -1 (module docstring); None (default): no query is in the reference.
        index_cache: an ``eval.index_cache.IndexCache`` calls share to search one approximate index.

    Returns:
        ``{"recall@1", "recall@2", "recall@4", "recall@8", "map@r", "r_precision", "nmi", "ami"}``
        (only the included parts) as Python floats in [0, 1] (AMI can be slightly negative),
        plus ``"neighbor_recall"`` for an approximate search (or ``recall_queries`` > 0): the
        fraction of exact neighbours it found on a seeded sample of queries (1.0 when exact).
    """
    parts, ks, spec, reranking = _check_arguments(
        include, metric, recall_ks, (search, search_params), (rerank, rerank_params), seed, k
    )
    check_query_sample(query_sample)
    backend = resolve_backend(device)
    q, q_labels, ref, r_labels = _inputs(
        embeddings, labels, reference, reference_labels, metric, _streams(spec, backend)
    )
    codes, self_ids = _codes(q_labels, r_labels, ref, self_index, reranking.active)

    out: dict[str, float] = {}
    if {"recall", "map_r", "map_1000"} & set(parts):
        cached = (index_cache, embeddings if reference is None else reference)
        how = (metric, backend, chunk_size, spec, int(seed), query_sample, reranking, cached)
        out.update(_knn_metrics(q, ref, codes, self_ids, parts, ks, k, how))
    if "clustering" in parts or "f1" in parts:
        out.update(_clustering_metrics(q, codes[0], seed, kmeans_iters, backend, parts))
    return out


def _codes(
    q_labels: np.ndarray, r_labels: np.ndarray | None, ref: Any, self_index: Any, reranking: bool
) -> tuple[tuple[np.ndarray, np.ndarray, int], np.ndarray | None]:
    """(query codes, reference codes, number of codes) and the per-query reference row left out
    (``eval.self_index``): arange(N) for leave-one-out, the checked ``self_index``, or None."""
    q_codes, r_codes, n_codes = _label_codes(q_labels, r_labels)
    n_ref = None if ref is None else ref.n if isinstance(ref, Rows) else len(ref)
    self_ids = leave_out_rows(self_index, q_codes, r_codes, n_ref, reranking)
    return (q_codes, r_codes, n_codes), self_ids


def _streams(spec: SearchSpec, backend: SearchBackend) -> bool:
    """Whether the embeddings are read a block at a time: for an approximate search, except on
    the torch backend, which searches exactly instead."""
    return spec.approximate and backend.kind != "torch"


def _check_arguments(
    include: Any, metric: str, recall_ks: Any, search: tuple, rerank: tuple, seed: Any, k: Any
) -> tuple[tuple[str, ...], tuple[int, ...], SearchSpec, RerankSpec]:
    """retrieval_metrics' arguments checked before any work: (parts, recall ks, search, rerank)."""
    parts = _check_parts(include)
    check_metric(metric)
    spec = check_search(*search)
    reranking = check_rerank(*rerank)
    if reranking.active and spec.approximate:
        raise LangDMLError(f"rerank {rerank[0]!r} re-ranks an exact search; use search='exact'")
    ks = _check_ks(recall_ks) if "recall" in parts else ()
    _check_seed_and_k(seed, k)
    return parts, ks, spec, reranking


def _check_seed_and_k(seed: Any, k: Any) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise LangDMLError(f"seed must be an integer; got {seed!r}")
    if k is not None and (isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1):
        raise LangDMLError(f"k must be a positive integer or None; got {k!r}")


def _inputs(
    embeddings: Any,
    labels: Any,
    reference: Any,
    reference_labels: Any,
    metric: str,
    streaming: bool,
) -> tuple[Any, np.ndarray, Any, np.ndarray | None]:
    """Checked queries and reference (normalised for cosine) and their labels. ``streaming``:
    the embeddings as ``Rows`` (read a block at a time), else float32 arrays in memory."""
    cosine = metric == "cosine"
    if streaming:
        q = Rows(embeddings, "embeddings", cosine)
    else:
        q = as_float32_matrix(embeddings, "embeddings")
    q_labels = as_labels(labels, "labels", q.shape[0] if not streaming else q.n)
    if (reference is None) != (reference_labels is None):
        missing = "reference_labels" if reference_labels is None else "reference"
        raise LangDMLError(f"{missing} is missing; pass reference and reference_labels together")
    if reference is None:
        return (l2_normalize(q) if cosine and not streaming else q), q_labels, None, None
    if streaming:
        ref = Rows(reference, "reference", cosine)
        n_ref, d_q, d_ref = ref.n, q.d, ref.d
    else:
        ref = as_float32_matrix(reference, "reference")
        n_ref, d_q, d_ref = len(ref), q.shape[1], ref.shape[1]
    r_labels = as_labels(reference_labels, "reference_labels", n_ref, "reference")
    if d_ref != d_q:
        raise LangDMLError(
            f"embeddings have dimension {d_q} but reference has {d_ref}; "
            "expected the same embedding size"
        )
    if cosine and not streaming:
        q, ref = l2_normalize(q), l2_normalize(ref)
    return q, q_labels, ref, r_labels


def _neighbours_needed(
    R: np.ndarray, valid: np.ndarray, available: int, ks: tuple[int, ...], want_map: bool, k: Any
) -> int:
    """K, the neighbours to retrieve per query: the largest R_q and recall k, or a checked k."""
    r_max = int(R[valid].max())
    need = max(max(ks, default=0), r_max if want_map else 0)
    if k is None:
        return min(need, available)
    if k > available:
        raise LangDMLError(f"k={k} exceeds the {available} reference items a query can retrieve")
    if want_map and k < r_max:
        raise LangDMLError(
            f"k={k} is smaller than the largest class (R={r_max} relevant items) so MAP@R and "
            "R-precision would be wrong; use k=None"
        )
    if ks and k < max(ks):
        raise LangDMLError(f"k={k} is smaller than the largest recall k ({max(ks)}); use k=None")
    return int(k)


def _knn_metrics(
    q: Any,
    ref: Any,
    codes: tuple[np.ndarray, np.ndarray, int],
    self_ids: np.ndarray | None,
    parts: tuple[str, ...],
    ks: tuple[int, ...],
    k: int | None,
    how: tuple[str, SearchBackend, int | None, SearchSpec, int, int | None, RerankSpec, tuple],
) -> dict[str, float]:
    """Recall@k / MAP@R / R-precision; ``self_ids``: per query the reference row left out
    (-1: none; None: nothing left out); ``how`` = (metric, backend, chunk_size, spec, seed,
    query_sample, rerank, (index_cache, the reference's source array))."""
    q_codes, r_codes, n_codes = codes
    loo = ref is None  # leave-one-out: self_ids is arange(N) over the queries
    is_in = np.zeros(len(q_codes), dtype=np.int64) if self_ids is None else (self_ids >= 0) * 1
    metric, backend, chunk_size, spec, seed, query_sample, reranking, cached = how
    want_map, want_1000 = "map_r" in parts, "map_1000" in parts
    keys = [f"recall@{x}" for x in ks] + (["map@r", "r_precision"] if want_map else [])
    keys += ["map@1000"] if want_1000 else []
    keys += ["neighbor_recall"] if spec.recall_queries > 0 else []
    r_count = np.bincount(r_codes, minlength=n_codes)
    R = r_count[q_codes] - is_in  # relevant items per query
    queries = sample_queries(len(q_codes), query_sample, seed)
    valid = queries[R[queries] > 0]  # lone queries (R = 0) are excluded, as in PML
    if valid.size == 0:
        warnings.warn(
            "no query has a same-label item in the reference; kNN metrics are NaN",
            RuntimeWarning,
            stacklevel=3,
        )
        return {key: math.nan for key in keys}
    if ref is None:
        ref = q
    n_ref = ref.n if isinstance(ref, Rows) else len(ref)
    # a query outside the reference can retrieve all of it; one inside, all but itself (the
    # search pads its list with -1, never relevant)
    available = n_ref - int(bool(is_in.all()))
    K = _neighbours_needed(R, valid, available, ks, want_map, k)
    if want_1000:
        K = max(K, min(MAP_AT, available))
    leave_out = None if self_ids is None else self_ids[valid]

    codes_v, R_v = q_codes[valid], R[valid]
    hits = np.zeros((valid.size, len(ks)), dtype=bool)
    ap = np.zeros(valid.size, dtype=np.float64)
    rp = np.zeros(valid.size, dtype=np.float64)
    ap1000 = np.zeros(valid.size, dtype=np.float64)
    done = None  # the neighbour recall search="auto" measured on the query sample already
    if reranking.active:
        chunks = _reranked(q, ref, valid, K, loo, metric, backend, reranking)
    elif isinstance(ref, Rows):
        engine, spec, done = _streaming_engine(q, ref, valid, K, loo, how)
        chunks = iter_rows_knn(engine, q, valid, K, False, chunk_size, self_ids=leave_out)
    else:
        if spec.approximate:
            log.info("search=%r on %s runs the exact torch search", spec.kind, backend)
        engine = ExactKNN(ref, metric, backend)
        qv = q if valid.size == len(q) else q[valid]  # lone queries need no search
        chunks = iter_knn(engine, qv, K, leave_out, chunk_size)
    for start, stop, _, idx in chunks:
        # same-label neighbours; -1 (an approximate index found fewer than K) is never relevant
        rel = (r_codes[idx] == codes_v[start:stop, None]) & (idx >= 0)
        for j, x in enumerate(ks):
            hits[start:stop, j] = rel[:, : min(x, K)].any(axis=1)
        if want_1000:
            n_q = R_v[start:stop] + is_in[valid[start:stop]]  # Roth: class size, query included
            ap1000[start:stop] = average_precision_rows(rel[:, :MAP_AT], n_q)
        if want_map:
            ap[start:stop], rp[start:stop] = _map_r_rows(rel, R_v[start:stop])
    out = {f"recall@{x}": float(hits[:, j].mean()) for j, x in enumerate(ks)}
    if want_1000:
        out["map@1000"] = float(ap1000.sum() / (len(queries) if loo else valid.size))
    if want_map:
        out["map@r"] = float(ap.mean())
        out["r_precision"] = float(rp.mean())
    if spec.recall_queries > 0:
        out["neighbor_recall"] = _measured_recall(engine, q, ref, valid, K, loo, spec, seed, done)
    return out


def _streaming_engine(q, ref, valid, K, loo, how):
    """(index, spec, auto's sample recall or None) over the streamed reference: the spec's, or
    the one ``search="auto"`` picks by measurement (``eval.autotune``; an exact choice is an exact
    index), with the recall it measured on the sample ``neighbor_recall`` draws (same seed, rows);
    ``cached`` = (an ``IndexCache`` or None, the array the reference was read from)."""
    metric, backend, _, spec, seed, _, _, cached = how  # _knn_metrics's
    if spec.kind != "auto":
        cache, source = cached
        if cache is not None:
            return cache.get(source, ref, metric, spec, seed, backend), spec, None
        return ApproxKNN(ref, metric, spec, seed, backend), spec, None
    choice = auto_search(
        ref,
        q,
        K,
        metric,
        ids=valid,
        loo=loo,
        target_recall=float(spec.params["target_recall"]),
        recall_queries=spec.recall_queries,
        seed=seed,
        backend=backend,
    )
    engine = choice.engine or ExactKNN(ref.materialize(), metric, backend)  # None: exact
    return engine, choice.spec, choice.recall


def _reranked(q, ref, valid, K, loo, metric, backend, reranking):
    """The re-ranked lists of the valid queries, as one (start, stop, scores, indices) chunk."""
    if loo:
        D, I = rerank_search(
            q, None, K, spec=reranking, exclude_self=True, metric=metric, device=backend
        )
        D, I = D[valid], I[valid]
    else:
        D, I = rerank_search(q[valid], ref, K, spec=reranking, metric=metric, device=backend)
    yield 0, valid.size, D, I


def _measured_recall(
    engine: ExactKNN,
    q: Any,
    ref: Any,
    valid: np.ndarray,
    K: int,
    loo: bool,
    spec: SearchSpec,
    seed: int,
    done: float | None = None,
) -> float:
    """``neighbor_recall`` on a seeded sample of the (valid) queries (or ``done``, measured
    already); a warning below 0.99."""
    if (nr := done) is None:
        ref_rows = ref if isinstance(ref, Rows) else Rows(ref, "reference", normalize=False)
        nr = neighbor_recall(engine, q, ref_rows, valid, K, loo, spec.recall_queries, seed)
    if nr < 0.99:
        knob = "nprobe" if spec.kind == "ivf" else "efSearch"
        log.warning(
            "search=%r found %.1f%% of the exact neighbours (neighbor_recall %.4f): the "
            "metrics can be off by points; raise %s or use exact search",
            spec.kind,
            100 * nr,
            nr,
            knob,
        )
    return nr


def _map_r_rows(rel: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AP@R and R-precision of each query from its retrieved ranks ``rel`` and R_q ``r``."""
    rel_r = rel & (np.arange(rel.shape[1])[None, :] < r[:, None])  # only the first R_q ranks
    return average_precision_rows(rel_r, r), rel_r.sum(axis=1) / r


def _clustering_metrics(
    x: Any, codes: np.ndarray, seed: int, niter: int, backend: SearchBackend, parts=PARTS
) -> dict[str, float]:
    """NMI / AMI / F1 of a k-means of the queries ``x`` (an array, or streamed ``Rows`` read
    whole: k-means needs every row) against their class ``codes``."""
    from sklearn.metrics import normalized_mutual_info_score

    x = x.materialize() if isinstance(x, Rows) else x
    _, codes = np.unique(codes, return_inverse=True)  # only the classes present among the queries
    codes = codes.reshape(-1)
    assign = kmeans_assign(x, int(codes.max()) + 1, seed, niter, backend)
    out = {"f1": pairwise_f1(codes, assign)} if "f1" in parts else {}
    if "clustering" in parts:
        out["nmi"] = float(normalized_mutual_info_score(codes, assign))
        out["ami"] = adjusted_mutual_info(codes, assign)
    return out
