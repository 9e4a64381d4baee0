"""Exact search over embeddings with many identical rows (collapsed classes, repeated images):
the distinct-row path of ``langdml.eval.knn`` against a slow loop reference written from the
documented contract (all scores, a stable sort by score then reference index, the query's own
index removed in leave-one-out, else the last of k + 1), on embeddings whose scores are exact in
float32 (small integers for euclidean, unit vectors with +-0.5 entries for cosine) so that ties
are real ties for faiss and for the reference alike."""

from __future__ import annotations

import numpy as np
import pytest

from langdml.eval import knn as knn_module
from langdml.eval import knn_search, retrieval_metrics
from langdml.eval.duplicates import find_duplicates
from langdml.eval.knn import ExactKNN


def loop_neighbours(q, ref, k, metric, loo):
    """Per query: float64 scores of every reference row, stable-sorted (ties by index)."""
    q64, r64 = np.asarray(q, np.float64), np.asarray(ref, np.float64)
    out_i, out_d = [], []
    for i, row in enumerate(q64):
        if metric == "cosine":  # a zero vector stays zero (cosine 0 to everything)
            unit = r64 / np.maximum(np.linalg.norm(r64, axis=1, keepdims=True), 1e-300)
            score = unit @ (row / max(np.linalg.norm(row), 1e-300))
            order = sorted(range(len(r64)), key=lambda j, s=score: (-s[j], j))
        else:
            score = ((r64 - row) ** 2).sum(axis=1)
            order = sorted(range(len(r64)), key=lambda j, s=score: (s[j], j))
        if loo:
            first = order[: k + 1]
            if i in first:
                first.remove(i)
            else:
                first = first[:k]
        else:
            first = order[:k]
        out_i.append(first)
        out_d.append([score[j] for j in first])
    return np.asarray(out_d), np.asarray(out_i)


def distinct_vectors(metric, m, d, rng):
    if metric == "euclidean":
        return rng.integers(-2, 3, (m, d)).astype(np.float32)
    x = np.zeros((m, d), np.float32)
    for row in x:
        row[rng.choice(d, 4, replace=False)] = rng.choice([-0.5, 0.5], 4)
    return x


def collapsed(metric, seed, m=30, most=25, d=8):
    """``m`` distinct vectors, each copied 1..``most`` times, rows shuffled."""
    rng = np.random.default_rng(seed)
    base = distinct_vectors(metric, m, d, rng)
    copies = rng.integers(1, most + 1, m)
    x = np.repeat(base, copies, axis=0)
    labels = np.repeat(np.arange(m), copies)
    perm = rng.permutation(len(x))
    return np.ascontiguousarray(x[perm]), labels[perm]


def all_identical(metric, seed):
    return np.tile(np.float32([0.5] * 4 + [0] * 4), (120, 1)), None


