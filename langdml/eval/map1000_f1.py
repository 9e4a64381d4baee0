"""The two metrics of Roth et al.'s DML code ("Revisiting Training Strategies and Generalization
Performance in Deep Metric Learning", ICML 2020; also the Language-Guidance authors' default):

* MAP@1000 (``map@1000``): for query q with class size n_q (the query included, as Roth's
  ``np.unique(..., return_counts=True)`` counts it), rel_q(i) and P_q(i) as for MAP@R over the
  first min(1000, N-1) neighbours (the query itself excluded),
  AP_q = (1/n_q) sum_{i<=1000} P_q(i) rel_q(i); MAP@1000 = mean over all queries. Roth's
  normaliser is n_q, not n_q - 1, so a perfect embedding scores mean((n_q - 1)/n_q) < 1.
* F1 (``f1``): the pairwise F-measure of the k-means clustering (the clusters of NMI): over all
  unordered pairs of queries, TP = pairs in the same class and the same cluster,
  precision = TP / (pairs in the same cluster), recall = TP / (pairs in the same class),
  F1 = 2 P R / (P + R) (Roth's ``f1.py``, after Oh Song et al. 2017; that file names the two
  ratios the other way round, which leaves F1 unchanged). PML has neither metric.
"""

from __future__ import annotations

import numpy as np

MAP_AT = 1000


def average_precision_rows(rel: np.ndarray, n_q: np.ndarray) -> np.ndarray:
    """Per-query AP over the retrieved ranks ``rel`` (Q, K bool), divided by ``n_q`` (Q,)."""
    hits = np.cumsum(rel, axis=1, dtype=np.int64)
    precision = hits / np.arange(1, rel.shape[1] + 1, dtype=np.float64)
    return (precision * rel).sum(axis=1) / n_q


def _pairs(counts: np.ndarray) -> float:
    counts = counts.astype(np.float64)
    return float((counts * (counts - 1) / 2).sum())


def pairwise_f1(labels: np.ndarray, clusters: np.ndarray) -> float:
    """Pairwise F1 of ``clusters`` against ``labels`` (both (N,) ints)."""
    _, y = np.unique(labels, return_inverse=True)
    _, c = np.unique(clusters, return_inverse=True)
    table = np.zeros((y.max() + 1, c.max() + 1), dtype=np.int64)
    np.add.at(table, (y.reshape(-1), c.reshape(-1)), 1)
    tp = _pairs(table.ravel())
    same_cluster, same_class = _pairs(table.sum(axis=0)), _pairs(table.sum(axis=1))
    if tp == 0 or same_cluster == 0 or same_class == 0:
        return 0.0
    p, r = tp / same_cluster, tp / same_class
    return float(2 * p * r / (p + r))
