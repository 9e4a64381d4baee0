"""retrieval_metrics / knn_search: input handling, validation, chunking, devices, AMI."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_mutual_info_score

from langdml.errors import LangDMLError
from langdml.eval import (
    adjusted_mutual_info,
    knn_search,
    l2_normalize,
    resolve_backend,
    retrieval_metrics,
)
from langdml.eval.knn import chunk_bounds

# These tests assert bit-equality with CPU faiss (and PML on it), so they pin CPU search even on a
# GPU machine where device="auto" would search on the GPU; tests/gpu/test_cuda.py covers the GPU.
knn_search = functools.partial(knn_search, device="cpu")
retrieval_metrics = functools.partial(retrieval_metrics, device="cpu")

faiss = pytest.importorskip("faiss")
KNN = ("recall", "map_r")


def data(n=200, d=8, classes=20, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)).astype(np.float32), rng.integers(0, classes, n)


def one_line_error(fn, *args, match, **kwargs):
    with pytest.raises(LangDMLError, match=match) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg and isinstance(info.value, ValueError)
    return msg


# ----------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------


def test_mismatched_lengths():
    x, y = data()
    msg = one_line_error(retrieval_metrics, x, y[:-1], match="labels has 199 labels")
    assert "200 rows" in msg
    one_line_error(retrieval_metrics, x, y, x[:50], y[:49], match="reference_labels has 49")


def test_non_2d_embeddings():
    x, y = data()
    one_line_error(retrieval_metrics, x[:, 0], y, match=r"2-D array.*shape \(200,\)")
    one_line_error(retrieval_metrics, x[None], y, match=r"shape \(1, 200, 8\)")
    one_line_error(knn_search, x[0], k=1, match="query must be a 2-D")
    one_line_error(retrieval_metrics, np.array([["a", "b"]] * 3), [0, 0, 1], match="numeric")


def test_nan_and_inf():
    x, y = data()
    x[17, 3] = np.nan
    one_line_error(retrieval_metrics, x, y, match="embeddings contains NaN.*first at row 17")
    x2, _ = data()
    ref = x2.copy()
    ref[5, 0] = np.inf
    one_line_error(retrieval_metrics, x2, y, ref, y, match="reference contains NaN or infinite")
    one_line_error(retrieval_metrics, x2, np.where(y > 3, y, np.nan), match="NaN or infinite lab")


def test_dimension_mismatch():
    x, y = data()
    one_line_error(retrieval_metrics, x, y, x[:, :4], y, match="dimension 8 but reference has 4")
    one_line_error(knn_search, x, x[:, :5], k=2, match="dimensions differ: 8 vs 5")


def test_empty_input():
    one_line_error(retrieval_metrics, np.zeros((0, 8), np.float32), [], match="empty")
    one_line_error(retrieval_metrics, np.zeros((3, 0), np.float32), [0, 0, 1], match="empty")
    x, y = data()
    one_line_error(retrieval_metrics, x, y, np.zeros((0, 8)), [], match="reference is empty")


def test_bad_arguments():
    x, y = data()
    one_line_error(retrieval_metrics, x, y, x, match="reference_labels is missing")
    one_line_error(retrieval_metrics, x, y, reference_labels=y, match="reference is missing")
    one_line_error(retrieval_metrics, x, y, metric="dot", match="metric must be one of")
    one_line_error(retrieval_metrics, x, y, include=("recall", "mAP"), match="include must be")
    one_line_error(retrieval_metrics, x, y, include=(), match="include must be")
    one_line_error(retrieval_metrics, x, y, recall_ks=(1, 0), match="recall_ks must be positive")
    one_line_error(retrieval_metrics, x, y, k=0, match="k must be a positive integer")
    one_line_error(retrieval_metrics, x, y, k=4, include=KNN, match="smaller than the largest cl")
    one_line_error(retrieval_metrics, x, y, k=500, include=KNN, match="k=500 exceeds the 199")
    one_line_error(retrieval_metrics, x, y, k=5, include=("recall",), match="largest recall k")
    one_line_error(retrieval_metrics, x, y, device="gpu0", match="device must be")
    one_line_error(retrieval_metrics, x, y, seed=1.5, match="seed must be an integer")
    names = np.array([f"c{i}" for i in y])
    one_line_error(retrieval_metrics, x, y, x, names, match="cannot be compared")
    mixed = np.array([1, "a", 2.0], dtype=object)
    one_line_error(retrieval_metrics, x[:3], mixed, match="labels cannot be sorted into classes")
    one_line_error(knn_search, x, k=200, exclude_self=True, match=r"k must be .* \[1, 199\]")
    one_line_error(knn_search, x, x[:10], k=2, exclude_self=True, match="exclude_self needs")


# ----------------------------------------------------------------------------------------------
# accepted inputs
# ----------------------------------------------------------------------------------------------


def test_torch_and_numpy_give_identical_results():
    x, y = data(seed=1)
    expected = retrieval_metrics(x, y, include=KNN)
    t = torch.from_numpy(x).double().requires_grad_(True)
    assert retrieval_metrics(t, torch.from_numpy(y), include=KNN) == expected
    assert retrieval_metrics(x.tolist(), y.tolist(), include=KNN) == expected
    assert retrieval_metrics(x, y[:, None], include=KNN) == expected  # (N, 1) labels
    half = torch.from_numpy(x).half()
    assert retrieval_metrics(half, y, include=KNN) == retrieval_metrics(
        half.float().numpy(), y, include=KNN
    )


def test_string_labels_equal_integer_labels():
    x, y = data(seed=2)
    names = np.array([f"class {i}" for i in y])
    assert retrieval_metrics(x, names, seed=3) == retrieval_metrics(x, y, seed=3)


def test_include_selects_keys():
    x, y = data()
    assert set(retrieval_metrics(x, y, include=("recall",))) == {
        "recall@1",
        "recall@2",
        "recall@4",
        "recall@8",
    }
    assert set(retrieval_metrics(x, y, include="map_r")) == {"map@r", "r_precision"}
    assert set(retrieval_metrics(x, y, include=("clustering",))) == {"nmi", "ami"}
    m = retrieval_metrics(x, y, include=("recall",), recall_ks=(1, 10, 100))
    assert set(m) == {"recall@1", "recall@10", "recall@100"}
    assert m["recall@1"] <= m["recall@10"] <= m["recall@100"] <= 1.0
    assert all(isinstance(v, float) for v in retrieval_metrics(x, y).values())


def test_explicit_k_gives_same_numbers():
    x, y = data()
    assert retrieval_metrics(x, y, include=KNN, k=60) == retrieval_metrics(x, y, include=KNN)


def test_cosine_ignores_scale_euclidean_does_not():
    x, y = data(seed=4)
    scale = np.random.default_rng(0).uniform(0.1, 10, (len(x), 1)).astype(np.float32)
    cos = retrieval_metrics(x, y, include=KNN)
    assert retrieval_metrics(x * scale, y, include=KNN) == pytest.approx(cos, abs=1e-12)
    assert retrieval_metrics(l2_normalize(x) * scale, y, metric="euclidean", include=KNN) != cos


# ----------------------------------------------------------------------------------------------
# chunking and devices
# ----------------------------------------------------------------------------------------------


def test_chunk_bounds_align_to_faiss_blocks():
    block = faiss.cvar.distance_compute_blas_query_bs
    assert chunk_bounds(100, 10, 8, chunk_size=7) == [(0, 100)]
    b = chunk_bounds(3 * block + 5000, 10, 64, chunk_size=block + 1)
    assert b == [
        (0, block),
        (block, 2 * block),
        (2 * block, 3 * block),
        (3 * block, 3 * block + 5000),
    ]
    # a tail too small for faiss's BLAS path is merged into the previous chunk
    assert chunk_bounds(2 * block + 10, 10, 64, chunk_size=block)[-1] == (block, 2 * block + 10)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_results_do_not_depend_on_chunk_size(metric):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((9000, 32)).astype(np.float32)
    D1, I1 = knn_search(x, k=5, metric=metric, chunk_size=1)
    D2, I2 = knn_search(x, k=5, metric=metric)
    np.testing.assert_array_equal(I1, I2)
    np.testing.assert_array_equal(D1, D2)
    # ... and equal one big faiss search over all queries (what PML's FaissKNN does)
    xs = l2_normalize(x) if metric == "cosine" else x
    index = faiss.IndexFlatIP(32) if metric == "cosine" else faiss.IndexFlatL2(32)
    index.add(xs)
    D3, I3 = index.search(xs, 5)
    np.testing.assert_array_equal(I1, I3)
    np.testing.assert_array_equal(D1, D3)
    y = rng.integers(0, 1500, 9000)
    assert retrieval_metrics(x, y, metric=metric, include=KNN, chunk_size=100) == (
        retrieval_metrics(x, y, metric=metric, include=KNN)
    )


def test_cuda_request_falls_back_to_cpu_faiss():
    x, y = data()
    expected = retrieval_metrics(x, y, device="cpu", seed=1)
    for device in ("cuda", "cuda:0", "auto", torch.device("cpu")):
        if resolve_backend(device).kind == "faiss":  # no usable GPU: exactly the CPU result
            assert retrieval_metrics(x, y, device=device, seed=1) == expected
        else:  # a GPU (faiss or torch): same neighbours up to float rounding
            got = retrieval_metrics(x, y, device=device, seed=1, include=KNN)
            assert got == pytest.approx({k: expected[k] for k in got}, abs=0.02)


# ----------------------------------------------------------------------------------------------
# adjusted mutual information
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n,classes,clusters", [(50, 5, 5), (400, 30, 45), (3000, 500, 480), (2000, 2, 300)]
)
def test_ami_equals_sklearn(n, classes, clusters):
    rng = np.random.default_rng(n)
    a = rng.integers(0, classes, n)
    b = np.where(rng.random(n) < 0.5, a % clusters, rng.integers(0, clusters, n))
    assert adjusted_mutual_info(a, b) == pytest.approx(
        adjusted_mutual_info_score(a, b), rel=1e-9, abs=1e-12
    )


def test_ami_limit_cases_equal_sklearn():
    cases = [
        ([0, 0, 0], [1, 1, 1]),
        ([0, 1, 2], [0, 0, 0]),
        ([0, 0, 1, 1], [5, 5, 7, 7]),
        ([0, 1, 2, 3], [3, 2, 1, 0]),
        ([0, 0, 1, 1], [0, 1, 0, 1]),
    ]
    for a, b in cases:
        assert adjusted_mutual_info(a, b) == pytest.approx(adjusted_mutual_info_score(a, b))
