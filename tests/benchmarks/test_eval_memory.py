"""scripts/benchmarks/bench_eval_memory.py: a child measures the call's own memory (the kernel's
peak mark reset at the call, anonymous and file-backed RSS sampled) and the fitted line recovers a
known one."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts" / "benchmarks"))

import bench_eval_memory  # noqa: E402

KIB = 2**20  # KiB per GiB


def test_a_child_reports_the_calls_own_peak(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_TMP", str(tmp_path))
    row = bench_eval_memory.measure(3000, "hnsw", {"M": 8, "efConstruction": 16, "efSearch": 16})
    assert 0 < row["metrics"]["recall@1"] <= 1
    assert 0 < row["metrics"]["neighbor_recall"] <= 1
    # the mark was reset at the call: below the process's lifetime peak (ru_maxrss), and the
    # sampled parts never exceed the kernel's own peak of their sum
    assert 0 < row["call_vmhwm_kib"] <= row["peak_rss_kib"]
    assert 0 < row["call_anon_peak_kib"] <= row["call_vmhwm_kib"]
    assert 0 < row["call_file_peak_kib"] <= row["call_vmhwm_kib"]
    assert row["file_bytes"] == 3000 * 128 * 4 + 128
    assert not list(tmp_path.iterdir())  # the memory-mapped input was removed


def test_the_fit_recovers_a_line_and_ignores_rows_above_fit_max():
    rows = [{"n": n, "f": (0.5 + 1.25 * n / 1e6) * KIB} for n in (1_000_000, 2_000_000, 4_000_000)]
    rows.append({"n": 10_000_000, "f": 99 * KIB})  # a measurement, not part of the fit
    a, b = bench_eval_memory.fit(rows, "f", fit_max=4_000_000)
    assert a == pytest.approx(0.5) and b == pytest.approx(1.25)
    assert bench_eval_memory.fit(rows[:1], "f", fit_max=4_000_000) is None
