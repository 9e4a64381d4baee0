"""Re-ranking against slow loop references written from the published formulas: average / α
query expansion (Chum et al. 2007; Radenović et al. 2018) and k-reciprocal re-ranking (Zhong et
al., CVPR 2017, Eqs. 1-12, with the authors' row-normalised V and N(p, k) counting p)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from langdml.errors import LangDMLError
from langdml.eval import retrieval_metrics
from langdml.eval.rerank import check_rerank, rerank_search


def clustered(n=48, d=8, classes=8, seed=0, spread=0.6):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, d))
    y = np.arange(n) % classes
    x = centres[y] + spread * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), y


def ref_qe(q, ref, n, alpha, k, loo):
    out = []
    for i, qi in enumerate(q):
        sims = ref @ qi
        order = [j for j in np.argsort(-sims, kind="stable") if not (loo and j == i)]
        top = order[:n]
        w = [max(sims[j], 0.0) ** alpha if alpha > 0 else 1.0 for j in top]
        qe = qi + sum(wj * ref[j] for wj, j in zip(w, top))
        qe = qe / np.linalg.norm(qe)
        s2 = ref @ qe
        ranked = [j for j in np.argsort(-s2, kind="stable") if not (loo and j == i)]
        out.append(ranked[:k])
    return np.array(out)


def ref_k_reciprocal(q, ref, k1, k2, lam, k, loo):
    """Dense, set-based: every formula of the paper written out one item at a time."""
    X = ref if loo else np.vstack([q, ref])
    off = 0 if loo else len(q)
    n = len(X)
    dist = np.array([[float(((X[a] - X[b]) ** 2).sum()) for b in range(n)] for a in range(n)])

    def N(p, kk):  # p and its kk nearest items
        others = sorted((j for j in range(n) if j != p), key=lambda j: (dist[p, j], j))
        return [p, *others[:kk]]

    def R(p, kk):
        return {g for g in N(p, kk) if p in N(g, kk)}

    half = int(round(k1 / 2))
    V = np.zeros((n, n))
    for p in range(n):
        rp = R(p, k1)
        star = set(rp)
        for c in rp:
            rc = R(c, half)
            if len(rp & rc) >= 2 / 3 * len(rc):
                star |= rc
        for g in star:
            V[p, g] = math.exp(-dist[p, g])
        V[p] /= V[p].sum()
    Vq = np.array([V[N(p, k2 - 1)].mean(axis=0) for p in range(n)])
    def final(i, j):  # query i is row i of X either way; reference item j is row j + off
        p, g = i, j + off
        jac = 1 - np.minimum(Vq[p], Vq[g]).sum() / np.maximum(Vq[p], Vq[g]).sum()
        return (1 - lam) * jac + lam * float(((q[i] - ref[j]) ** 2).sum())

    out = []
    for i in range(len(q)):
        cands = [j for j in range(len(ref)) if not (loo and j == i)]
        out.append(sorted(cands, key=lambda j: (final(i, j), j))[:k])
    return np.array(out)


@pytest.mark.parametrize("alpha", [0.0, 3.0])
@pytest.mark.parametrize("loo", [True, False])
def test_query_expansion_equals_the_loop_reference(alpha, loo):
    x, _ = clustered()
    q, ref = (x, None) if loo else (x[:12], x[12:])
    spec = check_rerank("qe", {"n": 3, "alpha": alpha})
    _, idx = rerank_search(q, ref, 6, spec=spec, exclude_self=loo)
    expected = ref_qe(q, x if loo else ref, 3, alpha, 6, loo)
    np.testing.assert_array_equal(idx, expected)


@pytest.mark.parametrize("loo", [True, False])
def test_k_reciprocal_equals_the_loop_reference(loo):
    x, _ = clustered(seed=1)
    q, ref = (x, None) if loo else (x[:10], x[10:])
    spec = check_rerank("k_reciprocal", {"k1": 6, "k2": 3, "lambda": 0.3, "candidates": 60})
    scores, idx = rerank_search(q, ref, 8, spec=spec, exclude_self=loo)
    expected = ref_k_reciprocal(q, x if loo else ref, 6, 3, 0.3, 8, loo)
    np.testing.assert_array_equal(idx, expected)
    assert np.all(np.diff(scores, axis=1) <= 1e-7)  # higher = nearer, sorted


def test_lambda_one_is_the_plain_ranking():
    x, _ = clustered(seed=2)
    spec = check_rerank("k_reciprocal", {"lambda": 1.0, "k1": 5, "k2": 2})
    _, idx = rerank_search(x, None, 5, spec=spec, exclude_self=True)
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    np.testing.assert_array_equal(idx, np.argsort(-sims, axis=1, kind="stable")[:, :5])


def test_retrieval_metrics_with_rerank_equal_metrics_of_the_reranked_lists():
    x, y = clustered(n=64, classes=8, seed=3, spread=0.9)
    spec = check_rerank("k_reciprocal", {"k1": 6, "k2": 3})
    _, idx = rerank_search(x, None, 7, spec=spec, exclude_self=True)
    r1 = float(np.mean(y[idx[:, 0]] == y))
    params = {"k1": 6, "k2": 3}
    m = retrieval_metrics(x, y, include=("recall",), rerank="k_reciprocal", rerank_params=params)
    assert m["recall@1"] == pytest.approx(r1)
    # MAP@R over the same re-ranked lists (R = 7 same-class items per query)
    rel = y[idx] == y[:, None]
    ap = [np.sum(rel[i] * np.cumsum(rel[i]) / np.arange(1, 8)) / 7 for i in range(len(x))]
    m2 = retrieval_metrics(x, y, include=("map_r",), rerank="k_reciprocal", rerank_params=params)
    assert m2["map@r"] == pytest.approx(float(np.mean(ap)))


@pytest.mark.parametrize(
    "method,params,needle",
    [
        ("rr", {}, "rerank must be one of"),
        ("qe", {"k1": 3}, "unknown parameters"),
        ("qe", {"n": 0}, "n must be an integer >= 1"),
        ("qe", {"alpha": -1}, "alpha must be >= 0"),
        ("k_reciprocal", {"lambda": 2}, "lambda must be in"),
        ("k_reciprocal", {"k1": "x"}, "k1 must be a number"),
    ],
)
def test_bad_rerank_settings_are_one_line(method, params, needle):
    with pytest.raises(LangDMLError, match=needle) as info:
        check_rerank(method, params)
    assert "\n" not in str(info.value)
