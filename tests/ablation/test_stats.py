"""Ablation report pieces without training: the versions line, Holm adjustment, bootstrap CIs."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
from ablationkit import FakeCell, fake_ablation, ok_row

from langdml.ablation.report import versions_note


def _ablation(tmp_path, n=2):
    runs = []
    for i in range(n):
        d = tmp_path / f"r{i}"
        d.mkdir()
        runs.append(SimpleNamespace(id=f"r{i}", config=SimpleNamespace(output_dir=str(d))))
    return SimpleNamespace(runs=runs)


def test_versions_note_names_the_versions_the_runs_recorded(tmp_path):
    abl = _ablation(tmp_path)
    rows = [{"run_id": "r0", "status": "ok"}, {"run_id": "r1", "status": "ok"}]
    assert versions_note(abl, rows).startswith("Versions (of this report")
    for run in abl.runs:
        rec = {"versions": {"python": "3.11.9", "torch": "2.4.0", "faiss": None}}
        (tmp_path / run.id / "provenance.json").write_text(json.dumps(rec))
    assert versions_note(abl, rows) == "Versions: python 3.11.9, torch 2.4.0."
    (tmp_path / "r1" / "provenance.json").write_text(json.dumps({"versions": {"torch": "2.5"}}))
    assert versions_note(abl, rows).startswith("Versions differ between runs:")


def test_holm_against_a_hand_example():
    from langdml.ablation.report import holm

    # sorted p: 0.005, 0.01, 0.03, 0.04 -> 4*0.005, 3*0.01, 2*0.03, max(0.06, 1*0.04)
    out = holm([0.01, math.nan, 0.04, 0.03, 0.005])
    assert out[1] != out[1]  # NaN stays NaN and is not counted in m
    assert [out[i] for i in (0, 2, 3, 4)] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6]) == [1.0, 1.0]  # capped at 1, monotone
    assert holm([]) == []


def test_bootstrap_ci_over_seeds():
    from langdml.ablation.report import bootstrap_ci

    lo, hi = bootstrap_ci([0.01, 0.02, 0.03, 0.04, 0.05])
    assert 0.01 <= lo < 0.03 < hi <= 0.05
    assert bootstrap_ci([0.02, 0.02, 0.02]) == pytest.approx((0.02, 0.02))
    assert all(math.isnan(v) for v in bootstrap_ci([0.1]))
    assert bootstrap_ci([0.0, 0.1, 0.3]) == bootstrap_ci([0.0, 0.1, 0.3])  # seeded


def test_table_shows_raw_and_holm_p_and_bootstrap_ci(tmp_path):
    from langdml.ablation.report import markdown_table, stats_csv, summarise

    cells = {(b, r): FakeCell(b, r) for b in ("ms", "pa") for r in ("none", "language")}
    runs, rows = [], []
    rng = np.random.default_rng(0)
    for (_b, r), cell in cells.items():
        for seed in range(5):
            run_id = f"{cell.id}-s{seed}"
            runs.append(SimpleNamespace(id=run_id, cell=cell, seed=seed))
            gain = 0.03 if r == "language" else 0.0
            r1 = 0.5 + gain + 0.01 * rng.normal()
            metrics = {"recall@1": r1, "map@r": r1 / 2, "r_precision": r1 / 2, "nmi": 0.6}
            rows.append(ok_row(run_id, cell.id, seed, metrics))
    abl = fake_ablation(runs)
    summary = summarise(abl, rows)
    tested = [c for c in summary if c["deltas"]]
    assert len(tested) == 2
    raw = [c["deltas"][m][1] for c in tested for m in ("recall@1", "map@r")]
    adj = [c["p_holm"][m] for c in tested for m in ("recall@1", "map@r")]
    from langdml.ablation.report import holm

    assert adj == pytest.approx(holm(raw)) and all(a >= p for a, p in zip(adj, raw))
    md = markdown_table(summary)
    assert "p_Holm=" in md and "95% CI" in md and "over seeds only" in md
    lines = stats_csv(summary).splitlines()
    assert lines[0].startswith("base,regularizers,setting,metric,delta,ci_low,ci_high,p,p_holm")
    assert len(lines) == 5
