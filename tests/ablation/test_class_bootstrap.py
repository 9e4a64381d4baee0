"""The paired bootstrap over test classes and seeds (langdml.ablation.class_bootstrap) and its
column in the ablation report."""

from types import SimpleNamespace

import numpy as np
import pytest
from ablationkit import FakeCell, fake_ablation, ok_row

from langdml.ablation.class_bootstrap import cell_delta_ci, paired_class_seed_bootstrap
from langdml.eval.per_class import PER_CLASS, per_class_csv


def _brute_point(a, b, w):
    return np.mean([(w * (a[s] - b[s])).sum() / w.sum() for s in range(len(a))])


def test_interval_contains_the_point_estimate_and_is_seeded():
    rng = np.random.default_rng(1)
    a, b = rng.random((3, 40)), rng.random((3, 40))
    w = rng.integers(1, 30, size=40)
    point, lo, hi = paired_class_seed_bootstrap(a, b, w)
    assert point == pytest.approx(_brute_point(a, b, w))
    assert lo <= point <= hi
    assert paired_class_seed_bootstrap(a, b, w) == (point, lo, hi)
    assert paired_class_seed_bootstrap(a, b, w, seed=5) != (point, lo, hi)


def test_a_known_difference_is_recovered():
    rng = np.random.default_rng(0)
    base = rng.random((5, 200))
    a = base + 0.05 + 0.02 * rng.normal(size=base.shape)
    point, lo, hi = paired_class_seed_bootstrap(a, base, np.full(200, 10))
    assert point == pytest.approx(0.05, abs=0.005)
    assert 0.0 < lo < 0.05 < hi < 0.1
    # i.i.d. noise: the normal-theory 95% width is 2 * 1.96 * 0.02 / sqrt(1000); the two-way
    # bootstrap is conservative (about sqrt(3) wider: seed, class and cell variance each count)
    ratio = (hi - lo) / (2 * 1.96 * 0.02 / np.sqrt(1000))
    assert 1.2 < ratio < 2.2
    # no difference: the interval straddles 0
    _, lo0, hi0 = paired_class_seed_bootstrap(
        base + 0.02 * rng.normal(size=base.shape), base, np.full(200, 10)
    )
    assert lo0 < 0 < hi0


def test_resampling_classes_widens_the_interval_when_classes_vary():
    # the same per-class gains in every seed (seeds agree), very different between classes:
    # seeds alone see no uncertainty, classes do
    rng = np.random.default_rng(3)
    gain = rng.normal(0.02, 0.1, size=60)
    b = rng.random((3, 60))
    a = b + gain + 0.001 * rng.normal(size=(3, 60))
    w = np.full(60, 5)
    _, lo_c, hi_c = paired_class_seed_bootstrap(a, b, w)
    _, lo_s, hi_s = paired_class_seed_bootstrap(a, b, w, resample_classes=False)
    assert hi_c - lo_c > 10 * (hi_s - lo_s)
    assert hi_c - lo_c > 0.02


def _write(run_dir, values, queries):
    run_dir.mkdir(parents=True)
    rows = [
        {
            "class": c,
            "class_name": f"c{c}",
            "queries": int(queries[c]),
            "recall@1": float(v),
            "map@r": float(v) / 2,
        }
        for c, v in enumerate(values)
    ]
    (run_dir / PER_CLASS).write_text(per_class_csv(rows))


def test_runs_with_different_classes_give_no_interval(tmp_path):
    _write(tmp_path / "a", [0.5, 0.6], [3, 3])
    _write(tmp_path / "b", [0.5, 0.6, 0.7], [3, 3, 3])
    assert cell_delta_ci([tmp_path / "a"], [tmp_path / "b"], "recall@1") is None
    assert cell_delta_ci([tmp_path / "a"], [tmp_path / "missing"], "recall@1") is None


def test_report_shows_the_class_seed_interval(tmp_path):
    from langdml.ablation.report import markdown_table, stats_csv, summarise

    rng = np.random.default_rng(4)
    queries = rng.integers(2, 9, size=30)
    runs, rows = [], []
    for reg, gain in (("none", 0.0), ("language", 0.04)):
        cell = FakeCell("ms", reg)
        for seed in range(3):
            values = np.clip(rng.random(30) * 0.5 + 0.25 + gain, 0, 1)
            run_dir = tmp_path / f"{cell.id}-s{seed}"
            _write(run_dir, values, queries)
            run_id = run_dir.name
            runs.append(
                SimpleNamespace(
                    id=run_id, cell=cell, seed=seed, config=SimpleNamespace(output_dir=str(run_dir))
                )
            )
            r1 = float((values * queries).sum() / queries.sum())
            metrics = {
                "recall@1": r1,
                "map@r": r1 / 2,
                "r_precision": 0.3,
                "nmi": 0.5,
                "hier/hp@1": 0.6 + gain,
            }
            rows.append(ok_row(run_id, cell.id, seed, metrics))
    abl = fake_ablation(runs)
    cells = summarise(abl, rows)
    lang = next(c for c in cells if c["regularizers"] == "language")
    delta = lang["deltas"]["recall@1"][0]
    lo, hi = lang["ci_class"]["recall@1"]
    assert lo <= delta <= hi
    md = markdown_table(cells)
    row = next(line for line in md.splitlines() if "| language |" in line)
    assert f"[{lo * 100:+.2f}, {hi * 100:+.2f}]" in row and "ˢ" not in row
    assert "hP@1" in md.splitlines()[0]  # runs evaluated with a hierarchy get its columns
    assert "64.00" in row
    csv_lines = stats_csv(cells).splitlines()
    assert csv_lines[0].endswith("ci_class_low,ci_class_high")
    assert all(line.split(",")[-1] != "" for line in csv_lines[1:])
    # without per_class.csv the seeds-only interval is shown, marked
    for run in runs:
        (tmp_path / run.id / PER_CLASS).unlink()
    md = markdown_table(summarise(abl, rows))
    assert "]ˢ" in next(line for line in md.splitlines() if "| language |" in line)
