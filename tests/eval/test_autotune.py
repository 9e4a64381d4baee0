"""search="auto": the chosen search reaches its target neighbour recall on the query sample, the
tuned IVF nprobe is (within the bisection step) the smallest that does, and bad settings are one
line. No assertion depends on timings (which only decide between kinds)."""

from __future__ import annotations

import numpy as np
import pytest

from langdml.errors import LangDMLError
from langdml.eval import retrieval_metrics
from langdml.eval.ann import Rows, check_search, exact_sample_knn, found_fraction
from langdml.eval.autotune import _set, _tune, auto_search


def blobs(n=3000, d=16, classes=300, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.normal(size=(classes, d))[y] + 0.8 * rng.normal(size=(n, d))
    return x.astype(np.float32), y


@pytest.mark.parametrize("target", [0.9, 0.99])
def test_auto_reaches_the_target_on_the_sample(target):
    x, _ = blobs()
    rows = Rows(x, "x", normalize=True)
    choice = auto_search(rows, None, 10, "cosine", target_recall=target, recall_queries=300)
    assert choice.recall >= target
    assert choice.spec.kind in ("exact", "hnsw", "ivf") and choice.summary().startswith("search")
    kinds = {t.kind for t in choice.trials}
    assert "exact" in kinds
    chosen = min(t.seconds for t in choice.trials if t.recall >= target)
    # a trial short of the target was skipped or abandoned: it cost the chosen one's or more
    assert all(
        t.recall >= target or t.seconds >= chosen for t in choice.trials if t.recall == t.recall
    )


def test_tuning_stops_once_it_costs_more_than_the_budget():
    from langdml.eval.autotune import Trial

    x, _ = blobs(seed=3)
    rows = Rows(x, "x", normalize=True)
    ids = np.arange(0, 3000, 10)
    q = rows.take(ids)
    De, Ie = exact_sample_knn(rows, q, 10, "cosine", ids)
    exact = (De, Ie, ids)
    stopped = _tune("ivf", rows, q, 10, "cosine", exact, 0.999, 0, budget=0.0, scale=10.0)
    assert isinstance(stopped, Trial) and stopped.seconds >= 0.0
    assert stopped.params == {"nprobe": 1} and stopped.recall < 0.999  # the first value stops it
    full = _tune("ivf", rows, q, 10, "cosine", exact, 0.999, 0)  # no budget: tuned to the end
    assert not isinstance(full, Trial) and full[2] >= 0.999


def test_tuned_nprobe_is_the_smallest_reaching_the_target_within_the_step():
    x, _ = blobs(seed=1)
    rows = Rows(x, "x", normalize=True)
    ids = np.arange(0, 3000, 10)
    q = rows.take(ids)
    De, Ie = exact_sample_knn(rows, q, 10, "cosine", ids)
    engine, params, recall, _, _ = _tune("ivf", rows, q, 10, "cosine", (De, Ie, ids), 0.95, 0)
    assert recall >= 0.95

    def recall_at(nprobe):
        _set(engine, "ivf", nprobe)
        D, I = engine.search(q, 10, ids)
        return found_fraction(D, I, De, Ie, "cosine").mean()

    assert recall_at(params["nprobe"]) == pytest.approx(recall)
    if params["nprobe"] > 1:  # IVF recall never falls as nprobe grows: half of it misses
        assert recall_at(params["nprobe"] // 2) < 0.95


def test_retrieval_metrics_auto_reports_neighbor_recall_at_the_target():
    x, y = blobs(seed=2)
    params = {"target_recall": 0.97, "recall_queries": 400}
    auto = retrieval_metrics(x, y, include=("recall",), search="auto", search_params=params)
    exact = retrieval_metrics(x, y, include=("recall",))
    assert auto["neighbor_recall"] >= 0.97
    assert abs(auto["recall@1"] - exact["recall@1"]) <= 0.03


@pytest.mark.parametrize(
    "params,needle",
    [
        ({"target_recall": 1.5}, "target_recall'] must be in"),
        ({"target_recall": "high"}, "target_recall'] must be in"),
        ({"recall_queries": 0}, "recall_queries'] must be an integer"),
        ({"nprobe": 4}, "unknown key"),
    ],
)
def test_bad_auto_settings_are_one_line(params, needle):
    with pytest.raises(LangDMLError, match=needle) as info:
        check_search("auto", params)
    assert "\n" not in str(info.value)


def test_a_kind_whose_predicted_build_costs_more_than_exact_is_never_built(monkeypatch):
    import langdml.eval.autotune as autotune

    built = []
    real_tune = autotune._tune

    def spy(kind, *args):
        built.append(kind)
        return real_tune(kind, *args)

    monkeypatch.setattr(autotune, "_tune", spy)
    monkeypatch.setattr(autotune, "build_estimate", lambda *a: 1e9)
    x, _ = blobs(3000, 16, 60, seed=1)
    choice = auto_search(Rows(x, "x", normalize=True), None, 10, "cosine", target_recall=0.9)
    assert built == [] and choice.spec.kind == "exact" and choice.engine is None
    skipped = {t.kind: t for t in choice.trials if t.kind != "exact"}
    assert set(skipped) == {"hnsw", "ivf"}
    assert all(np.isnan(t.recall) and t.seconds == 1e9 for t in skipped.values())


def test_build_estimate_extrapolates_from_a_sample_build(monkeypatch):
    import langdml.eval.autotune as autotune

    x, _ = blobs(3000, 16, 60, seed=2)
    rows = Rows(x, "x", normalize=True)
    assert autotune.build_estimate("hnsw", rows, "cosine", 0) == 0.0  # small: built as is
    monkeypatch.setattr(autotune, "PROBE_ROWS", 500)
    for kind in ("hnsw", "ivf"):
        guess = autotune.build_estimate(kind, rows, "cosine", 0)
        assert np.isfinite(guess) and guess > 0


def test_the_sample_scan_reports_its_one_off_setup_apart():
    """The exact sample scan's reading/indexing of the reference (paid once) comes back apart
    from the scan, one entry per block, and leaves the neighbours unchanged."""
    x, _ = blobs(seed=4)
    rows = Rows(x, "x", normalize=True)
    ids = np.arange(0, 3000, 7)
    q = rows.take(ids)
    setup: list[float] = []
    D, I = exact_sample_knn(rows, q, 10, "cosine", ids, setup)
    D0, I0 = exact_sample_knn(rows, q, 10, "cosine", ids)
    assert np.array_equal(I, I0) and np.array_equal(D, D0)
    assert len(setup) == 1 and setup[0] >= 0.0  # 3,000 rows: one block
