"""Approximate search (langdml.eval.ann): IVF / HNSW equal exact search when they scan
everything, neighbor_recall, one-line parameter errors, memory-mapped input, config and CLI."""

from __future__ import annotations

import functools
import logging
import tracemalloc

import numpy as np
import pytest
import torch

from langdml.errors import ConfigError, LangDMLError
from langdml.eval import SearchBackend, ann, knn_search, retrieval_metrics
from langdml.eval.ann import ApproxKNN, Rows, check_search, neighbor_recall

faiss = pytest.importorskip("faiss")
knn_search = functools.partial(knn_search, device="cpu")
retrieval_metrics = functools.partial(retrieval_metrics, device="cpu")
KNN = ("recall", "map_r")
EXHAUSTIVE = {"ivf": {"nlist": 16, "nprobe": 16}, "hnsw": {"efSearch": 4000}}


def clustered(n=2000, d=16, classes=200, seed=0, noise=0.8):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.standard_normal((classes, d)).astype(np.float32)[y]
    x += noise * rng.standard_normal((n, d)).astype(np.float32)
    return x, y


def without_recall(m: dict) -> dict:
    return {k: v for k, v in m.items() if k != "neighbor_recall"}


def one_line_error(fn, *args, match, exc=LangDMLError, **kwargs):
    with pytest.raises(exc, match=match) as info:
        fn(*args, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


# ----------------------------------------------------------------------------------------------
# approximate == exact when the index scans everything
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("search", ["ivf", "hnsw"])
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_exhaustive_approximate_metrics_equal_exact(search, metric):
    x, y = clustered(seed=1)
    exact = retrieval_metrics(x, y, metric=metric, include=KNN)
    got = retrieval_metrics(
        x, y, metric=metric, include=KNN, search=search, search_params=EXHAUSTIVE[search]
    )
    assert without_recall(got) == exact  # identical numbers, not just close
    assert got["neighbor_recall"] == 1.0
    # separate reference (no leave-one-out)
    exact = retrieval_metrics(x[:400], y[:400], x[400:], y[400:], metric=metric, include=KNN)
    got = retrieval_metrics(
        x[:400],
        y[:400],
        x[400:],
        y[400:],
        metric=metric,
        include=KNN,
        search=search,
        search_params=EXHAUSTIVE[search],
    )
    assert without_recall(got) == exact and got["neighbor_recall"] == 1.0


@pytest.mark.parametrize("search", ["ivf", "hnsw"])
def test_exhaustive_approximate_neighbours_equal_exact_with_ties_and_duplicates(search):
    x, _ = clustered(n=600, seed=2)
    x[10:20] = x[5]  # an 11-way exact tie: ranked by index, self dropped by index
    for metric in ("cosine", "euclidean"):
        De, Ie = knn_search(x, k=12, metric=metric, exclude_self=True)
        Da, Ia = knn_search(
            x,
            k=12,
            metric=metric,
            exclude_self=True,
            search=search,
            search_params=EXHAUSTIVE[search],
        )
        np.testing.assert_array_equal(Ia, Ie)
        np.testing.assert_allclose(Da, De, rtol=1e-5, atol=1e-5)
        assert not (Ia == np.arange(len(x))[:, None]).any()
        assert list(Ia[5, :10]) == list(range(10, 20))  # its duplicates, ascending index


def test_exclude_self_with_a_separate_reference_is_by_index():
    x, _ = clustered(n=500, seed=3)
    q = x[:100]
    De, Ie = knn_search(q, x, k=5, exclude_self=True)
    Da, Ia = knn_search(
        q, x, k=5, exclude_self=True, search="ivf", search_params={"nlist": 8, "nprobe": 8}
    )
    np.testing.assert_array_equal(Ia, Ie)


def test_ivf_is_deterministic_for_a_seed():
    x, y = clustered(n=3000, d=32, classes=300, seed=4, noise=1.5)
    params = {"nlist": 40, "nprobe": 3}
    a = retrieval_metrics(x, y, include=KNN, search="ivf", search_params=params, seed=7)
    b = retrieval_metrics(x, y, include=KNN, search="ivf", search_params=params, seed=7)
    assert a == b


def test_rows_an_index_cannot_fill_are_padded_and_never_relevant():
    # 40 cells, one probed: most cells hold fewer than k + 1 items, so rows end in -1.
    x, y = clustered(n=300, d=8, classes=5, seed=5)
    D, I = knn_search(
        x, k=30, exclude_self=True, search="ivf", search_params={"nlist": 40, "nprobe": 1}
    )
    assert (I == -1).any() and (I.shape == (300, 30))
    pad = I == -1
    assert (np.diff(pad.astype(int), axis=1) >= 0).all()  # padding only at the end of a row
    real = ~pad
    assert (I[real] != np.repeat(np.arange(300), 30).reshape(300, 30)[real]).all()
    m = retrieval_metrics(x, y, include=KNN, search="ivf", search_params={"nlist": 40, "nprobe": 1})
    exact = retrieval_metrics(x, y, include=KNN)
    assert all(0 <= v <= 1 for v in m.values())
    assert m["map@r"] < exact["map@r"] and m["neighbor_recall"] < 1


# ----------------------------------------------------------------------------------------------
# neighbor_recall
# ----------------------------------------------------------------------------------------------


def test_neighbor_recall_is_one_for_exact_search_and_absent_by_default():
    x, y = clustered(seed=6)
    assert "neighbor_recall" not in retrieval_metrics(x, y, include=KNN)
    for metric in ("cosine", "euclidean"):
        m = retrieval_metrics(
            x, y, metric=metric, include=KNN, search_params={"recall_queries": 500}
        )
        assert m["neighbor_recall"] == 1.0
    m = retrieval_metrics(x[:300], y[:300], x, y, include=KNN, search_params={"recall_queries": 50})
    assert m["neighbor_recall"] == 1.0


def test_neighbor_recall_of_a_coarse_index_is_measured_below_one(caplog):
    # isotropic noise: few cells probed miss many true neighbours
    x, y = clustered(n=4000, d=64, classes=400, seed=7, noise=1.5)
    with caplog.at_level(logging.WARNING, logger="langdml.eval.metrics"):
        coarse = retrieval_metrics(
            x, y, include=KNN, search="ivf", search_params={"nlist": 64, "nprobe": 2}
        )
    assert f"neighbor_recall {coarse['neighbor_recall']:.4f}" in caplog.text
    assert "raise nprobe" in caplog.text
    finer = retrieval_metrics(
        x, y, include=KNN, search="ivf", search_params={"nlist": 64, "nprobe": 16}
    )
    assert 0 < coarse["neighbor_recall"] < finer["neighbor_recall"] < 1
    assert "neighbor_recall" in retrieval_metrics(x, y, include=KNN, search="hnsw")


def test_neighbor_recall_counts_found_exact_neighbours_on_the_sample():
    x, y = clustered(n=1500, d=32, classes=150, seed=8, noise=1.5)
    rows = Rows(x, "x", normalize=True)
    engine = ApproxKNN(rows, "cosine", check_search("ivf", {"nlist": 30, "nprobe": 2}))
    ids = np.arange(len(x))
    got = neighbor_recall(engine, rows, rows, ids, 10, True, n_queries=len(x))
    # by hand: all queries, exact neighbours from knn_search, set overlap
    _, Ie = knn_search(x, k=10, exclude_self=True)
    _, Ia = knn_search(
        x, k=10, exclude_self=True, search="ivf", search_params={"nlist": 30, "nprobe": 2}
    )
    by_hand = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(Ia, Ie, strict=True)])
    assert got == pytest.approx(by_hand, abs=1e-3)
    # a seeded sample estimates it; the same seed gives the same number
    part = neighbor_recall(engine, rows, rows, ids, 10, True, n_queries=500, seed=3)
    assert part == neighbor_recall(engine, rows, rows, ids, 10, True, n_queries=500, seed=3)
    assert abs(part - by_hand) < 0.05


