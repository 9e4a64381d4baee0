"""Roth's MAP@1000 and pairwise F1 against loop references written from their definitions, and
eval.recall_at (any ks) through the config."""

import itertools

import numpy as np
import pytest

from langdml.eval import retrieval_metrics
from langdml.eval.map1000_f1 import pairwise_f1


def _map1000_loop(x, y, R=1000):
    """Roth's mAP_1000: per query, sum_i P(i) rel(i) over the first R neighbours / class size."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = x @ x.T
    aps = []
    for q in range(len(x)):
        order = [j for j in sorted(range(len(x)), key=lambda j: (-sim[q, j], j)) if j != q][:R]
        freq = int((y == y[q]).sum())
        hits, total = 0, 0.0
        for i, j in enumerate(order, start=1):
            if y[j] == y[q]:
                hits += 1
                total += hits / i
        aps.append(total / freq)
    return float(np.mean(aps))


def _f1_loop(y, c):
    tp = fp = fn = 0
    for a, b in itertools.combinations(range(len(y)), 2):
        same_class, same_cluster = y[a] == y[b], c[a] == c[b]
        tp += same_class and same_cluster
        fp += same_cluster and not same_class
        fn += same_class and not same_cluster
    if tp == 0:
        return 0.0
    p, r = tp / (tp + fp), tp / (tp + fn)
    return 2 * p * r / (p + r)


@pytest.mark.parametrize("seed", [0, 1])
def test_map_at_1000_matches_roth_loop(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 7, size=90)
    y[0] = 99  # a lone query: AP 0 in Roth's mean over all queries
    x = rng.normal(size=(90, 8)) + np.eye(8)[y % 8] * 1.5
    m = retrieval_metrics(x, y, include=("map_1000",), device="cpu")
    assert m["map@1000"] == pytest.approx(_map1000_loop(x, y), abs=1e-12)
    assert m["map@1000"] == pytest.approx(_map1000_loop(x, y, R=1000), abs=1e-12)
    # with fewer than 1000 neighbours every relevant item is found: a perfect embedding scores
    # mean((n_q - 1) / n_q) (Roth's normaliser is the class size)
    perfect = retrieval_metrics(np.eye(8)[y % 8] + 0.0, y % 8, include=("map_1000",), device="cpu")
    _, counts = np.unique(y % 8, return_counts=True)
    expected = np.mean(np.repeat((counts - 1) / counts, counts))
    assert perfect["map@1000"] == pytest.approx(expected, abs=1e-12)


def test_map_at_1000_cuts_at_1000_neighbours():
    rng = np.random.default_rng(3)
    y = np.repeat([0, 1], 700)
    x = rng.normal(size=(1400, 4)) + y[:, None]
    m = retrieval_metrics(x, y, include=("map_1000",), device="cpu")
    assert m["map@1000"] == pytest.approx(_map1000_loop(x, y), abs=1e-6)  # float32 search


def test_pairwise_f1_matches_loop_and_edge_cases():
    rng = np.random.default_rng(0)
    for _ in range(5):
        y, c = rng.integers(0, 5, 40), rng.integers(0, 6, 40)
        assert pairwise_f1(y, c) == pytest.approx(_f1_loop(y, c), abs=1e-12)
    y = np.array([0, 0, 1, 1, 2, 2])
    assert pairwise_f1(y, y + 10) == 1.0
    assert pairwise_f1(y, np.arange(6)) == 0.0
    m = retrieval_metrics(np.eye(3)[y] * 5.0, y, include=("f1", "clustering"), device="cpu")
    assert m["f1"] == pytest.approx(1.0) and m["nmi"] == pytest.approx(1.0)
    assert set(retrieval_metrics(np.eye(3)[y], y, include=("f1",), device="cpu")) == {"f1"}


def test_recall_at_config_any_ks(tmp_path):
    from langdml.config import load_config
    from langdml.errors import ConfigError
    from langdml.experiment import evaluate_embeddings

    cfg = load_config(None, {"eval.recall_at": [10, 1, 100], "train.device": "cpu"})
    assert cfg.eval.recall_at == [1, 10, 100]
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 60)
    m = evaluate_embeddings(cfg, rng.normal(size=(60, 5)).astype(np.float32), y)
    assert {"recall@1", "recall@10", "recall@100", "map@r", "map@1000", "f1", "nmi"} <= set(m)
    assert "recall@2" not in m and m["recall@100"] == 1.0
    with pytest.raises((ConfigError, ValueError)):
        load_config(None, {"eval.recall_at": [0, 1]})
    with pytest.raises((ConfigError, ValueError), match="recall_at"):
        load_config(None, {"eval.recall_at": [10, 100]})  # best_metric recall@1 not computed
    assert load_config(None, {"eval.recall_at": [10], "eval.best_metric": "recall@10"})
