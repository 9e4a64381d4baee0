"""search="auto": the chosen search reaches its target neighbour recall on the query sample, the
tuned IVF nprobe is (within the bisection step) the smallest that does, and bad settings are one
line. The decision rule (probe on a subset, build over all rows only when predicted clearly
cheaper than exact, drop a built index whose search costs more than exact) is checked with a
fake CPU clock that charges made-up costs per row: no assertion depends on real timings."""

from __future__ import annotations

import numpy as np
import pytest

import langdml.eval.autotune as autotune
from langdml.errors import LangDMLError
from langdml.eval import retrieval_metrics
from langdml.eval.ann import (
    DEFAULTS,
    ApproxKNN,
    Rows,
    SearchSpec,
    check_search,
    exact_sample_knn,
    found_fraction,
)
from langdml.eval.autotune import _set, _tune, auto_search
from langdml.eval.knn import ExactKNN


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
    assert choice.trials[0].kind == "exact" and choice.trials[0].rows == 3000
    probes = [t for t in choice.trials if t.rows < 3000]
    assert {t.kind for t in probes} == {"hnsw", "ivf"}  # each kind probed on a subset
    assert all(t.rows == autotune.probe_rows(3000) for t in probes)
    if choice.spec.kind != "exact":  # built over all rows, after a probe predicted it cheap
        full = [t for t in choice.trials if t.kind == choice.spec.kind and t.rows == 3000]
        assert full and full[-1].recall >= target
        (probe,) = [t for t in probes if t.kind == choice.spec.kind]
        assert probe.recall >= target
        assert probe.seconds < autotune.CLEAR * choice.trials[0].seconds


def _sample(seed, step=10):
    x, _ = blobs(seed=seed)
    rows = Rows(x, "x", normalize=True)
    ids = np.arange(0, 3000, step)
    q = rows.take(ids)
    De, Ie = exact_sample_knn(rows, q, 10, "cosine", ids)
    return rows, q, ids, (De, Ie, ids)


def _ivf(rows):
    return ApproxKNN(rows, "cosine", SearchSpec("ivf", {**DEFAULTS["ivf"], "recall_queries": 0}))


def test_tuning_stops_once_it_costs_more_than_the_budget():
    rows, q, _, exact = _sample(3)
    engine = _ivf(rows)
    seen = []

    def stop(took):
        seen.append(took)
        return True  # the first value already costs too much

    value, recall, took = _tune(engine, "ivf", q, 10, "cosine", exact, 0.999, stop)
    assert value == 1 and recall < 0.999 and seen == [took]  # no larger value was searched
    value, recall, _ = _tune(engine, "ivf", q, 10, "cosine", exact, 0.999)  # tuned to the end
    assert recall >= 0.999 and 1 < value <= engine.params["nlist"]


