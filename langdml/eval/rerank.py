"""Re-ranking of retrieved neighbours: query expansion and k-reciprocal re-ranking.

``rerank="qe"`` — query expansion. The query is replaced by
``q' = normalise(q + Σ_{i=1..n} w_i g_i)`` over its n nearest reference items g_i, and searched
again. With ``alpha = 0`` every w_i = 1: average query expansion (Chum et al., "Total Recall:
Automatic Query Expansion with a Generative Feature Model for Object Retrieval", ICCV 2007).
With ``alpha > 0`` the weights are w_i = max(cos(q, g_i), 0)^alpha: α-weighted query expansion
(Radenović, Tolias and Chum, "Fine-tuning CNN Image Retrieval with No Human Annotation", TPAMI
2018, which uses α = 3). Defaults: n = 5, alpha = 0 (our choices). Cosine metric only.

``rerank="k_reciprocal"`` — Zhong, Zheng, Cao and Li, "Re-ranking Person Re-identification with
k-reciprocal Encoding", CVPR 2017. Over the set X of all items (queries and reference; in
leave-one-out evaluation the reference alone), with N(p, k) = p and its k nearest items in X
(p counted in, as the authors' released code does):

* R(p, k) = {g ∈ N(p, k) : p ∈ N(g, k)} (k-reciprocal neighbours);
* R*(p, k) = R(p, k) ∪ R(q, ½k) for every q ∈ R(p, k) with |R(p, k) ∩ R(q, ½k)| ≥ ⅔ |R(q, ½k)|
  (½k rounded as ``round(k / 2)``);
* V_p[g] = exp(−d(p, g)) for g ∈ R*(p, k1), else 0, each row scaled to sum 1 (the scaling is the
  authors' released code; the paper writes the bare kernel);
* local query expansion: V_p ← mean of V_g over p and its k2 − 1 nearest items (k2 rows, as
  the authors' code);
* Jaccard distance d_J(p, g) = 1 − Σ_j min(V_p[j], V_g[j]) / Σ_j max(V_p[j], V_g[j]);
* final distance d*(p, g) = (1 − λ) d_J(p, g) + λ d(p, g).

d is the squared Euclidean distance (for ``metric="cosine"`` between L2-normalised embeddings,
i.e. 2 − 2 cos). Defaults are the paper's: k1 = 20, k2 = 6, λ = 0.3. Only each query's
``candidates`` nearest reference items (default 100, at least the k asked for) are re-ordered by
d*, as re-ranking is used in practice at gallery scale; items beyond them keep their order.
The returned scores are −d* (higher is nearer) for k-reciprocal, cosine similarities of the
expanded query for QE.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import sparse

from langdml.errors import LangDMLError
from langdml.eval.knn import as_float32_matrix, check_metric, exact_knn_search, l2_normalize

RERANKS = ("none", "qe", "k_reciprocal")
DEFAULTS: dict[str, dict[str, float]] = {
    "none": {},
    "qe": {"n": 5, "alpha": 0.0},
    "k_reciprocal": {"k1": 20, "k2": 6, "lambda": 0.3, "candidates": 100},
}
_INTEGER = {"n", "k1", "k2", "candidates"}


@dataclass(frozen=True)
class RerankSpec:
    method: str
    params: dict[str, float]

    @property
    def active(self) -> bool:
        return self.method != "none"


def check_rerank(method: Any = "none", params: Mapping[str, Any] | None = None) -> RerankSpec:
    """The validated re-ranking method and its parameters (defaults filled), or one line."""
    if method is None:
        method = "none"
    if method not in RERANKS:
        raise LangDMLError(f"rerank must be one of {list(RERANKS)}, got {method!r}")
    given = dict(params or {})
    unknown = sorted(set(given) - set(DEFAULTS[method]))
    if unknown:
        raise LangDMLError(
            f"rerank {method!r}: unknown parameters {unknown}; expected {sorted(DEFAULTS[method])}"
        )
    out = {**DEFAULTS[method], **given}
    for key, value in out.items():
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
            raise LangDMLError(f"rerank {method!r}: {key} must be a number, got {value!r}")
        if key in _INTEGER and (int(value) != value or value < 1):
            raise LangDMLError(f"rerank {method!r}: {key} must be an integer >= 1, got {value!r}")
    if method == "qe" and out["alpha"] < 0:
        raise LangDMLError(f"rerank 'qe': alpha must be >= 0, got {out['alpha']!r}")
    if method == "k_reciprocal" and not 0 <= out["lambda"] <= 1:
        raise LangDMLError(f"rerank 'k_reciprocal': lambda must be in [0, 1], got {out['lambda']}")
    return RerankSpec(method, {k: (int(v) if k in _INTEGER else float(v)) for k, v in out.items()})


def rerank_search(
    query: Any,
    reference: Any = None,
    k: int = 10,
    *,
    spec: RerankSpec,
    exclude_self: bool = False,
    metric: str = "cosine",
    device: Any = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """``knn_search``'s contract with re-ranking: the k re-ranked reference items of every
    query, ``(scores, indices)``, both (N, k), scores higher = nearer (module docstring).
    ``reference=None`` with ``exclude_self=True`` is leave-one-out within one set."""
    check_metric(metric)
    q = as_float32_matrix(query, "query")
    ref = q if reference is None else as_float32_matrix(reference, "reference")
    if metric == "cosine":
        q, ref = l2_normalize(q), (None if reference is None else l2_normalize(ref))
        ref = q if ref is None else ref
    if spec.method == "qe":
        return _query_expansion(q, ref, k, spec.params, exclude_self, metric, device)
    if spec.method == "k_reciprocal":
        return _k_reciprocal(q, ref, reference is None, k, spec.params, exclude_self, device)
    return exact_knn_search(q, ref, k, exclude_self=exclude_self, metric=metric, device=device)


def _query_expansion(q, ref, k, params, exclude_self, metric, device):
    if metric != "cosine":
        raise LangDMLError("rerank 'qe' needs metric 'cosine' (it averages unit vectors)")
    n = min(int(params["n"]), len(ref) - int(exclude_self))
    sims, idx = exact_knn_search(q, ref, n, exclude_self=exclude_self, device=device)
    if params["alpha"] > 0:
        weights = np.clip(sims, 0.0, None) ** params["alpha"]
    else:
        weights = np.ones_like(sims)
    expanded = l2_normalize(q + np.einsum("qn,qnd->qd", weights, ref[idx]).astype(np.float32))
    if not exclude_self:
        return exact_knn_search(expanded, ref, k, device=device)
    # leave-one-out: the expanded query i still must not retrieve reference row i
    kk = min(k + 1, len(ref))
    scores, found = exact_knn_search(expanded, ref, kk, device=device)
    return _drop_self(scores, found, k)


def _drop_self(scores: np.ndarray, idx: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    is_self = idx == np.arange(len(idx))[:, None]
    is_self[~is_self.any(axis=1), -1] = True
    keep = ~is_self
    return scores[keep].reshape(len(idx), -1)[:, :k], idx[keep].reshape(len(idx), -1)[:, :k]


def _k_reciprocal(q, ref, same_set, k, params, exclude_self, device):
    k1, k2, lam = int(params["k1"]), int(params["k2"]), float(params["lambda"])
    n_q = len(q)
    items = ref if same_set else np.vstack([q, ref])  # X: queries first, then the reference
    offset = 0 if same_set else n_q  # row of reference item j in X
    k1 = min(k1, len(items) - 1)
    _, near = exact_knn_search(items, items, min(k1 + 1, len(items)), metric="euclidean")
    near = _self_first(near)
    V = _encode(items, near, k1)
    if k2 > 1:
        V = _local_expansion(V, near[:, : min(k2, near.shape[1])])
    L = min(max(int(params["candidates"]), k), len(ref) - int(exclude_self))
    _, cand = exact_knn_search(q, ref, L, exclude_self=exclude_self, metric="euclidean")
    final = np.empty(cand.shape, dtype=np.float64)
    for i in range(n_q):
        d_orig = ((ref[cand[i]] - q[i]) ** 2).sum(1)
        final[i] = (1.0 - lam) * _jaccard(V, i, cand[i] + offset) + lam * d_orig
    order = np.argsort(final, axis=1, kind="stable")[:, :k]
    scores = -np.take_along_axis(final, order, 1).astype(np.float32)
    return scores, np.take_along_axis(cand, order, 1)


def _self_first(near: np.ndarray) -> np.ndarray:
    """Rows of a self-search with the item itself at rank 0 (a duplicate may have outranked it)."""
    rows = np.arange(len(near))
    out = near.copy()
    for i in np.nonzero(out[:, 0] != rows)[0]:
        others = [j for j in out[i] if j != i]
        out[i] = [i, *others[: out.shape[1] - 1]]
    return out


def _reciprocal(near: np.ndarray, k: int) -> list[np.ndarray]:
    """R(p, k) for every p: the items of N(p, k) whose own N(·, k) holds p."""
    top = near[:, : k + 1]
    back = (top[top] == np.arange(len(top))[:, None, None]).any(axis=2)
    return [top[p][back[p]] for p in range(len(top))]


def _encode(items: np.ndarray, near: np.ndarray, k1: int) -> sparse.csr_matrix:
    """V (rows sum to 1) from the expanded k-reciprocal sets R*(p, k1)."""
    full = _reciprocal(near, k1)
    half = _reciprocal(near, max(1, int(round(k1 / 2))))
    rows, cols, vals = [], [], []
    for p, r in enumerate(full):
        expanded = set(r.tolist())
        for cand in r:
            rc = half[cand]
            if len(np.intersect1d(rc, r)) >= 2.0 / 3.0 * len(rc):
                expanded.update(rc.tolist())
        idx = np.fromiter(sorted(expanded), dtype=np.int64)
        w = np.exp(-((items[idx] - items[p]) ** 2).sum(1))
        rows.append(np.full(len(idx), p))
        cols.append(idx)
        vals.append(w / w.sum())
    n = len(items)
    return sparse.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)
    )


def _local_expansion(V: sparse.csr_matrix, near: np.ndarray) -> sparse.csr_matrix:
    """V_p ← the mean of V_g over p's k2 nearest items (p included)."""
    n, k2 = near.shape
    avg = sparse.csr_matrix(
        (np.full(near.size, 1.0 / k2), near.ravel(), np.arange(0, near.size + 1, k2)), shape=(n, n)
    )
    return (avg @ V).tocsr()


def _jaccard(V: sparse.csr_matrix, p: int, cand: np.ndarray) -> np.ndarray:
    """d_J(p, g) for each candidate row g of V."""
    vp = V.getrow(p)
    if vp.indices.size == 0:
        return np.ones(len(cand))
    rows = V[cand]
    mins = np.minimum(vp.data[None, :], rows[:, vp.indices].toarray()).sum(1)
    sums = vp.data.sum() + np.asarray(rows.sum(1)).ravel()
    return 1.0 - mins / np.maximum(sums - mins, 1e-12)  # Σ max = Σ a + Σ b − Σ min
