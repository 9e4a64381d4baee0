"""``retrieval_metrics(self_index=...)``: a reference that contains (some of) the queries.

Oracle: ``loop_metrics``, written from the formulas in ``langdml.eval.metrics``' docstring: per
query, float64 squared euclidean distances to every reference row except the one that is the query
itself, a stable sort (equal distances -> lower reference index), R_q = same-label reference rows
minus that row, then Recall@k, R-precision and MAP@R. The embeddings are small integers, so faiss's
float32 distances are exact and the many ties are real ties for both.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from langdml.errors import LangDMLError
from langdml.eval import retrieval_metrics

retrieval_metrics = functools.partial(
    retrieval_metrics, device="cpu", metric="euclidean", include=("recall", "map_r")
)


def loop_metrics(q, ql, ref, rl, self_index, ks=(1, 2, 4, 8)):
    hits = {x: [] for x in ks}
    aps, rps = [], []
    for i in range(len(q)):
        rows = [j for j in range(len(ref)) if j != self_index[i]]
        dist = [float(((q[i].astype(np.float64) - ref[j]) ** 2).sum()) for j in rows]
        order = [rows[t] for t in sorted(range(len(rows)), key=lambda t: (dist[t], rows[t]))]
        rel = [int(rl[j] == ql[i]) for j in order]
        r = sum(int(rl[j] == ql[i]) for j in rows)
        if r == 0:
            continue  # a lone query: nothing to retrieve
        for x in ks:
            hits[x].append(float(any(rel[:x])))
        top = rel[:r]
        rps.append(sum(top) / r)
        aps.append(sum(top[t] * sum(top[: t + 1]) / (t + 1) for t in range(r)) / r)
    out = {f"recall@{x}": float(np.mean(v)) for x, v in hits.items()}
    out.update({"map@r": float(np.mean(aps)), "r_precision": float(np.mean(rps))})
    return out


def _data(seed, n_ref=60, n_q=25, d=4, classes=6):
    rng = np.random.default_rng(seed)
    ref = rng.integers(-2, 3, size=(n_ref, d)).astype(np.float32)
    rl = rng.integers(0, classes, size=n_ref)
    return rng, ref, rl


@pytest.mark.parametrize("seed", range(4))
def test_partly_contained_queries_match_loop(seed):
    rng, ref, rl = _data(seed)
    inside = rng.choice(len(ref), 15, replace=False)
    outside = rng.integers(-2, 3, size=(10, ref.shape[1])).astype(np.float32)
    q = np.concatenate([ref[inside], outside])
    ql = np.concatenate([rl[inside], rng.integers(0, 7, size=10)])  # label 6: absent (lone)
    self_index = np.concatenate([inside, -np.ones(10, dtype=np.int64)])
    got = retrieval_metrics(q, ql, ref, rl, self_index=self_index)
    want = loop_metrics(q, ql, ref, rl, self_index)
    assert got == pytest.approx(want, abs=1e-12)


def test_self_index_changes_the_numbers_it_should():
    rng, ref, rl = _data(7)
    inside = rng.choice(len(ref), 20, replace=False)
    with_self = retrieval_metrics(ref[inside], rl[inside], ref, rl)
    without = retrieval_metrics(ref[inside], rl[inside], ref, rl, self_index=inside)
    assert with_self == pytest.approx(
        loop_metrics(ref[inside], rl[inside], ref, rl, np.full(20, -1)), abs=1e-12
    )
    assert without == pytest.approx(
        loop_metrics(ref[inside], rl[inside], ref, rl, inside), abs=1e-12
    )
    assert without["recall@1"] < with_self["recall@1"]


def test_identity_self_index_is_leave_one_out():
    _, ref, rl = _data(3)
    loo = retrieval_metrics(ref, rl)
    same = retrieval_metrics(ref, rl, ref, rl, self_index=np.arange(len(ref)))
    assert same == loo


def test_minus_one_everywhere_is_a_plain_reference():
    rng, ref, rl = _data(5)
    q = rng.integers(-2, 3, size=(12, ref.shape[1])).astype(np.float32)
    ql = rng.integers(0, 6, size=12)
    plain = retrieval_metrics(q, ql, ref, rl)
    assert retrieval_metrics(q, ql, ref, rl, self_index=np.full(12, -1)) == plain


@pytest.mark.parametrize(
    ("self_index", "message"),
    [
        (np.arange(3), "one entry per query"),
        (np.array([0, 1, 2, 99]), r"self_index\[3\] = 99"),
        (np.array([0, 1, 2, -2]), r"self_index\[3\] = -2"),
        (np.array([0, 1, 1, 3]), "same reference row"),
        (np.array([0.0, 1.0, 2.0, 3.0]), "integer"),
        (np.array([1, 0, 2, 3]), "another label"),
    ],
)
def test_bad_self_index_is_one_clear_line(self_index, message):
    ref = np.eye(5, dtype=np.float32)
    rl = np.array([0, 1, 2, 2, 3])
    with pytest.raises(LangDMLError, match=message):
        retrieval_metrics(ref[:4], rl[:4], ref, rl, self_index=self_index)


def test_self_index_without_reference_is_refused():
    x = np.eye(4, dtype=np.float32)
    with pytest.raises(LangDMLError, match="needs a reference"):
        retrieval_metrics(x, [0, 0, 1, 1], self_index=np.arange(4))


def test_self_index_with_approximate_search_leaves_the_query_out():
    _, ref, rl = _data(11, n_ref=80)
    inside = np.arange(0, 80, 3)
    got = retrieval_metrics(
        ref[inside],
        rl[inside],
        ref,
        rl,
        self_index=inside,
        search="hnsw",
        search_params={"efSearch": 200, "recall_queries": 0},
    )
    assert got["recall@1"] == pytest.approx(
        loop_metrics(ref[inside], rl[inside], ref, rl, inside)["recall@1"], abs=0.1
    )


@pytest.mark.parametrize("self_index", [[-1, -1], [0, -1], [0, 2]])
def test_one_class_gallery_whole_reference_retrieved(self_index):
    # the largest R_q is the whole gallery: a query outside it must still retrieve every row
    # (and a query inside it all but itself)
    ref = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]], dtype=np.float32)
    q = np.array([[0.0, 0.0], [2.0, 0.0]], dtype=np.float32)
    if self_index[1] == -1:
        q[1] = [0.5, 0.0]
    rl, ql = np.zeros(3, dtype=np.int64), np.zeros(2, dtype=np.int64)
    got = retrieval_metrics(q, ql, ref, rl, self_index=np.array(self_index))
    assert got == pytest.approx(loop_metrics(q, ql, ref, rl, self_index), abs=1e-12)
    assert got["map@r"] == 1.0
