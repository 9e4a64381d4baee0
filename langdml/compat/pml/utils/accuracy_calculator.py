"""pytorch-metric-learning's ``AccuracyCalculator`` over langdml's search and metrics.

Same constructor (``include``, ``exclude``, ``avg_of_avgs``, ``return_per_class``, ``k``,
``label_comparison_fn``, ``device``, ``knn_func``, ``kmeans_func``), same ``get_accuracy(query,
query_labels, reference=None, reference_labels=None, ref_includes_query=False, include=(),
exclude=())``, same keys (``AMI``, ``NMI``, ``mean_average_precision``,
``mean_average_precision_at_r``, ``mean_reciprocal_rank``, ``precision_at_1``, ``r_precision``)
and PML's numbers:

* Neighbours: langdml's exact search (``langdml.eval.knn_search``; ties by ascending reference
  index), Euclidean on the raw embeddings as PML's default ``FaissKNN`` (``metric="cosine"``,
  our addition, searches L2-normalised ones). ``ref_includes_query=True`` (the default without a
  reference): the first len(query) reference rows are the queries, each left out of its own
  neighbours by index. A ``knn_func`` with PML's call ``(query, k, reference,
  ref_includes_query) -> (distances, indices)`` replaces the search.
* k: None = the whole reference, "max_bin_count" = the largest class count in the reference
  (minus the query itself), or an int; an int below the largest class count warns (MAP@R and
  R-precision are then truncated at k, as PML computes them) instead of failing.
* Per-query formulas: ``langdml.eval.ranking``. R_q = reference items with the query's label
  (minus 1 with ``ref_includes_query``); queries with nothing to retrieve ("lone") are left out
  of the kNN metrics; NaN when every query is lone.
* ``avg_of_avgs``: the mean of the per-class means (classes = the labels of the non-lone
  queries); ``return_per_class``: those per-class means as a list (sorted label order).
* ``label_comparison_fn(a, b) -> bool tensor``: relevance between label tensors (float, as
  PML passes them; labels may be (N, m) rows); the clustering metrics cannot use it.
* NMI / AMI: ``retrieval_metrics``' k-means (faiss, 20 iterations, seed 1234 as PML's
  ``FaissKMeans``) of the queries into as many clusters as query labels, or ``kmeans_func(query,
  n_clusters) -> cluster ids``.

Not supported: subclasses adding ``calculate_*`` methods (PML's extension hook).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from langdml.errors import LangDMLError
from langdml.eval import knn_search, retrieval_metrics
from langdml.eval.metrics import adjusted_mutual_info
from langdml.eval.ranking import RANK_METRICS, class_means, rank_metric_rows

CLUSTERING = ("AMI", "NMI")
METRICS = tuple(sorted(CLUSTERING + RANK_METRICS))  # PML's order (sorted method names)
_R_METRICS = {"r_precision", "mean_average_precision_at_r"}


def _array(x: Any, name: str) -> np.ndarray:
    if x is None:
        raise LangDMLError(f"{name} is missing")
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _check_names(value: Any, arg: str) -> tuple[str, ...]:
    if not isinstance(value, tuple | list):
        raise LangDMLError(f"{arg} must be a tuple or list of metric names, got {value!r}")
    bad = [m for m in value if m not in METRICS]
    if bad:
        raise LangDMLError(f"{arg}: unknown metric(s) {bad}; expected some of {list(METRICS)}")
    return tuple(value)


class AccuracyCalculator:
    """PML's AccuracyCalculator (module docstring)."""

    def __init__(
        self,
        include: tuple[str, ...] = (),
        exclude: tuple[str, ...] = (),
        avg_of_avgs: bool = False,
        return_per_class: bool = False,
        k: int | str | None = None,
        label_comparison_fn: Callable | None = None,
        device: Any = None,
        knn_func: Callable | None = None,
        kmeans_func: Callable | None = None,
        metric: str = "euclidean",
    ) -> None:
        self.include, self.exclude = (
            _check_names(include, "include"),
            _check_names(exclude, "exclude"),
        )
        if avg_of_avgs and return_per_class:
            raise LangDMLError("avg_of_avgs and return_per_class are mutually exclusive")
        ok_int = isinstance(k, int) and not isinstance(k, bool) and k > 0
        if not ok_int and k not in (None, "max_bin_count"):
            raise LangDMLError(f"k must be an int > 0, None or 'max_bin_count'; got {k!r}")
        self.avg_of_avgs, self.return_per_class, self.k = avg_of_avgs, return_per_class, k
        self.label_comparison_fn = label_comparison_fn
        self.device = device
        self.knn_func, self.kmeans_func, self.metric = knn_func, kmeans_func, metric
        if label_comparison_fn is not None and set(self.get_curr_metrics()) & set(CLUSTERING):
            raise LangDMLError(
                "clustering metrics (NMI, AMI) cannot use label_comparison_fn; exclude them"
            )

    def get_curr_metrics(self, include: tuple = (), exclude: tuple = ()) -> list[str]:
        """The metrics a call computes: the constructor's include / exclude, then the call's."""
        names = [m for m in METRICS if (not self.include or m in self.include)]
        names = [m for m in names if m not in self.exclude]
        return [m for m in names if (not include or m in include) and m not in exclude]

    def requires_knn(self) -> list[str]:
        return list(RANK_METRICS)

    def requires_clustering(self) -> list[str]:
        return list(CLUSTERING)

    def get_accuracy(
        self,
        query: Any,
        query_labels: Any,
        reference: Any = None,
        reference_labels: Any = None,
        ref_includes_query: bool = False,
        include: tuple[str, ...] = (),
        exclude: tuple[str, ...] = (),
    ) -> dict[str, Any]:
        names = self.get_curr_metrics(
            _check_names(include, "include"), _check_names(exclude, "exclude")
        )
        q, ql = _array(query, "query").astype(np.float32), _array(query_labels, "query_labels")
        if reference is None:
            ref, rl, ref_includes_query = q, ql, True
        else:
            ref = _array(reference, "reference").astype(np.float32)
            rl = _array(reference_labels, "reference_labels")
        if len(q) != len(ql) or len(ref) != len(rl):
            raise LangDMLError("embeddings and labels must have the same length")
        if ref_includes_query and not (
            len(ref) >= len(q)
            and np.allclose(q, ref[: len(q)])
            and np.array_equal(ql, rl[: len(q)])
        ):
            raise LangDMLError(
                "ref_includes_query=True needs the first len(query) reference rows (and labels) "
                "to be the queries"
            )
        out: dict[str, Any] = {}
        if set(names) & set(CLUSTERING):
            out.update(self._clustering(q, ql, names))
        knn_names = [m for m in names if m in RANK_METRICS]
        if knn_names:
            out.update(self._ranked(q, ql, ref, rl, bool(ref_includes_query), knn_names))
        return {m: out[m] for m in names}

    def _clustering(self, q: np.ndarray, ql: np.ndarray, names: list[str]) -> dict[str, float]:
        from sklearn.metrics import normalized_mutual_info_score

        if ql.ndim != 1:
            raise LangDMLError("NMI / AMI need 1-D class labels")
        if self.kmeans_func is None:
            res = retrieval_metrics(
                q,
                ql,
                include=("clustering",),
                metric=self.metric,
                seed=1234,
                kmeans_iters=20,
                device=self._device(),
            )
            return {"NMI": res["nmi"], "AMI": res["ami"]}
        n_clusters = len(np.unique(ql))
        clusters = _array(self.kmeans_func(torch.from_numpy(q), n_clusters), "kmeans_func output")
        _, codes = np.unique(ql, return_inverse=True)
        return {
            "NMI": float(normalized_mutual_info_score(codes.reshape(-1), clusters)),
            "AMI": adjusted_mutual_info(codes.reshape(-1), clusters),
        }

    def _device(self) -> str:
        return "auto" if self.device is None else str(self.device)

    def _ranked(self, q, ql, ref, rl, includes_query: bool, names: list[str]) -> dict[str, Any]:
        axis = 0 if ql.ndim > 1 else None  # rows of multi-column labels are one label each
        uniq, q_idx = np.unique(ql, axis=axis, return_inverse=True)
        q_idx = q_idx.reshape(-1)
        counts, itself = self._label_counts(uniq, rl)
        lone_label = counts - itself <= 0 if includes_query else counts == 0
        R = counts[q_idx] - int(includes_query)
        keep = ~lone_label[q_idx]
        K = self._determine_k(int(counts.max()), len(ref), includes_query, names)
        if not keep.any():
            warnings.warn("None of the query labels are in the reference set.", stacklevel=3)
            nan = [float("nan")] * len(uniq) if self.return_per_class else float("nan")
            return {m: nan for m in names}
        rel = self._relevance(q, ql, ref, rl, K, includes_query)[keep]
        classes, cls = np.unique(q_idx[keep], return_inverse=True)
        out = {}
        for m in names:
            values = rank_metric_rows(rel, R[keep], m)
            if self.avg_of_avgs or self.return_per_class:
                per_class = class_means(values, cls.reshape(-1), len(classes))
                out[m] = per_class.tolist() if self.return_per_class else float(per_class.mean())
            else:
                out[m] = float(values.mean())
        return out

    def _label_counts(self, uniq: np.ndarray, rl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per distinct query label: matching reference items, and whether it matches itself."""
        fn = self.label_comparison_fn
        if fn is None:
            same = (rl[None, :] == uniq[:, None]).reshape(len(uniq), len(rl), -1).all(axis=2)
            return same.sum(axis=1), np.ones(len(uniq), dtype=np.int64)
        u, r = torch.as_tensor(uniq).float(), torch.as_tensor(rl).float()
        counts = np.array([int(torch.as_tensor(fn(u[i : i + 1], r)).sum()) for i in range(len(u))])
        itself = torch.as_tensor(fn(u, u)).cpu().numpy().astype(np.int64).reshape(-1)
        if len(itself) != len(u):
            raise LangDMLError("label_comparison_fn(a, b) must compare a and b row by row")
        return counts, itself

    def _determine_k(self, max_bin: int, n_ref: int, includes_query: bool, names) -> int:
        own = int(includes_query)
        if self.k == "max_bin_count":
            return max_bin - own
        if self.k is None:
            return n_ref - own
        if self.k > n_ref - own:
            raise LangDMLError(
                f"k={self.k} exceeds the {n_ref - own} reference items a query can retrieve"
            )
        if self.k < max_bin and _R_METRICS & set(names):
            warnings.warn(
                f"k={self.k} is below the largest class count ({max_bin}): "
                f"{sorted(_R_METRICS & set(names))} are truncated at k; use k='max_bin_count' "
                "(or 'mean_average_precision' for MAP@k)",
                stacklevel=4,
            )
        return int(self.k)

    def _relevance(self, q, ql, ref, rl, K, includes_query) -> np.ndarray:
        """(Q, K) relevance of every query's K neighbours (query i is reference row i when
        ``includes_query``, left out by index)."""
        if K <= 0:
            return np.zeros((len(q), 0), dtype=bool)
        if self.knn_func is not None:
            _, idx = self.knn_func(torch.from_numpy(q), K, torch.from_numpy(ref), includes_query)
            idx = _array(idx, "knn_func indices")
        else:
            _, idx = knn_search(
                q, ref, K, exclude_self=includes_query, metric=self.metric, device=self._device()
            )
        knn_labels = rl[idx]
        fn = self.label_comparison_fn
        if fn is None:
            same = knn_labels == ql[:, None]
            return same.reshape(len(q), K, -1).all(axis=2)
        a, b = torch.as_tensor(ql).float()[:, None], torch.as_tensor(knn_labels).float()
        return torch.as_tensor(fn(a, b)).cpu().numpy().astype(bool).reshape(len(q), K)