def test_torch_backend_runs_the_exact_search_and_says_so():
    x, y = clustered(seed=9)
    exact = retrieval_metrics(x, y, include=KNN)
    got = retrieval_metrics(
        x,
        y,
        include=KNN,
        search="ivf",
        search_params={"nprobe": 1},
        device=SearchBackend("torch", torch_device="cpu"),
    )
    assert without_recall(got) == pytest.approx(exact, abs=2e-3)
    assert got["neighbor_recall"] > 0.999


# ----------------------------------------------------------------------------------------------
# bad parameters: one line naming the value and what was expected
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("search", "params", "match"),
    [
        ("annoy", None, r"search must be one of exact, ivf, hnsw, auto; got 'annoy'"),
        ("ivf", {"nprobes": 8}, r"unknown key 'nprobes' for search='ivf'; expected any of nlist"),
        ("hnsw", {"nprobe": 8}, r"unknown key 'nprobe' for search='hnsw'.*efSearch"),
        ("exact", {"nprobe": 8}, r"unknown key 'nprobe' for search='exact'.*recall_queries"),
        ("ivf", {"nprobe": 0}, r"search_params\['nprobe'\] must be an integer >= 1; got 0"),
        ("ivf", {"nprobe": -3}, r"got -3"),
        ("ivf", {"nprobe": 2.5}, r"must be an integer >= 1; got 2.5"),
        ("ivf", {"nprobe": "8"}, r"must be an integer >= 1; got '8'"),
        ("ivf", {"nprobe": True}, r"got True"),
        ("hnsw", {"M": 1}, r"search_params\['M'\] must be an integer >= 2; got 1"),
        (
            "ivf",
            {"nlist": 10, "nprobe": 11},
            r"nprobe'\]=11 exceeds nlist=10; expected 1 <= nprobe",
        ),
        ("ivf", {"nlist": 10, "train_size": 5}, r"train_size'\]=5 is below nlist=10"),
        ("ivf", {"recall_queries": -1}, r"recall_queries'\] must be an integer >= 0"),
        ("ivf", [("nprobe", 8)], r"search_params must be a mapping"),
    ],
)
def test_bad_search_parameters_are_one_line(search, params, match):
    x, y = clustered(n=300)
    one_line_error(check_search, search, params, match=match)
    one_line_error(
        retrieval_metrics, x, y, include=KNN, search=search, search_params=params, match=match
    )