CASES = {
    "all identical": all_identical,
    "collapsed classes": collapsed,
    "few big groups": lambda metric, seed: collapsed(metric, seed, m=4, most=80),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("loo", [True, False])
def test_neighbours_equal_the_loop_reference(case, metric, loo):
    x, _ = CASES[case](metric, 3)
    assert ExactKNN(x, metric).duplicates is not None  # the distinct-row path is the one tested
    n = len(x)
    for k in sorted({1, 7, 40, n - 1 - loo}):
        D, I = knn_search(x, None if loo else x, k, exclude_self=loo, metric=metric, device="cpu")
        De, Ie = loop_neighbours(x, x, k, metric, loo)
        np.testing.assert_array_equal(I, Ie, err_msg=f"k={k}")
        np.testing.assert_allclose(D, De, atol=1e-5)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_separate_queries_against_a_reference_with_copies(metric):
    ref, _ = collapsed(metric, 5)
    rng = np.random.default_rng(6)
    q = np.concatenate([ref[rng.choice(len(ref), 20)], distinct_vectors(metric, 20, 8, rng)])
    for k in (1, 12, 100):
        D, I = knn_search(q, ref, k, metric=metric, device="cpu")
        De, Ie = loop_neighbours(q, ref, k, metric, loo=False)
        np.testing.assert_array_equal(I, Ie)
        np.testing.assert_allclose(D, De, atol=1e-5)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_the_distinct_row_path_equals_the_full_search(metric, monkeypatch):
    x, y = collapsed(metric, 8, m=60, most=12)
    fast = knn_search(x, None, 30, exclude_self=True, metric=metric, device="cpu")
    fast_m = retrieval_metrics(x, y, metric=metric, device="cpu", include=("recall", "map_r"))
    monkeypatch.setattr(knn_module, "DEDUPE_MIN_SHARE", 2.0)  # never take the distinct rows
    monkeypatch.setattr(knn_module, "DEDUPE_MIN_GROUP", len(x) + 1)
    assert ExactKNN(x, metric).duplicates is None
    full = knn_search(x, None, 30, exclude_self=True, metric=metric, device="cpu")
    np.testing.assert_array_equal(fast[1], full[1])
    np.testing.assert_array_equal(fast[0], full[0])
    assert retrieval_metrics(x, y, metric=metric, device="cpu", include=("recall", "map_r")) == (
        fast_m
    )


def test_find_duplicates_groups_equal_rows_by_first_occurrence():
    x = np.asarray([[1, 2], [3, 4], [1, 2], [5, 6], [3, 4], [1, 2]], np.float32)
    dup = find_duplicates(x)
    np.testing.assert_array_equal(x[dup.first], [[1, 2], [3, 4], [5, 6]])
    np.testing.assert_array_equal(dup.inverse, [0, 1, 0, 2, 1, 0])
    np.testing.assert_array_equal(dup.counts, [3, 2, 1])
    groups = [list(dup.order[dup.starts[g] : dup.starts[g + 1]]) for g in range(dup.m)]
    assert groups == [[0, 2, 5], [1, 4], [3]]
    assert find_duplicates(np.eye(4, dtype=np.float32)) is None  # no copies
    assert find_duplicates(x, min_share=0.9, min_group=4) is None  # 3 copies of 6 rows < 90 %
    assert find_duplicates(x, min_share=0.9, min_group=3) is not None  # but a row 3 times
    # -0.0 and 0.0 have different bits: kept apart (they score alike anyway)
    assert find_duplicates(np.asarray([[0.0], [-0.0]], np.float32)) is None


def test_one_big_group_in_a_large_reference_takes_the_distinct_rows():
    rng = np.random.default_rng(9)
    x = distinct_vectors("euclidean", 2000, 8, rng)
    x = np.unique(x, axis=0)  # distinct rows only ...
    x = np.concatenate([x, np.repeat(x[:1], 40, axis=0)])  # ... and one row 41 times (2 %)
    assert ExactKNN(x, "euclidean").duplicates is not None
    D, I = knn_search(x[:50], x, 45, metric="euclidean", device="cpu")
    De, Ie = loop_neighbours(x[:50], x, 45, "euclidean", loo=False)
    np.testing.assert_array_equal(I, Ie)


def test_a_hash_collision_still_groups_by_the_rows(monkeypatch):
    from langdml.eval import duplicates

    monkeypatch.setattr(duplicates, "_row_hashes", lambda x: np.zeros(len(x), np.uint64))
    x = np.asarray([[1, 2], [3, 4], [1, 2]], np.float32)
    dup = find_duplicates(x)
    np.testing.assert_array_equal(dup.inverse, [0, 1, 0])
    np.testing.assert_array_equal(x[dup.first], [[1, 2], [3, 4]])


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_a_query_tied_with_every_distinct_row(metric):
    """A zero query (cosine 0 to everything) or the origin among unit vectors (euclidean: every
    squared distance 1) ties with every distinct row: the whole reference is one tie group."""
    ref, _ = collapsed("cosine", 11, m=50, most=9)  # unit vectors (+-0.5 entries)
    q = np.concatenate([np.zeros((3, 8), np.float32), ref[:5]])
    for k in (1, 49, 50, 120, len(ref)):
        D, I = knn_search(q, ref, k, metric=metric, device="cpu")
        De, Ie = loop_neighbours(q, ref, k, metric, loo=False)
        np.testing.assert_array_equal(I, Ie, err_msg=f"k={k}")
        np.testing.assert_allclose(D, De, atol=1e-5)
        assert list(I[0]) == list(range(k))  # one tie group: ascending index


def test_rows_sorted_by_class_keep_their_lowest_indices():
    """Copies stored class by class (rows 0-9 one vector, 10-19 the next, ...): the tie group
    of an all-tied query must still give indices 0..k-1, not a few members of many rows."""
    base = distinct_vectors("cosine", 30, 8, np.random.default_rng(12))
    ref = np.repeat(base, 10, axis=0)
    q = np.zeros((2, 8), np.float32)
    D, I = knn_search(q, ref, 25, metric="cosine", device="cpu")
    assert (I == np.arange(25)).all()
