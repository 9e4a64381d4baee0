"""scripts/benchmarks/bench_ties.py runs end to end on a small label set: its four kinds of
embeddings are what it says (distinct-row counts), and with the distinct-row path switched off
the metrics are the same (the script's own check, exercised here on every case)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts" / "benchmarks"))

import bench_ties  # noqa: E402


def test_cases_have_the_duplicates_they_describe():
    labels = bench_ties.make_labels(np.random.default_rng(0), 40)
    distinct = {
        c: len(np.unique(bench_ties.make_case(c, labels, 16, seed=1), axis=0))
        for c in bench_ties.CASES
    }
    assert distinct["random"] == len(labels)
    assert distinct["collapsed"] == 40
    odd = int((labels % 2 == 1).sum())
    assert distinct["half collapsed"] == 20 + odd
    assert distinct["one big copy"] == len(labels) - len(labels) // 50 + 1


def test_quick_run_with_the_full_search_agrees(tmp_path, capsys):
    out = tmp_path / "ties.md"
    assert (
        bench_ties.main(["--classes", "60", "--repeats", "1", "--full-search", "--out", str(out)])
        == 0
    )
    table = out.read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and "case" not in line]
    assert [r.split(" | ")[0][2:] for r in rows] == list(bench_ties.CASES)
    assert all(r.rstrip().endswith("| yes |") for r in rows), table
