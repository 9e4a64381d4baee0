"""Per-query metrics of ranked relevance lists, and their per-class means.

Input: ``rel`` (Q, K) bool, rel[q, i] = the (i+1)-th retrieved item is relevant to query q, and
``R`` (Q,) the number of relevant items query q could retrieve. With P_q(i) = (1/i) sum_{j<=i}
rel_q(j) (ranks from 1) and r_q = min(R_q, K), the per-query values (the definitions of
Musgrave et al., ECCV 2020, as pytorch-metric-learning's AccuracyCalculator computes them):

* ``precision_at_1``: rel_q(1).
* ``r_precision``: (1/r_q) sum_{i<=r_q} rel_q(i).
* ``mean_average_precision_at_r``: (1/R_q) sum_{i<=r_q} P_q(i) rel_q(i).
* ``mean_average_precision``: (1/R_q) sum_{i<=K} P_q(i) rel_q(i) -- average precision over the K
  retrieved items (K = the whole reference gives the usual AP).
* ``mean_reciprocal_rank``: 1 / (rank of the first relevant item), 0 if none in the first K.

When K < R_q the two @R values count only the first K ranks (r_q = K) but MAP@R still divides
by R_q. ``class_means`` averages per class (the classes sorted), for ``avg_of_avgs`` /
``return_per_class``.
"""

from __future__ import annotations

import numpy as np

from langdml.errors import LangDMLError
from langdml.eval.map1000_f1 import average_precision_rows

RANK_METRICS = (
    "mean_average_precision",
    "mean_average_precision_at_r",
    "mean_reciprocal_rank",
    "precision_at_1",
    "r_precision",
)


def rank_metric_rows(rel: np.ndarray, R: np.ndarray, name: str) -> np.ndarray:
    """Per-query float64 values of metric ``name`` (module docstring)."""
    rel = np.asarray(rel, dtype=bool)
    R = np.asarray(R, dtype=np.float64)
    K = rel.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        if name == "precision_at_1":
            return rel[:, 0].astype(np.float64) if K else np.zeros(len(rel))
        if name == "mean_reciprocal_rank":
            first = np.argmax(rel, axis=1)
            found = rel.any(axis=1)
            return np.where(found, 1.0 / (first + 1.0), 0.0)
        if name == "mean_average_precision":
            return average_precision_rows(rel, R)
        top = rel & (np.arange(K)[None, :] < R[:, None])  # the first r_q ranks
        if name == "mean_average_precision_at_r":
            return average_precision_rows(top, R)
        if name == "r_precision":
            return top.sum(axis=1) / np.minimum(R, K)
    raise LangDMLError(f"unknown rank metric {name!r}; expected one of {list(RANK_METRICS)}")


def class_means(values: np.ndarray, class_ids: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_classes,) mean of ``values`` per class id in [0, n_classes) (NaN for an empty one)."""
    sums = np.bincount(class_ids, weights=values, minlength=n_classes)
    counts = np.bincount(class_ids, minlength=n_classes)
    with np.errstate(divide="ignore", invalid="ignore"):
        return sums / counts
