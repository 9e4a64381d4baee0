"""A paired bootstrap of an ablation delta over test classes AND seeds.

Each run stores ``per_class.csv`` (``langdml.eval.per_class``): per test class its number of
queries n_c and mean Recall@1 / MAP@R. For a cell and its reference cell over the common seeds
s = 1..S, d[s, c] is the per-class difference, and the table's delta is

    Δ = (1/S) sum_s sum_c n_c d[s, c] / sum_c n_c

(the mean over seeds of the difference of the query-averaged metric). One bootstrap replicate
draws S seeds and C classes with replacement, independently (classes and seeds are crossed
factors: the test classes are one sample of possible classes, the seeds one sample of training
noise), and recomputes Δ on the drawn multiset; the 95 % interval is the 2.5 / 97.5 percentiles
of 10,000 replicates, seeded, so a table is the same every time. The pairing (same seed, same
class in both cells) is kept inside every replicate. This two-way resampling is our choice (the
"pigeonhole" bootstrap of crossed factors, Owen, Annals of Applied Statistics 2007, is the same
scheme); it is conservative: for pure i.i.d. noise its variance is about three times the
sampling variance (the interval about 1.7 times wider). The seeds-only interval of
``langdml.ablation.report.bootstrap_ci`` ignores which classes were tested.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from langdml.eval.per_class import PER_CLASS, PER_CLASS_COLUMNS


def read_per_class(run_dir: str | Path) -> dict[str, np.ndarray] | None:
    """A run's per_class.csv as arrays (class, queries, recall@1, map@r); None when the run has
    none (older runs) or it cannot be read."""
    path = Path(run_dir) / PER_CLASS
    try:
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError:
        return None
    if not rows or list(rows[0]) != list(PER_CLASS_COLUMNS):
        return None
    try:
        return {
            "class": np.array([int(r["class"]) for r in rows]),
            "queries": np.array([int(r["queries"]) for r in rows]),
            "recall@1": np.array([float(r["recall@1"]) for r in rows]),
            "map@r": np.array([float(r["map@r"]) for r in rows]),
        }
    except (KeyError, ValueError):
        return None


def paired_class_seed_bootstrap(
    a: np.ndarray,
    b: np.ndarray,
    weights: np.ndarray,
    n_boot: int = 10000,
    level: float = 0.95,
    seed: int = 0,
    resample_classes: bool = True,
) -> tuple[float, float, float]:
    """(Δ, CI low, CI high) of the module docstring for (S, C) per-class values ``a`` and ``b``
    of the same seeds and classes and (C,) query counts ``weights`` (classes with 0 queries carry
    no weight). ``resample_classes=False`` resamples seeds only (for comparison)."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    keep = w > 0
    d, w = np.nan_to_num(d[:, keep]), w[keep]
    S, C = d.shape
    if S == 0 or C == 0:
        return math.nan, math.nan, math.nan
    point = float((d @ w).mean() / w.sum())
    if S * C < 2:
        return point, math.nan, math.nan
    rng = np.random.default_rng(seed)
    stats = np.empty(n_boot)
    block = max(1, min(n_boot, (1 << 22) // C))  # bounded memory: block x C class counts
    for start in range(0, n_boot, block):
        n = min(block, n_boot - start)
        if resample_classes:
            counts = rng.multinomial(C, np.full(C, 1.0 / C), size=n) * w  # (n, C) weights
        else:
            counts = np.broadcast_to(w, (n, C))
        seeds = rng.multinomial(S, np.full(S, 1.0 / S), size=n) / S  # (n, S) seed weights
        per_seed = counts @ d.T / counts.sum(axis=1, keepdims=True)  # (n, S)
        stats[start : start + n] = (per_seed * seeds).sum(axis=1)
    alpha = (1.0 - level) / 2
    return point, float(np.quantile(stats, alpha)), float(np.quantile(stats, 1 - alpha))


def cell_delta_ci(
    runs_a: list[str | Path], runs_b: list[str | Path], metric: str, seed: int = 0
) -> tuple[float, float, float] | None:
    """The class × seed bootstrap of ``metric`` between paired run directories (same seeds in
    the same order); None when a run has no per_class.csv or the runs tested different classes."""
    tables_a = [read_per_class(r) for r in runs_a]
    tables_b = [read_per_class(r) for r in runs_b]
    tables = tables_a + tables_b
    if not tables or any(t is None for t in tables):
        return None
    first = tables[0]
    for t in tables[1:]:
        if not np.array_equal(t["class"], first["class"]) or not np.array_equal(
            t["queries"], first["queries"]
        ):
            return None
    a = np.stack([t[metric] for t in tables_a])
    b = np.stack([t[metric] for t in tables_b])
    return paired_class_seed_bootstrap(a, b, first["queries"], seed=seed)