def test_tuned_nprobe_is_the_smallest_reaching_the_target_within_the_step():
    rows, q, ids, exact = _sample(1)
    De, Ie, _ = exact
    engine = _ivf(rows)
    nprobe, recall, _ = _tune(engine, "ivf", q, 10, "cosine", exact, 0.95)
    assert recall >= 0.95

    def recall_at(value):
        _set(engine, "ivf", value)
        D, I = engine.search(q, 10, ids)
        return found_fraction(D, I, De, Ie, "cosine").mean()

    assert recall_at(nprobe) == pytest.approx(recall)
    if nprobe > 1:  # IVF recall never falls as nprobe grows: half of it misses
        assert recall_at(nprobe // 2) < 0.95


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


class FakeCosts:
    """A CPU clock that advances only by the costs it is told: ``exact`` seconds per query x
    reference row scanned, ``build`` per row indexed, ``search`` per query x indexed row (the
    real searches still run, so recalls are real; only the timings are made up)."""

    def __init__(self, monkeypatch, exact, build, search):
        self.now, self.built = 0.0, []
        real_exact, real_index = autotune.exact_sample_knn, autotune.ApproxKNN

        def scan(reference, q, *args):
            self.now += exact * len(q) * reference.n
            return real_exact(reference, q, *args)

        def index(reference, metric, spec, *args):
            engine = real_index(reference, metric, spec, *args)
            self.now += build * reference.n
            self.built.append((spec.kind, reference.n))
            real_search = engine.search

            def timed_search(q, *a):
                self.now += search * len(q) * reference.n
                return real_search(q, *a)

            engine.search = timed_search
            return engine

        monkeypatch.setattr(autotune, "_clock", lambda: self.now)
        monkeypatch.setattr(autotune, "exact_sample_knn", scan)
        monkeypatch.setattr(autotune, "ApproxKNN", index)


def test_exact_predicted_cheaper_builds_no_index_over_the_whole_reference(monkeypatch):
    costs = FakeCosts(monkeypatch, exact=1e-6, build=1e-2, search=1e-6)
    x, _ = blobs(3000, 16, 60, seed=1)
    choice = auto_search(Rows(x, "x", normalize=True), None, 10, "cosine", target_recall=0.9)
    assert choice.spec.kind == "exact" and choice.engine is None and choice.recall == 1.0
    probe = autotune.probe_rows(3000)
    assert sorted(costs.built) == [("hnsw", probe), ("ivf", probe)]  # probes only
    exact_cost = choice.trials[0].seconds
    for t in choice.trials[1:]:
        assert t.rows == probe and t.seconds >= autotune.CLEAR * exact_cost


def test_approximate_much_cheaper_is_built_once_and_reaches_the_target(monkeypatch):
    costs = FakeCosts(monkeypatch, exact=1e-3, build=1e-6, search=1e-9)
    x, _ = blobs(3000, 16, 60, seed=1)
    rows = Rows(x, "x", normalize=True)
    choice = auto_search(rows, None, 10, "cosine", target_recall=0.9, recall_queries=400)
    kind = choice.spec.kind
    assert kind in ("hnsw", "ivf") and choice.engine is not None and choice.recall >= 0.9
    full = [b for b in costs.built if b[1] == 3000]
    assert full == [(kind, 3000)]  # only the chosen kind was built over all rows
    # the recall it reports is the engine's on the sample, against an independent exact scan
    sample = np.sort(np.random.default_rng(0).choice(3000, 400, replace=False))
    q = rows.take(sample)
    D, I = choice.engine.search(q, 10, sample)
    De, Ie = ExactKNN(rows.materialize(), "cosine").search(q, 10, sample)
    assert found_fraction(D, I, De, Ie, "cosine").mean() == pytest.approx(choice.recall)
    assert (
        choice.spec.params[autotune._knob(kind)] == choice.trials[-1].params[autotune._knob(kind)]
    )


def test_a_full_build_whose_search_costs_more_than_exact_falls_back_to_exact(monkeypatch):
    """The probes predict a free search but, over all rows, searching the queries costs more
    than exact search's whole cost: each built index is dropped (its build is paid, its search
    is not) and exact search is kept."""
    FakeCosts(monkeypatch, exact=1e-6, build=1e-9, search=1e-5)
    monkeypatch.setattr(autotune, "growth", lambda *a: (0.0, 0.0))  # predictions: free
    x, _ = blobs(3000, 16, 60, seed=1)
    choice = auto_search(Rows(x, "x", normalize=True), None, 10, "cosine", target_recall=0.9)
    assert choice.spec.kind == "exact" and choice.engine is None
    full = [t for t in choice.trials if t.rows == 3000 and t.kind != "exact"]
    assert sorted(t.kind for t in full) == ["hnsw", "ivf"]  # both qualified and were tried
    assert all(t.seconds >= choice.trials[0].seconds for t in full)


def test_retrieval_metrics_auto_measures_the_sample_once(monkeypatch):
    """retrieval_metrics(search="auto") reports the recall auto measured on the same sample
    instead of scanning it exactly a second time."""
    import langdml.eval.metrics as metrics

    calls = []
    monkeypatch.setattr(metrics, "neighbor_recall", lambda *a: calls.append(a) or 0.0)
    x, y = blobs(seed=2)
    with autotune.recorded_choices() as choices:
        got = retrieval_metrics(
            x, y, include=("recall",), search="auto", search_params={"target_recall": 0.9}
        )
    assert calls == [] and got["neighbor_recall"] == choices[0].recall >= 0.9
    fixed = retrieval_metrics(x, y, include=("recall",), search="ivf")
    assert len(calls) == 1 and fixed["neighbor_recall"] == 0.0  # a fixed search measures it


def test_probe_sizes_and_growth():
    assert autotune.probe_rows(100_000) == 5_000 and autotune.probe_rows(10**6) == 50_000
    assert autotune.probe_rows(10**8) == autotune.MAX_PROBE_ROWS
    for n in (64, 3000, 9999, 10_000, 250_000):  # never over half of the reference
        assert 1 <= autotune.probe_rows(n) <= n // 2
    assert autotune.growth("ivf", 3000, 1500) == pytest.approx((2**1.5, 2.0))
    build, search = autotune.growth("hnsw", 100_000, 5_000)
    assert build == pytest.approx(20 * np.log(1e5) / np.log(5e3)) and search == pytest.approx(
        np.log(1e5) / np.log(5e3)
    )


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
