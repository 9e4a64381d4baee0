"""Retrieval metrics against pytorch-metric-learning 2.9 and a slow loop-based reference.

Oracles:
* PML ``AccuracyCalculator(k="max_bin_count")``: precision_at_1 -> recall@1, r_precision,
  mean_average_precision_at_r -> map@r, NMI, AMI. Its default ``FaissKNN`` is ``IndexFlatL2`` on the
  raw embeddings (= our metric="euclidean"); for metric="cosine" it gets ``IndexFlatIP`` on the very
  float32 array our function searches (``l2_normalize`` of the input).
* ``loop_reference``: per query, all scores in float64, a stable sort (ties -> lower reference
  index), self removed by index, then the textbook formulas. Used on embeddings whose distances are
  exact in float32 (small integers, or unit vectors with +-0.5 entries), so faiss's float32 scores
  equal the float64 ones and ties (lots of them) are real ties for both.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch

from langdml.eval import knn_search, l2_normalize, retrieval_metrics

# These tests assert bit-equality with CPU faiss (and PML on it), so they pin CPU search even on a
# GPU machine where device="auto" would search on the GPU; tests/gpu/test_cuda.py covers the GPU.
knn_search = functools.partial(knn_search, device="cpu")
retrieval_metrics = functools.partial(retrieval_metrics, device="cpu")

pml_ac = pytest.importorskip("pytorch_metric_learning.utils.accuracy_calculator")
pml_inf = pytest.importorskip("pytorch_metric_learning.utils.inference")
faiss = pytest.importorskip("faiss")

KNN = ("recall", "map_r")
PML_KEYS = {
    "precision_at_1": "recall@1",
    "r_precision": "r_precision",
    "mean_average_precision_at_r": "map@r",
}


def pml_metrics(q, ql, ref=None, rl=None, index=None, clustering=False):
    include = tuple(PML_KEYS) + (("NMI", "AMI") if clustering else ())
    knn = pml_inf.FaissKNN(index_init_fn=index) if index is not None else None
    calc = pml_ac.AccuracyCalculator(
        include=include, k="max_bin_count", device=torch.device("cpu"), knn_func=knn
    )
    res = calc.get_accuracy(q, ql, ref, rl, ref_includes_query=False)
    out = {PML_KEYS[key]: v for key, v in res.items() if key in PML_KEYS}
    if clustering:
        out["nmi"], out["ami"] = res["NMI"], res["AMI"]
    return out


def loop_reference(q, ql, ref=None, rl=None, metric="euclidean", ks=(1, 2, 4, 8)):
    loo = ref is None
    ref, rl = (q, ql) if loo else (ref, rl)
    q64, r64 = np.asarray(q, np.float64), np.asarray(ref, np.float64)
    if metric == "cosine":
        q64, r64 = (l2_normalize(np.asarray(x, np.float32)).astype(np.float64) for x in (q, ref))
    hits = {k: [] for k in ks}
    aps, rps = [], []
    for i in range(len(q64)):
        if metric == "cosine":
            key = -(r64 @ q64[i])
        else:
            key = ((r64 - q64[i]) ** 2).sum(axis=1)
        order = np.argsort(key, kind="stable")
        if loo:
            order = order[order != i]
        R = int((rl == ql[i]).sum()) - int(loo)
        if R <= 0:
            continue  # lone query: nothing to retrieve
        rel = rl[order] == ql[i]
        for k in ks:
            hits[k].append(bool(rel[:k].any()))
        top = rel[:R]
        rps.append(top.sum() / R)
        aps.append(sum(top[j] * top[: j + 1].sum() / (j + 1) for j in range(R)) / R)
    out = {f"recall@{k}": float(np.mean(hits[k])) for k in ks}
    out.update({"map@r": float(np.mean(aps)), "r_precision": float(np.mean(rps))})
    return out


def loop_neighbours(q, ref, k, metric, exclude_self):
    q64, r64 = np.asarray(q, np.float64), np.asarray(ref, np.float64)
    rows = []
    for i in range(len(q64)):
        key = -(r64 @ q64[i]) if metric == "cosine" else ((r64 - q64[i]) ** 2).sum(axis=1)
        order = np.argsort(key, kind="stable")
        if exclude_self:
            order = order[order != i]
        rows.append(order[:k])
    return np.array(rows)


def assert_close(ours, ref, keys=None, tol=1e-12):
    for key in keys or ref:
        assert ours[key] == pytest.approx(ref[key], abs=tol, rel=0), key


# ----------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------


def random_data(seed, n=500, d=16, classes=70, singletons=6):
    """Gaussian embeddings, random labels; a few classes of size 1 (lone queries)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    labels[:singletons] = np.arange(1000, 1000 + singletons)
    return rng.standard_normal((n, d)).astype(np.float32), labels