def test_parameters_checked_against_the_data_size():
    x, y = clustered(n=300)  # default nlist = round(4 * sqrt(300)) = 69
    msg = one_line_error(
        retrieval_metrics,
        x,
        y,
        include=KNN,
        search="ivf",
        search_params={"nprobe": 70},
        match="nprobe'\\]=70 exceeds nlist=69",
    )
    assert "default" in msg and "N=300" in msg
    one_line_error(
        retrieval_metrics,
        x,
        y,
        include=KNN,
        search="ivf",
        search_params={"nlist": 301},
        match="nlist'\\]=301 exceeds the 300 reference",
    )


# ----------------------------------------------------------------------------------------------
# memory-mapped input: read a block at a time, never copied whole
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "metric", "search"),
    [("float32", "cosine", "ivf"), ("float16", "euclidean", "ivf"), ("float32", "cosine", "hnsw")],
)
def test_memmap_input_gives_the_in_memory_numbers_without_a_full_copy(
    tmp_path, monkeypatch, dtype, metric, search
):
    x, y = clustered(n=30_000, d=128, classes=3000, seed=10)
    x = x.astype(dtype)
    np.save(tmp_path / "x.npy", x)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    # IVF k-means reads a 1,000-row sample; neighbor_recall searches 200 queries exactly
    params = {
        "ivf": {"nlist": 50, "nprobe": 4, "train_size": 1000, "recall_queries": 200},
        "hnsw": {"M": 8, "efConstruction": 32, "efSearch": 32, "recall_queries": 200},
    }[search]
    run = functools.partial(
        retrieval_metrics, metric=metric, include=KNN, search=search, search_params=params
    )
    if search == "ivf":  # in memory with the default blocks: IVF does not depend on them
        expected = run(x, y)
    monkeypatch.setattr(ann, "ROWS", 256)  # blocks of 256 rows (1,024 when searching)
    if search == "hnsw":  # the graph depends on the blocks it was added in
        expected = run(x, y)
    monkeypatch.setattr(Rows, "materialize", lambda self: pytest.fail("whole array read"))
    tracemalloc.start()
    got = run(mm, y)
    _, peak = tracemalloc.get_traced_memory()  # numpy's allocations; faiss's are not traced
    tracemalloc.stop()
    full_copy = x.shape[0] * x.shape[1] * 4  # one float32 copy of the whole array: 15 MB
    assert peak < full_copy / 3, (peak, full_copy)  # blocks, labels, per-query results
    if search == "ivf":
        assert got == expected
    else:  # a threaded HNSW build may differ in the last digits
        assert got == pytest.approx(expected, abs=0.005)
    assert np.shares_memory(Rows(mm, "x", True).x, mm)


