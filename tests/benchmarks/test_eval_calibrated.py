"""The benchmarks' "calibrated" synthetic set (``langdml.eval.synthetic``) re-measures to the
spectra it is calibrated to (``langdml.eval.spectrum`` on the generated rows), and
scripts/benchmarks/bench_eval.py ``--approx --approx-query-sample`` runs end to end: an exhaustive
IVF on the sampled queries has Δ 0 against exact on the same ones, and the hand-written text of the
section survives the rerun."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from langdml.errors import LangDMLError
from langdml.eval.spectrum import embedding_spectrum
from langdml.eval.synthetic import calibrated_embeddings, isotropic_embeddings, load_calibration

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "scripts" / "benchmarks" / "bench_eval.py"
CALIBRATION = ROOT / "docs" / "results" / "embedding_spectrum.json"


def spectrum_pr(lam):
    lam = np.asarray(lam)
    return lam.sum() ** 2 / (lam**2).sum()


def test_calibrated_set_reproduces_the_measured_statistics():
    target = json.loads(CALIBRATION.read_text())["mean"]
    x, y = calibrated_embeddings(30_000, 128, (5, 15), CALIBRATION, seed=3)
    got = embedding_spectrum(x, y, "generated")
    for part in ("within", "between"):
        want = spectrum_pr(target[f"{part}_spectrum"])
        assert got[part]["participation_ratio"] == pytest.approx(want, rel=0.1), part
    assert got["trace_within_over_between"] == pytest.approx(
        target["trace_within_over_between"], rel=0.05
    )
    assert got["mean_sq_over_trace"] == pytest.approx(target["mean_sq_over_trace"], rel=0.1)


def test_isotropic_set_is_isotropic_and_differs_from_the_calibrated_one():
    x, y = isotropic_embeddings(30_000, 128, (5, 15), noise=1.4)
    got = embedding_spectrum(x, y, "isotropic")
    assert got["within"]["participation_ratio"] > 120
    assert got["between"]["participation_ratio"] > 100
    assert got["trace_within_over_between"] == pytest.approx(1.96, rel=0.05)


def test_wrong_dimension_is_refused():
    with pytest.raises(LangDMLError, match="not d = 64"):
        calibrated_embeddings(1000, 64, (5, 15), CALIBRATION)


def test_a_bad_calibration_is_one_clear_error(tmp_path):
    bad = tmp_path / "cal.json"
    bad.write_text("{}")
    with pytest.raises(LangDMLError, match="not a spectrum calibration file"):
        load_calibration(bad)
    with pytest.raises(LangDMLError, match="missing mean_sq_over_trace"):
        load_calibration(
            {"between_spectrum": [1], "within_spectrum": [1], "trace_within_over_between": 1.0}
        )


def test_class_sizes_and_seed():
    x, y = isotropic_embeddings(5000, 8, (5, 15), seed=7, noise=0.5)
    sizes = np.bincount(y)
    assert x.shape == (5000, 8) and x.dtype == np.float32 and len(y) == 5000
    assert sizes[:-1].min() >= 5 and sizes.max() <= 15  # the last class is trimmed to fit N
    again, y2 = isotropic_embeddings(5000, 8, (5, 15), seed=7, noise=0.5)
    assert np.array_equal(x, again) and np.array_equal(y, y2)
    assert not np.array_equal(x, isotropic_embeddings(5000, 8, (5, 15), seed=8, noise=0.5)[0])


def test_approx_query_sample_smoke(tmp_path):
    out = tmp_path / "bench.md"
    cmd = [sys.executable, str(BENCH), "--approx", "--approx-n", "3000", "--approx-data"]
    cmd += ["calibrated", "--approx-query-sample", "500", "--search", "ivf"]
    cmd += ["--search-param", "nlist=8", "--search-param", "nprobe=8", "--out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    # hand-written text before and after the table survives a rerun
    text = out.read_text().replace("\n| set |", "\nSets: hand-written.\n\n| set |", 1)
    out.write_text(text + "\nHow to choose: hand-written.\n")
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    text = out.read_text()
    assert text.count("Sets: hand-written.") == 1
    assert text.count("How to choose: hand-written.") == 1
    assert text.index("Sets: hand-written.") < text.index("| set |")
    assert text.index("How to choose: hand-written.") > text.rindex("| calibrated |")
    rows = [r for r in out.read_text().splitlines() if r.startswith("| calibrated |")]
    assert len(rows) == 2
    exact, ivf = ([c.strip() for c in r.strip("|").split("|")] for r in rows)
    assert exact[1] == "exact" and exact[4].startswith("500 sampled")
    assert ivf[1] == "ivf" and ivf[4].startswith("all timed")
    # every cell scanned: the same neighbours as exact on the same 500 queries
    assert ivf[8].endswith("(+0.00)") and ivf[9].endswith("(+0.00)") and ivf[10] == "1.0000"
    assert ivf[8].split()[0] == exact[8].split()[0]


def test_search_param_without_search_is_one_line(tmp_path):
    cmd = [sys.executable, str(BENCH), "--approx", "--search-param", "nprobe=8"]
    res = subprocess.run(cmd + ["--out", str(tmp_path / "b.md")], capture_output=True, text=True)
    assert res.returncode != 0
    assert res.stderr.strip() == "--search-param needs --search ivf or --search hnsw"
