"""The torch exact-search backend (used on CUDA without faiss-gpu), run here on the CPU: same
neighbours, tie order, leave-one-out and metrics as CPU faiss; device resolution and fallbacks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from langdml.errors import LangDMLError
from langdml.eval import SearchBackend, knn_search, resolve_backend, retrieval_metrics
from langdml.eval.knn import CPU, ExactKNN, TorchFlatIndex

faiss = pytest.importorskip("faiss")
TORCH_CPU = SearchBackend("torch", torch_device="cpu")
KNN = ("recall", "map_r")


def clustered(n=3000, d=16, classes=300, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.standard_normal((classes, d)).astype(np.float32)[y]
    x += 0.8 * rng.standard_normal((n, d)).astype(np.float32)
    return x, y


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_torch_backend_finds_the_faiss_neighbours(metric):
    x, _ = clustered()
    Df, If = knn_search(x, k=12, metric=metric, device="cpu", exclude_self=True)
    Dt, It = knn_search(x, k=12, metric=metric, device=TORCH_CPU, exclude_self=True)
    # Different BLAS kernels round differently; only near-tied neighbours may swap.
    np.testing.assert_allclose(Dt, Df, rtol=1e-5, atol=1e-5)
    assert (It == If).mean() > 0.999
    assert not (It == np.arange(len(x))[:, None]).any()  # leave-one-out by index


def test_small_blocks_find_the_same_neighbours_as_one_block():
    x, _ = clustered(n=700)
    ref = x / np.linalg.norm(x, axis=1, keepdims=True)
    one = TorchFlatIndex(ref, "cosine", "cpu").search(ref, 9)
    tiny = TorchFlatIndex(ref, "cosine", "cpu", block_bytes=4 * len(ref) * 13)  # 13 rows a block
    assert tiny.rows == 13
    got = tiny.search(ref, 9)
    # the matmul shape changes with the block, so scores may differ in the last bit
    np.testing.assert_allclose(got[0], one[0], rtol=0, atol=1e-6)
    assert (got[1] == one[1]).mean() > 0.999


def test_euclidean_scores_are_squared_distances_clamped_at_zero():
    x, _ = clustered(n=200)
    x[7] = x[3]  # an exact duplicate: distance 0, never a negative rounding residue
    D, I = TorchFlatIndex(x, "euclidean", "cpu").search(x, 3)
    brute = ((x[:, None, :].astype(np.float64) - x[None, :, :]) ** 2).sum(-1)
    np.testing.assert_allclose(D, np.sort(brute, axis=1)[:, :3], rtol=1e-4, atol=1e-4)
    assert D.min() >= 0 and D[3, 0] == 0 and D[7, 0] == 0


def test_ties_follow_the_documented_order_on_the_torch_backend():
    # Ten identical rows: every query ties ten ways; ranks must be by ascending index, and a tie
    # group straddling the cut-off must be resolved the same way as on faiss.
    base = np.random.default_rng(1).standard_normal((30, 6)).astype(np.float32)
    x = np.concatenate([np.repeat(base[:1], 10, axis=0), base[1:]])
    for metric in ("cosine", "euclidean"):
        Df, If = knn_search(x, k=4, metric=metric, device="cpu")
        Dt, It = knn_search(x, k=4, metric=metric, device=TORCH_CPU)
        np.testing.assert_array_equal(It[:10], If[:10])
        np.testing.assert_array_equal(It[:10], np.tile(np.arange(4), (10, 1)))
        np.testing.assert_allclose(Dt, Df, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_torch_backend_metrics_equal_faiss_metrics(metric):
    x, y = clustered(seed=3)
    a = retrieval_metrics(x, y, metric=metric, include=KNN, device="cpu")
    b = retrieval_metrics(x, y, metric=metric, include=KNN, device=TORCH_CPU)
    assert b == pytest.approx(a, abs=2e-3)
    # a separate reference (text-to-image style) goes through the same backend
    a = retrieval_metrics(
        x[:500], y[:500], x[500:], y[500:], metric=metric, device="cpu", include=KNN
    )
    b = retrieval_metrics(
        x[:500], y[:500], x[500:], y[500:], metric=metric, device=TORCH_CPU, include=KNN
    )
    assert b == pytest.approx(a, abs=2e-3)


def test_torch_tensor_input_on_the_torch_backend():
    x, y = clustered(n=500)
    a = retrieval_metrics(torch.from_numpy(x).double(), y, device=TORCH_CPU, include=KNN)
    assert a == retrieval_metrics(x, y, device=TORCH_CPU, include=KNN)


def test_device_resolution_without_a_gpu(monkeypatch):
    assert resolve_backend("cpu") == CPU
    assert resolve_backend(torch.device("cpu")) == CPU
    assert resolve_backend(TORCH_CPU) is TORCH_CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("langdml.eval.knn._faiss_gpu_count", lambda: 0)
    for device in ("cuda", "cuda:1", "auto", None):
        assert resolve_backend(device) == CPU


def test_cuda_without_faiss_gpu_uses_torch_on_that_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr("langdml.eval.knn._faiss_gpu_count", lambda: 0)
    assert resolve_backend("cuda:1") == SearchBackend("torch", 1, "cuda:1")
    assert resolve_backend("auto") == SearchBackend("torch", 0, "cuda:0")
    assert resolve_backend("cuda:2") == CPU  # no such GPU: CPU faiss, no error
    monkeypatch.setattr("langdml.eval.knn._faiss_gpu_count", lambda: 2)
    assert resolve_backend("cuda:1") == SearchBackend("faiss-gpu", 1)
    assert str(resolve_backend("cuda")) == "faiss GPU 0"


def test_bad_backend_and_device_are_one_line_errors():
    x, y = clustered(n=100)
    for bad, match in ((SearchBackend("annoy"), "kind must be"), ("gpu0", "device must be")):
        with pytest.raises(LangDMLError, match=match) as info:
            retrieval_metrics(x, y, device=bad)
        assert "\n" not in str(info.value)


def test_exact_knn_reports_where_it_runs():
    x, _ = clustered(n=100)
    assert not ExactKNN(x, "cosine", CPU).on_gpu
    assert not ExactKNN(x, "cosine", TORCH_CPU).on_gpu
    assert ExactKNN(x, "cosine", TORCH_CPU).cpu_index is None  # no faiss copy of the reference


# ----------------------------------------------------------------------------------------------
# k-means on the torch backend
# ----------------------------------------------------------------------------------------------


def _loop_lloyd(x, init, niter):
    """Plain-python Lloyd iterations (no empty clusters arise in the data used with it)."""
    c = init.astype(np.float64).copy()
    for _ in range(niter + 1):
        assign = [int(np.argmin([((row - cj) ** 2).sum() for cj in c])) for row in x]
        if _ == niter:
            return np.array(assign)
        for j in range(len(c)):
            members = [row for row, a in zip(x, assign, strict=True) if a == j]
            assert members, "the reference does not handle empty clusters"
            c[j] = np.mean(members, axis=0)


def test_torch_kmeans_equals_a_loop_reference():
    from langdml.eval.kmeans import torch_kmeans_assign

    x, _ = clustered(n=120, d=4, classes=6, seed=4)
    init = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(7))[:6].numpy()]
    for niter in (0, 1, 5):
        got = torch_kmeans_assign(x, 6, seed=7, niter=niter)
        np.testing.assert_array_equal(got, _loop_lloyd(x, init, niter))


def test_torch_kmeans_clustering_metrics_agree_with_faiss():
    x, y = clustered(n=2000, d=16, classes=40, seed=5)
    a = retrieval_metrics(x, y, include=("clustering",), device="cpu", seed=1)
    b = retrieval_metrics(x, y, include=("clustering",), device=TORCH_CPU, seed=1)
    assert abs(a["nmi"] - b["nmi"]) < 0.03 and abs(a["ami"] - b["ami"]) < 0.05
    # well-separated classes: both recover them exactly
    sep = np.repeat(np.eye(8, dtype=np.float32) * 10, 30, axis=0)
    sep += 0.01 * np.random.default_rng(0).standard_normal(sep.shape).astype(np.float32)
    labels = np.repeat(np.arange(8), 30)
    m = retrieval_metrics(sep, labels, include=("clustering",), device=TORCH_CPU, seed=3)
    assert m["nmi"] == pytest.approx(1.0) and m["ami"] == pytest.approx(1.0)


def test_torch_kmeans_refills_empty_clusters_and_is_seeded():
    from langdml.eval.kmeans import torch_kmeans_assign

    base = np.random.default_rng(2).standard_normal((10, 5)).astype(np.float32)
    x = np.repeat(base, 5, axis=0)  # 10 distinct points, 15 clusters: some must start empty
    a = torch_kmeans_assign(x, 15, seed=1, niter=10)
    assert a.shape == (50,) and a.min() >= 0 and a.max() < 15
    np.testing.assert_array_equal(a, torch_kmeans_assign(x, 15, seed=1, niter=10))
    # copies of one point always share a cluster
    assert all(len(set(a[i * 5 : i * 5 + 5])) == 1 for i in range(10))
    with pytest.raises(ValueError, match="n_clusters"):
        torch_kmeans_assign(x, 51)