def clustered_data(seed, n_classes=40, per_class=(2, 12), d=24, spread=0.6, singletons=4):
    """Class centres plus noise, uneven class sizes, a few classes of size 1."""
    rng = np.random.default_rng(seed)
    sizes = np.concatenate([rng.integers(*per_class, n_classes), np.ones(singletons, int)])
    labels = np.repeat(np.arange(len(sizes)), sizes)
    centres = rng.standard_normal((len(sizes), d))
    x = centres[labels] + spread * rng.standard_normal((len(labels), d))
    perm = rng.permutation(len(labels))
    return x[perm].astype(np.float32), labels[perm]


def integer_data(seed, n=400, d=6, low=-3, high=4, classes=50):
    """Small integer coordinates: squared distances exact in float32, many exact ties."""
    rng = np.random.default_rng(seed)
    x = rng.integers(low, high, (n, d)).astype(np.float32)
    x[n // 2 : n // 2 + n // 10] = x[: n // 10]  # exact duplicates, mostly with other labels
    labels = rng.integers(0, classes, n)
    labels[:3] = [900, 901, 902]  # singletons
    return x, labels


def half_unit_data(seed, n=400, d=8, classes=40):
    """Unit vectors with four +-0.5 entries: cosines are exact multiples of 1/4 (heavy ties)."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, d), np.float32)
    for row in x:
        cols = rng.choice(d, 4, replace=False)
        row[cols] = rng.choice([-0.5, 0.5], 4)
    labels = rng.integers(0, classes, n)
    labels[:2] = [800, 801]
    return x, labels


# ----------------------------------------------------------------------------------------------
# equality with pytorch-metric-learning
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("make", [random_data, clustered_data])
def test_leave_one_out_matches_pml_euclidean(make, seed):
    x, y = make(seed)
    ours = retrieval_metrics(x, y, metric="euclidean", include=KNN)
    assert_close(ours, pml_metrics(x, y))


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("make", [random_data, clustered_data])
def test_leave_one_out_matches_pml_cosine(make, seed):
    x, y = make(seed)
    ours = retrieval_metrics(x, y, metric="cosine", include=KNN)
    assert_close(ours, pml_metrics(l2_normalize(x), y, index=faiss.IndexFlatIP))


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_separate_reference_matches_pml(metric):
    x, y = clustered_data(3, n_classes=50)
    rng = np.random.default_rng(3)
    is_query = rng.random(len(x)) < 0.3
    q, ql, ref, rl = x[is_query], y[is_query], x[~is_query], y[~is_query]
    ql = ql.copy()
    ql[:3] = 777  # query labels absent from the reference: lone, excluded
    ours = retrieval_metrics(q, ql, ref, rl, metric=metric, include=KNN)
    if metric == "cosine":
        expected = pml_metrics(l2_normalize(q), ql, l2_normalize(ref), rl, index=faiss.IndexFlatIP)
    else:
        expected = pml_metrics(q, ql, ref, rl)
    assert_close(ours, expected)
    assert_close(ours, loop_reference(q, ql, ref, rl, metric), tol=1e-9)


def test_duplicate_embeddings_ties_match_pml_and_loop():
    """Integer grid: hundreds of exact distance ties across labels, duplicates included."""
    x, y = integer_data(0)
    assert len(np.unique(x, axis=0)) < len(x)  # real duplicates present
    ours = retrieval_metrics(x, y, metric="euclidean", include=KNN)
    assert_close(ours, pml_metrics(x, y))  # faiss L2 (k < 100) already ranks ties by index
    assert_close(ours, loop_reference(x, y, metric="euclidean"))


def test_cosine_ties_follow_documented_order():
    """Cosine ties: ranked by ascending reference index (not faiss IndexFlatIP's raw order)."""
    x, y = half_unit_data(0)
    ours = retrieval_metrics(x, y, metric="cosine", include=KNN)
    assert_close(ours, loop_reference(x, y, metric="cosine"))
    # PML with IndexFlatL2 on these exact unit vectors: d^2 = 2 - 2 cos exactly, ties by index.
    assert_close(ours, pml_metrics(x, y))
    ref, rl = half_unit_data(1)
    ours = retrieval_metrics(x, y, ref, rl, metric="cosine", include=KNN)
    assert_close(ours, loop_reference(x, y, ref, rl, metric="cosine"))
    assert_close(ours, pml_metrics(x, y, ref, rl))


def test_singleton_classes_excluded_like_pml():
    x, y = random_data(5, n=60, classes=200, singletons=0)  # mostly classes of size 1
    counts = np.bincount(y)
    assert (counts[y] == 1).sum() > 10 and (counts[y] > 1).sum() > 5
    ours = retrieval_metrics(x, y, metric="euclidean", include=KNN)
    assert_close(ours, pml_metrics(x, y))
    # explicit: points on a line; classes a, c, d have one member each (lone queries)
    x1 = np.array([[0.0], [1.0], [10.0], [11.5], [30.0]], np.float32)
    m = retrieval_metrics(x1, ["a", "b", "b", "c", "d"], metric="euclidean", include=KNN)
    # only the two "b" queries count; each finds the other at rank 2 (a or c is nearer)
    assert m == {
        "recall@1": 0.0,
        "recall@2": 1.0,
        "recall@4": 1.0,
        "recall@8": 1.0,
        "map@r": 0.0,
        "r_precision": 0.0,
    }


def test_clustering_matches_pml_with_its_seed():
    x, y = clustered_data(7, n_classes=15, per_class=(5, 15))
    ours = retrieval_metrics(x, y, metric="euclidean", seed=1234)
    expected = pml_metrics(x, y, clustering=True)
    assert_close(ours, expected, tol=1e-9)
    assert set(ours) == {
        "recall@1",
        "recall@2",
        "recall@4",
        "recall@8",
        "map@r",
        "r_precision",
        "nmi",
        "ami",
    }


# ----------------------------------------------------------------------------------------------
# loop-based reference: recall@k for k > 1, MAP@R, R-precision, neighbour lists
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recall_at_k_matches_loop_reference(seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(-40, 41, (300, 12)).astype(np.float32)  # exact float32 distances, few ties
    y = rng.integers(0, 45, 300)
    ours = retrieval_metrics(x, y, metric="euclidean", include=KNN, recall_ks=(1, 2, 3, 4, 8, 16))
    assert_close(ours, loop_reference(x, y, metric="euclidean", ks=(1, 2, 3, 4, 8, 16)), tol=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_heavy_ties_and_large_k_match_loop_reference(seed):
    """A class of 150 -> k >= 100: faiss's reservoir selection keeps an arbitrary tie subset."""
    x, y = half_unit_data(seed, n=400)
    y = y.copy()
    y[rng_perm(seed, 400)[:150]] = 5000
    ours = retrieval_metrics(x, y, metric="cosine", include=KNN)
    assert_close(ours, loop_reference(x, y, metric="cosine"))
    xi, yi = integer_data(seed, n=400, low=-1, high=2)
    yi = yi.copy()
    yi[rng_perm(seed + 1, 400)[:120]] = 5000
    ours = retrieval_metrics(xi, yi, metric="euclidean", include=KNN)
    assert_close(ours, loop_reference(xi, yi, metric="euclidean"))


def rng_perm(seed, n):
    return np.random.default_rng(seed + 100).permutation(n)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("k", [1, 7, 130])
def test_knn_search_neighbours_in_documented_tie_order(metric, k):
    x, _ = half_unit_data(2) if metric == "cosine" else integer_data(2, low=-1, high=2)
    D, I = knn_search(x, k=k, exclude_self=True, metric=metric)
    np.testing.assert_array_equal(I, loop_neighbours(x, x, k, metric, exclude_self=True))
    ref, _ = half_unit_data(3) if metric == "cosine" else integer_data(3, low=-1, high=2)
    D, I = knn_search(x, ref, k=k, metric=metric)
    np.testing.assert_array_equal(I, loop_neighbours(x, ref, k, metric, exclude_self=False))
    x64, r64 = x.astype(np.float64), ref.astype(np.float64)
    rows = np.arange(len(x))[:, None]
    expected = (
        (x64[rows, :] * r64[I]).sum(-1)
        if metric == "cosine"
        else (((x64[:, None, :] - r64[I]) ** 2).sum(-1))
    )
    np.testing.assert_array_equal(D, expected.astype(np.float32))


def test_exclude_self_is_by_index_so_duplicates_stay():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((30, 8)).astype(np.float32)
    x = np.concatenate([base, base[:5]])  # rows 30..34 duplicate rows 0..4
    D, I = knn_search(x, k=3, exclude_self=True, metric="euclidean")
    assert all(i not in row for i, row in enumerate(I))
    for dup, orig in zip(range(30, 35), range(5), strict=True):
        assert I[orig, 0] == dup and I[dup, 0] == orig
        assert D[orig, 0] == 0 and D[dup, 0] == 0


def test_text_to_image_different_label_sets():
    """Queries: one class-name embedding per class (some without images); reference: images."""
    rng = np.random.default_rng(4)
    n_cls, d = 30, 16
    protos = rng.standard_normal((n_cls + 5, d)).astype(np.float32)
    img_labels = rng.integers(0, n_cls, 400)  # classes n_cls..n_cls+4 have no images
    imgs = protos[img_labels] + 0.9 * rng.standard_normal((400, d)).astype(np.float32)
    names = np.array([f"class {i}" for i in range(n_cls + 5)])
    ours = retrieval_metrics(protos, names, imgs, names[img_labels], metric="cosine", include=KNN)
    expected = loop_reference(protos, np.arange(n_cls + 5), imgs, img_labels, metric="cosine")
    assert_close(ours, expected, tol=1e-9)
    pml = pml_metrics(
        l2_normalize(protos),
        np.arange(n_cls + 5),
        l2_normalize(imgs),
        img_labels,
        index=faiss.IndexFlatIP,
    )
    assert_close(ours, pml)
    # image -> text: each image's nearest class names
    back = retrieval_metrics(
        imgs,
        img_labels,
        protos,
        np.arange(n_cls + 5),
        metric="cosine",
        include=("recall",),
        recall_ks=(1, 5),
    )
    expected = loop_reference(
        imgs, img_labels, protos, np.arange(n_cls + 5), metric="cosine", ks=(1, 5)
    )
    assert_close(back, expected, keys=["recall@1", "recall@5"], tol=1e-12)


def test_recall_with_fewer_neighbours_than_k():
    x = np.array([[0.0], [1.0], [5.0], [6.0]], np.float32)
    y = np.array([0, 1, 1, 0])
    m = retrieval_metrics(x, y, metric="euclidean", include=("recall",))
    # query 0: neighbours 1(1), 2(1), 3(0) -> first hit at rank 3; query 1: 0(0), 2(1) -> rank 2
    # query 2: 3(0), 1(1) -> rank 2; query 3: 2(1), 1(1), 0(0) -> rank 3
    assert m == {"recall@1": 0.0, "recall@2": 0.5, "recall@4": 1.0, "recall@8": 1.0}


# ----------------------------------------------------------------------------------------------
# clustering sanity
# ----------------------------------------------------------------------------------------------


def test_perfectly_separated_clusters_give_nmi_ami_one():
    rng = np.random.default_rng(0)
    centres = 100 * np.eye(3, 10)
    y = np.repeat(np.arange(3), 40)
    x = (centres[y] + 0.01 * rng.standard_normal((120, 10))).astype(np.float32)
    for seed in (0, 1, 2):
        m = retrieval_metrics(x, y, include=("clustering",), seed=seed)
        assert m == {"nmi": pytest.approx(1.0, abs=1e-12), "ami": pytest.approx(1.0, abs=1e-12)}
    m = retrieval_metrics(x, y, metric="euclidean")
    assert m["recall@1"] == 1.0 and m["map@r"] == 1.0 and m["r_precision"] == 1.0


def test_clustering_of_random_embeddings_is_near_chance():
    x, y = random_data(0, n=400, classes=8, singletons=0)
    m = retrieval_metrics(x, y, include=("clustering",), seed=0)
    assert abs(m["ami"]) < 0.05 and 0 <= m["nmi"] < 0.2


def test_clustering_is_seeded():
    x, y = clustered_data(2, n_classes=20, spread=1.5)
    a = retrieval_metrics(x, y, include=("clustering",), seed=3)
    b = retrieval_metrics(x, y, include=("clustering",), seed=3)
    assert a == b


def test_all_queries_lone_gives_nan_with_warning():
    x = np.eye(4, dtype=np.float32)
    with pytest.warns(RuntimeWarning, match="no query"):
        m = retrieval_metrics(x, [0, 1, 2, 3], include=KNN)
    assert all(math.isnan(v) for v in m.values()) and len(m) == 6
