"""``langdml.compat.pml.utils.accuracy_calculator.AccuracyCalculator`` against PML 2.9's.

Embeddings are small integers (exact float32 distances, many duplicate rows: real ties, which
both order by reference index), labels drawn so that some query labels are absent from the
reference or have a single member (lone queries). Each configuration is compared key by key on
leave-one-out (no reference), a separate reference, and a reference that contains the queries
(``ref_includes_query=True``), for every k mode, with avg_of_avgs and return_per_class. The
documented two-column ``label_comparison_fn`` example is checked too.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from langdml.compat.pml.utils.accuracy_calculator import AccuracyCalculator
from langdml.errors import LangDMLError
from langdml.eval import retrieval_metrics

pml_ac = pytest.importorskip("pytorch_metric_learning.utils.accuracy_calculator")
CPU = torch.device("cpu")
KNN_KEYS = (
    "mean_average_precision",
    "mean_average_precision_at_r",
    "mean_reciprocal_rank",
    "precision_at_1",
    "r_precision",
)


def _data(seed: int):
    rng = np.random.default_rng(seed)
    q = rng.integers(-2, 3, size=(50, 3)).astype(np.float32)
    ql = rng.integers(0, 9, size=50)  # label 8 is rare: lone queries
    r = rng.integers(-2, 3, size=(70, 3)).astype(np.float32)
    rl = rng.integers(0, 8, size=70)
    return q, ql, r, rl


def _inputs(kind: str, seed: int):
    q, ql, r, rl = _data(seed)
    if kind == "loo":
        return (q, ql)
    if kind == "separate":
        return (q, ql, r, rl, False)
    return (q, ql, np.concatenate([q, r]), np.concatenate([ql, rl]), True)


def _assert_same(ours: dict, theirs: dict) -> None:
    assert list(ours) == list(theirs)
    for key, value in theirs.items():
        # PML averages reciprocal ranks in float32; ours (and its other metrics) in float64
        tol = 1e-6 if key == "mean_reciprocal_rank" else 1e-12
        np.testing.assert_allclose(ours[key], value, rtol=tol, atol=tol, err_msg=key)


def _compare(kind: str, seed: int, **kwargs):
    args = _inputs(kind, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = pml_ac.AccuracyCalculator(device=CPU, include=KNN_KEYS, **kwargs)
        ours = AccuracyCalculator(device="cpu", include=KNN_KEYS, **kwargs)
        _assert_same(ours.get_accuracy(*args), theirs.get_accuracy(*args))


@pytest.mark.parametrize("kind", ["loo", "separate", "includes"])
@pytest.mark.parametrize("k", [None, "max_bin_count", 1, 5])
@pytest.mark.parametrize("seed", [0, 1])
def test_knn_metrics_equal_pml(kind, k, seed):
    _compare(kind, seed, k=k)


@pytest.mark.parametrize("kind", ["loo", "separate", "includes"])
@pytest.mark.parametrize("mode", ["avg_of_avgs", "return_per_class"])
def test_per_class_modes_equal_pml(kind, mode):
    _compare(kind, 3, k="max_bin_count", **{mode: True})


def test_clustering_metrics_equal_pml():
    q, ql, _, _ = _data(4)
    q = q + np.random.default_rng(0).normal(scale=0.1, size=q.shape).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = pml_ac.AccuracyCalculator(device=CPU).get_accuracy(q, ql)
    ours = AccuracyCalculator(device="cpu").get_accuracy(q, ql)
    assert list(ours) == list(theirs)  # PML's key order
    for key in ("NMI", "AMI"):
        assert ours[key] == pytest.approx(theirs[key], abs=1e-9)


def example_label_comparison_fn(x, y):
    # PML's documented two-column example: column 0 must match, column 1 must differ
    return (x[..., 0] == y[..., 0]) & (x[..., 1] != y[..., 1])


@pytest.mark.parametrize("kind", ["loo", "separate"])
def test_documented_label_comparison_example_equals_pml(kind):
    rng = np.random.default_rng(5)
    q = rng.integers(-2, 3, size=(40, 3)).astype(np.float32)
    ql = rng.integers(0, 3, size=(40, 2))
    args = (q, ql)
    if kind == "separate":
        r = rng.integers(-2, 3, size=(60, 3)).astype(np.float32)
        args = (q, ql, r, rng.integers(0, 3, size=(60, 2)), False)
    kwargs = {"exclude": ("NMI", "AMI"), "label_comparison_fn": example_label_comparison_fn}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = pml_ac.AccuracyCalculator(device=CPU, k=8, **kwargs).get_accuracy(*args)
        ours = AccuracyCalculator(device="cpu", k=8, **kwargs).get_accuracy(*args)
    _assert_same(ours, theirs)


def test_small_k_warns_instead_of_failing():
    args = _inputs("loo", 0)
    calc = AccuracyCalculator(device="cpu", include=("mean_average_precision_at_r",), k=2)
    with pytest.warns(UserWarning, match="below the largest class count"):
        got = calc.get_accuracy(*args)
    assert 0 < got["mean_average_precision_at_r"] < 1
    quiet = AccuracyCalculator(device="cpu", include=("precision_at_1",), k=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet.get_accuracy(*args)  # no R-metric asked for: no warning


def test_every_query_lone_gives_nan():
    q = np.eye(4, dtype=np.float32)
    calc = AccuracyCalculator(device="cpu", include=("precision_at_1",))
    with pytest.warns(UserWarning, match="None of the query labels"):
        assert math.isnan(calc.get_accuracy(q, [0, 1, 2, 3])["precision_at_1"])
    per_class = AccuracyCalculator(device="cpu", include=("r_precision",), return_per_class=True)
    with pytest.warns(UserWarning):
        assert len(per_class.get_accuracy(q, [0, 1, 2, 3])["r_precision"]) == 4


def test_mean_reciprocal_rank_alone_and_against_a_loop():
    q, ql, r, rl = _data(6)
    got = AccuracyCalculator(device="cpu", include=("mean_reciprocal_rank",)).get_accuracy(
        q, ql, r, rl
    )["mean_reciprocal_rank"]
    ranks = []
    for i in range(len(q)):
        if not (rl == ql[i]).any():
            continue  # lone
        d = ((r.astype(np.float64) - q[i]) ** 2).sum(axis=1)
        order = sorted(range(len(r)), key=lambda j: (d[j], j))
        ranks.append(1.0 / (1 + next(t for t, j in enumerate(order) if rl[j] == ql[i])))
    assert got == pytest.approx(float(np.mean(ranks)), abs=1e-12)


def test_agrees_with_retrieval_metrics_self_index():
    q, ql, r, rl = _data(7)
    ref, ref_l = np.concatenate([q, r]), np.concatenate([ql, rl])
    calc = AccuracyCalculator(
        device="cpu", include=("mean_average_precision_at_r", "r_precision"), k="max_bin_count"
    )
    got = calc.get_accuracy(q, ql, ref, ref_l, True)
    ours = retrieval_metrics(
        q,
        ql,
        ref,
        ref_l,
        metric="euclidean",
        include=("map_r",),
        device="cpu",
        self_index=np.arange(len(q)),
    )
    assert got["mean_average_precision_at_r"] == pytest.approx(ours["map@r"], abs=1e-12)
    assert got["r_precision"] == pytest.approx(ours["r_precision"], abs=1e-12)


def test_custom_knn_func_is_used():
    q, ql, r, rl = _data(8)
    calls = []

    def knn_func(query, k, reference, ref_includes_query):
        calls.append((k, ref_includes_query))
        d = torch.cdist(query.double(), reference.double())
        return torch.sort(d, dim=1, stable=True)[0][:, :k], torch.sort(d, dim=1, stable=True)[1][
            :, :k
        ]

    calc = AccuracyCalculator(include=("precision_at_1",), knn_func=knn_func, k=3)
    plain = AccuracyCalculator(device="cpu", include=("precision_at_1",), k=3)
    assert calc.get_accuracy(q, ql, r, rl) == plain.get_accuracy(q, ql, r, rl)
    assert calls == [(3, False)]


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: AccuracyCalculator(avg_of_avgs=True, return_per_class=True), "mutually"),
        (lambda: AccuracyCalculator(k=0), "k must be"),
        (lambda: AccuracyCalculator(include=("recall@1",)), "unknown metric"),
        (lambda: AccuracyCalculator(include="NMI"), "tuple or list"),
        (lambda: AccuracyCalculator(label_comparison_fn=torch.eq), "cannot use label_comparison"),
    ],
)
def test_bad_settings_raise_one_line(build, message):
    with pytest.raises(LangDMLError, match=message):
        build()


def test_ref_includes_query_must_hold():
    q, ql, r, rl = _data(9)
    calc = AccuracyCalculator(device="cpu", include=("precision_at_1",))
    with pytest.raises(LangDMLError, match="first len\\(query\\) reference rows"):
        calc.get_accuracy(q, ql, r, rl, True)
    with pytest.raises(LangDMLError, match="exceeds"):
        AccuracyCalculator(device="cpu", include=("precision_at_1",), k=500).get_accuracy(q, ql)


def test_call_include_and_exclude_narrow_the_constructor_choice_as_pml():
    args = _inputs("separate", 10)
    kwargs = {"exclude": ("NMI", "AMI", "r_precision")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = pml_ac.AccuracyCalculator(device=CPU, **kwargs)
        ours = AccuracyCalculator(device="cpu", **kwargs)
        for call in (
            {"exclude": ("precision_at_1",)},
            {"include": ("r_precision", "precision_at_1")},
        ):
            _assert_same(ours.get_accuracy(*args, **call), theirs.get_accuracy(*args, **call))


def test_string_labels_work():
    q, ql, r, rl = _data(11)
    names = np.array(list("abcdefghi"))
    calc = AccuracyCalculator(device="cpu", include=("precision_at_1", "r_precision"))
    assert calc.get_accuracy(q, names[ql], r, names[rl]) == calc.get_accuracy(q, ql, r, rl)
