"""scripts/bench_eval.py's "calibrated" synthetic set re-measures to the spectra it is calibrated
to (scripts/embedding_spectrum.py on the generated rows), and ``--approx --approx-query-sample``
runs end to end: an exhaustive IVF on the sampled queries has Δ 0 against exact on the same ones."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import bench_eval  # noqa: E402
import embedding_spectrum  # noqa: E402


def spectrum_pr(lam):
    lam = np.asarray(lam)
    return lam.sum() ** 2 / (lam**2).sum()


def test_calibrated_set_reproduces_the_measured_statistics():
    target = json.loads(bench_eval.CALIBRATION.read_text())["mean"]
    x, y = bench_eval.make_calibrated(30_000, 128, (5, 15), seed=3)
    got = embedding_spectrum.analyse_arrays(x, y, "generated")
    for part in ("within", "between"):
        want = spectrum_pr(target[f"{part}_spectrum"])
        assert got[part]["participation_ratio"] == pytest.approx(want, rel=0.1), part
    assert got["trace_within_over_between"] == pytest.approx(
        target["trace_within_over_between"], rel=0.05
    )
    assert got["mean_sq_over_trace"] == pytest.approx(target["mean_sq_over_trace"], rel=0.1)


def test_isotropic_set_is_isotropic_and_differs_from_the_calibrated_one():
    x, y = bench_eval.make_data(30_000, 128, (5, 15), noise=1.4)
    got = embedding_spectrum.analyse_arrays(x, y, "isotropic")
    assert got["within"]["participation_ratio"] > 120
    assert got["between"]["participation_ratio"] > 100
    assert got["trace_within_over_between"] == pytest.approx(1.96, rel=0.05)


def test_wrong_dimension_is_refused():
    with pytest.raises(SystemExit, match="not d = 64"):
        bench_eval.make_calibrated(1000, 64, (5, 15))


def test_approx_query_sample_smoke(tmp_path):
    out = tmp_path / "bench.md"
    cmd = [sys.executable, str(ROOT / "scripts" / "bench_eval.py"), "--approx", "--approx-n"]
    cmd += ["3000", "--approx-data", "calibrated", "--approx-query-sample", "500"]
    cmd += ["--approx-search", "ivf:nlist=8,nprobe=8", "--out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = [r for r in out.read_text().splitlines() if r.startswith("| calibrated |")]
    assert len(rows) == 2
    exact, ivf = ([c.strip() for c in r.strip("|").split("|")] for r in rows)
    assert exact[1] == "exact" and exact[4].startswith("500 sampled")
    assert ivf[1] == "ivf" and ivf[4].startswith("all timed")
    # every cell scanned: the same neighbours as exact on the same 500 queries
    assert ivf[8].endswith("(+0.00)") and ivf[9].endswith("(+0.00)") and ivf[10] == "1.0000"
    assert ivf[8].split()[0] == exact[8].split()[0]