def test_torch_tensor_input_is_read_in_blocks(monkeypatch):
    x, y = clustered(n=3000, seed=11)
    params = {"nlist": 30, "nprobe": 5}
    expected = retrieval_metrics(x, y, include=KNN, search="ivf", search_params=params)
    monkeypatch.setattr(ann, "ROWS", 500)
    got = retrieval_metrics(
        torch.from_numpy(x).double(),
        torch.from_numpy(y),
        include=KNN,
        search="ivf",
        search_params=params,
    )
    assert got == expected


def test_bad_values_in_a_memmap_are_found_block_by_block(tmp_path, monkeypatch):
    x, y = clustered(n=3000, seed=12)
    x[2345, 3] = np.nan
    np.save(tmp_path / "x.npy", x)
    monkeypatch.setattr(ann, "ROWS", 256)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    one_line_error(
        retrieval_metrics,
        mm,
        y,
        include=KNN,
        search="ivf",
        match="embeddings contains NaN or infinite values \\(first at row 2345\\)",
    )


def test_clustering_still_works_with_an_approximate_search():
    x, y = clustered(n=1000, classes=50, seed=13)
    a = retrieval_metrics(x, y, search="ivf", search_params={"nlist": 10, "nprobe": 10})
    b = retrieval_metrics(x, y)
    assert a["nmi"] == b["nmi"] and a["ami"] == b["ami"]


# ----------------------------------------------------------------------------------------------
# config and CLI
# ----------------------------------------------------------------------------------------------


def test_eval_config_search_fields():
    from langdml.config import load_config

    cfg = load_config(overrides=["eval.search=hnsw", "eval.search_params.efSearch=256"])
    assert cfg.eval.search == "hnsw" and cfg.eval.search_params == {"efSearch": 256}
    assert load_config().eval.search == "exact"
    one_line_error(
        load_config,
        overrides=["eval.search=ivf", "eval.search_params.nprobes=8"],
        exc=ConfigError,
        match="unknown key 'nprobes' for search='ivf'",
    )
    one_line_error(
        load_config,
        overrides=["eval.search=ivf", "eval.search_params.nprobe=0"],
        exc=ConfigError,
        match=r"nprobe'\] must be an integer >= 1; got 0",
    )
    one_line_error(
        load_config, overrides=["eval.search=faiss"], exc=ConfigError, match="eval.search"
    )


def test_evaluate_command_rejects_bad_search_in_one_line(capsys, tmp_path):
    from langdml.cli import main
    from langdml.eval.commands import parse_search_params

    assert parse_search_params(["nprobe=128", "nlist=4000"]) == {"nprobe": 128, "nlist": 4000}
    argv = ["evaluate", str(tmp_path), "--search", "ivf", "--search-param", "nprobe=0"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == "langdml: error: search_params['nprobe'] must be an integer >= 1; got 0"
    assert main(["evaluate", str(tmp_path), "--search-param", "nprobe"]) == 2
    assert "must look like KEY=VALUE" in capsys.readouterr().err


def test_index_cache_builds_once_per_reference_and_search():
    from langdml.eval.index_cache import IndexCache
    from langdml.eval.synthetic import isotropic_embeddings

    x, y = isotropic_embeddings(3000, 16, (5, 15), seed=2, noise=1.0)
    params = {"nlist": 16, "nprobe": 2}
    cache = IndexCache()
    full = retrieval_metrics(x, y, search="ivf", search_params=params, index_cache=cache)
    sample = retrieval_metrics(
        x, y, search="ivf", search_params=params, index_cache=cache, query_sample=500
    )
    assert len(cache) == 1  # the second call searched the first call's index
    # IVF is deterministic for a seed: the cached index gives what a fresh one gives
    assert full == retrieval_metrics(x, y, search="ivf", search_params=params)
    fresh = retrieval_metrics(x, y, search="ivf", search_params=params, query_sample=500)
    assert sample == fresh
    # another array (even with equal contents), search or seed gets its own index
    retrieval_metrics(x.copy(), y, search="ivf", search_params=params, index_cache=cache)
    retrieval_metrics(x, y, search="ivf", search_params={**params, "nprobe": 4}, index_cache=cache)
    retrieval_metrics(x, y, search="ivf", search_params=params, index_cache=cache, seed=1)
    assert len(cache) == 4
