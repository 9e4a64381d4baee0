"""retrieval_metrics(query_sample=...): kNN metrics over a seeded sample of the queries, every row
still in the reference -- checked against a slow loop over the sampled queries written from the
metric definitions, and approximate vs exact on the same sampled queries."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from langdml.errors import LangDMLError
from langdml.eval import l2_normalize, retrieval_metrics
from langdml.eval.metrics import sample_queries

retrieval_metrics = functools.partial(retrieval_metrics, device="cpu")
KNN = ("recall", "map_r")


def clustered(n=1500, d=12, classes=150, seed=0, noise=0.9):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    y[:5] = np.arange(10_000, 10_005)  # lone queries: excluded from the means
    x = rng.standard_normal((classes + 10_005, d)).astype(np.float32)[y]
    x += noise * rng.standard_normal((n, d)).astype(np.float32)
    return x, y


def loop_on_queries(x, y, ids, ks=(1, 2, 4, 8)):
    """Leave-one-out cosine metrics of the queries ``ids`` against all rows, one query at a time
    (ties by ascending index, lone queries skipped), from the definitions in eval.metrics."""
    xn = l2_normalize(x).astype(np.float64)
    hits = {k: [] for k in ks}
    aps, rps = [], []
    for i in ids:
        order = np.argsort(-(xn @ xn[i]), kind="stable")
        order = order[order != i]
        R = int((y == y[i]).sum()) - 1
        if R == 0:
            continue
        rel = y[order] == y[i]
        for k in ks:
            hits[k].append(bool(rel[:k].any()))
        top = rel[:R]
        rps.append(top.sum() / R)
        aps.append(sum(top[j] * top[: j + 1].sum() / (j + 1) for j in range(R)) / R)
    out = {f"recall@{k}": float(np.mean(hits[k])) for k in ks}
    return out | {"map@r": float(np.mean(aps)), "r_precision": float(np.mean(rps))}


def test_sample_is_seeded_sorted_and_distinct():
    a = sample_queries(1000, 100, seed=3)
    assert len(a) == 100 and len(np.unique(a)) == 100 and (np.diff(a) > 0).all()
    np.testing.assert_array_equal(a, sample_queries(1000, 100, seed=3))
    assert not np.array_equal(a, sample_queries(1000, 100, seed=4))
    np.testing.assert_array_equal(sample_queries(50, None, 0), np.arange(50))
    np.testing.assert_array_equal(sample_queries(50, 80, 0), np.arange(50))


def test_sampled_metrics_equal_a_loop_over_the_sampled_queries():
    x, y = clustered()
    got = retrieval_metrics(x, y, include=KNN, query_sample=300, seed=5)
    ids = sample_queries(len(x), 300, 5)
    want = loop_on_queries(x, y, ids)
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-12), key
    # a different sample gives different numbers: the option really restricts the queries
    other = retrieval_metrics(x, y, include=KNN, query_sample=300, seed=6)
    assert other != got


def test_a_sample_as_large_as_the_set_is_the_full_evaluation():
    x, y = clustered(n=600, classes=60)
    parts = (*KNN, "map_1000")
    full = retrieval_metrics(x, y, include=parts)
    assert retrieval_metrics(x, y, include=parts, query_sample=600) == full
    assert retrieval_metrics(x, y, include=parts, query_sample=10_000) == full


@pytest.mark.parametrize(
    ("search", "params"), [("ivf", {"nlist": 16, "nprobe": 16}), ("hnsw", {"efSearch": 2000})]
)
def test_exhaustive_approximate_on_a_sample_equals_exact_on_the_same_sample(search, params):
    x, y = clustered(seed=2)
    exact = retrieval_metrics(x, y, include=KNN, query_sample=400, seed=1)
    got = retrieval_metrics(
        x, y, include=KNN, query_sample=400, seed=1, search=search, search_params=params
    )
    assert got.pop("neighbor_recall") == 1.0
    assert got == exact


def test_sample_with_a_memmap_reads_only_the_sampled_query_rows(tmp_path):
    x, y = clustered(seed=4)
    np.save(tmp_path / "x.npy", x)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    params = {"nlist": 8, "nprobe": 8}
    got = retrieval_metrics(
        mm, y, include=KNN, query_sample=200, search="ivf", search_params=params
    )
    want = retrieval_metrics(x, y, include=KNN, query_sample=200)
    assert got.pop("neighbor_recall") == 1.0
    assert got == want


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "100"])
def test_bad_query_sample_is_one_line(bad):
    x, y = clustered(n=100, classes=10)
    with pytest.raises(LangDMLError, match="query_sample must be a positive integer") as info:
        retrieval_metrics(x, y, include=KNN, query_sample=bad)
    assert "\n" not in str(info.value) and repr(bad) in str(info.value)


def test_evaluate_command_query_sample(tmp_path, capsys):
    """`langdml evaluate --query-sample Q`: the run's kNN metrics over Q seeded queries equal
    retrieval_metrics on the run's embeddings with the same sample; bad Q is one line."""
    import json

    from faultkit import make_folder, one_line, tiny_cfg

    from langdml.cli import main
    from langdml.experiment import embed, open_run
    from langdml.train import train

    train(tiny_cfg(make_folder(tmp_path / "img"), tmp_path))
    run_dir = tmp_path / "run"
    capsys.readouterr()
    assert main(["evaluate", str(run_dir), "--query-sample", "5"]) == 0
    got = json.loads(capsys.readouterr().out)
    run = open_run(run_dir)
    emb = embed(run.model, run.config, run.data)
    want = retrieval_metrics(emb, run.data.eval.labels, query_sample=5, seed=run.config.seed)
    assert got["query_sample"] == 5
    for key in ("recall@1", "map@r", "r_precision"):
        assert got[key] == pytest.approx(want[key]), key
    assert main(["evaluate", str(run_dir), "--query-sample", "0"]) == 2
    assert "query_sample must be a positive integer" in one_line(capsys.readouterr().err)
