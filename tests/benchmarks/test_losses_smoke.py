"""Smoke test: scripts/benchmarks/bench_losses.py --quick runs end to end on tiny sizes and writes
its table, with the floor columns (the floor's shapes are checked in test_losses_bench_floor.py).
(No timing assertions: speed claims come from the benchmark itself,
docs/results/benchmarks/bench_losses.md. The peak-memory children are left out here because
starting their forkserver alone takes seconds.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pytorch_metric_learning")

ROOT = Path(__file__).resolve().parents[2]


def test_bench_losses_quick_smoke(tmp_path):
    out = tmp_path / "bench.md"
    bench = ROOT / "scripts" / "benchmarks" / "bench_losses.py"
    cmd = [sys.executable, str(bench), "--quick", "--sizes", "8"]
    cmd += ["--threads", "1", "--no-memory", "--out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    table = out.read_text()
    assert table == res.stdout
    rows = [line for line in table.splitlines() if line.startswith("| cpu |")]
    header = [c.strip() for c in table.split("| device |")[1].splitlines()[0].strip("|").split("|")]
    header = ["device", *header]
    cells = [
        dict(zip(header, (c.strip() for c in r.strip("|").split("|")), strict=True)) for r in rows
    ]
    names = [c["loss"] for c in cells]
    assert names == [
        "multi_similarity",
        "triplet",
        "contrastive",
        "proxy_anchor",
        "proxy_nca",
        "npair",
        "margin",
        "circle",
        "arcface",
        "cosface",
        "normalized_softmax",
        "soft_triple",
        "xbm_multi_similarity",
        "xbm_contrastive",
    ]
    for row in cells:
        assert row["threads"] == "1"
        assert float(row["ours wall ms"]) > 0 and float(row["PML wall ms"]) > 0  # both timed
        # the floor was timed too, and its ratio is ours over it
        assert float(row["floor ms"]) >= 0
        assert row["ours/floor"] not in ("", "–") and float(row["ours/floor"]) > 0
        assert row["ours peak MiB"] == "–"  # --no-memory
    assert not list(tmp_path.glob(".bench.md.*"))  # the atomic write left no temp file
