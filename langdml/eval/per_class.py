"""Per-query retrieval results, their per-class means, and mistake-severity metrics.

The overall metrics (``langdml.eval.metrics``) average over queries; this module keeps the
per-query values so that (a) ``per_class.csv`` can store each test class's mean Recall@1 and MAP@R
(the ablation's bootstrap over test classes resamples them) and (b) the top-1 neighbour's class
can be compared with the query's class in a class hierarchy.

Per query (same definitions, lone-query rule and tie order as ``langdml.eval.metrics``): R_q, the
Recall@1 hit and AP@R. A class's value is the mean over its non-lone queries, so the
query-weighted mean of the per-class values is the overall Recall@1 / MAP@R.

Mistake severity, for a class hierarchy given as (C, D) group codes (``langdml.data.hierarchy``;
level 0 the coarsest group, level D-1 the finest), the class itself being level D. Over the
non-lone queries, with t = the query's class and p = the class of its top-1 neighbour:

* ``hier/top1_error_same_group``: among top-1 errors (p != t), the fraction with p in t's
  coarsest group (level 0: the emoji's Unicode group). NaN without errors. Our own name for this
  rate.
* ``hier/mistake_severity``: Bertinetto et al., "Making Better Mistakes: Leveraging Class
  Hierarchies with Deep Networks", CVPR 2020: the mean over top-1 errors of the height of the
  lowest common ancestor of p and t. With every class at depth D + 1 below the root, the height is
  D + 1 minus the number of levels p and t share (1 = same finest group, D + 1 = only the root in
  common). The paper's prediction is the classifier's top-1 class; ours is the class of the top-1
  retrieved neighbour.
* ``hier/hp@1``: hierarchical precision of Kiritchenko, Matwin, Nock and Famili ("Learning and
  evaluation in the presence of class hierarchies", Canadian AI 2006), hP = sum_q |A(t) ∩ A(p)| /
  sum_q |A(p)| with A(x) the class and its ancestors without the root, again with p the top-1
  neighbour's class. Every A(x) has D + 1 members here, so hP = hR = hF (1 for a correct top-1).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from langdml.errors import LangDMLError
from langdml.eval.knn import (
    ExactKNN,
    as_float32_matrix,
    check_metric,
    iter_knn,
    l2_normalize,
    resolve_backend,
)
from langdml.eval.map1000_f1 import average_precision_rows
from langdml.eval.self_index import check_self_index

PER_CLASS = "per_class.csv"  # in a run directory, written after the last epoch
PER_CLASS_COLUMNS = ("class", "class_name", "queries", "recall@1", "map@r")


@dataclass
class QueryResults:
    """Per non-lone query (``rows`` index the input queries): its label, R_q, Recall@1 hit,
    AP@R and the label of its top-1 neighbour."""

    rows: np.ndarray
    labels: np.ndarray
    relevant: np.ndarray
    recall_at_1: np.ndarray
    ap_r: np.ndarray
    top1: np.ndarray


def _int_labels(y: Any, n: int, name: str) -> np.ndarray:
    arr = np.asarray(y.detach().cpu().numpy() if hasattr(y, "detach") else y)
    if arr.ndim != 1 or len(arr) != n or arr.dtype.kind not in "iu" or (n and arr.min() < 0):
        raise LangDMLError(
            f"{name} must be {n} non-negative integer class labels; got shape {arr.shape}, "
            f"dtype {arr.dtype}"
        )
    return arr.astype(np.int64)


def query_results(
    embeddings: Any,
    labels: Any,
    reference: Any = None,
    reference_labels: Any = None,
    *,
    metric: str = "cosine",
    device: Any = "cpu",
    self_index: Any = None,
) -> QueryResults:
    """Per-query Recall@1, AP@R and top-1 label; leave-one-out without ``reference``, else the
    queries search the reference (e.g. a gallery). ``self_index`` (with ``reference``): per
    query the reference row that is the query itself, removed from its neighbours and from
    R_q, or -1 (as in ``retrieval_metrics``). Exact search (``eval.knn``)."""
    check_metric(metric)
    q = as_float32_matrix(embeddings, "embeddings")
    q_labels = _int_labels(labels, len(q), "labels")
    loo = reference is None
    ref = q if loo else as_float32_matrix(reference, "reference")
    r_labels = q_labels if loo else _int_labels(reference_labels, len(ref), "reference_labels")
    if ref.shape[1] != q.shape[1]:
        raise LangDMLError(f"embeddings have dimension {q.shape[1]}, reference {ref.shape[1]}")
    if loo:
        selves = np.arange(len(q))
    elif self_index is None:
        selves = np.full(len(q), -1, dtype=np.int64)
    else:
        selves = check_self_index(self_index, len(q), len(ref), q_labels, r_labels)
    if metric == "cosine":
        q = l2_normalize(q)
        ref = q if loo else l2_normalize(ref)
    n_codes = int(max(q_labels.max(), r_labels.max())) + 1
    R = np.bincount(r_labels, minlength=n_codes)[q_labels] - (selves >= 0)
    valid = np.flatnonzero(R > 0)
    empty = np.zeros(0)
    if valid.size == 0:
        return QueryResults(valid, valid, valid, empty, empty, valid)
    R_v, lab_v = R[valid], q_labels[valid]
    engine = ExactKNN(ref, metric, resolve_backend(device))
    hit1, ap, top1 = np.zeros(valid.size), np.zeros(valid.size), np.zeros(valid.size, np.int64)
    own = selves[valid]
    # queries whose own row is in the reference search one row fewer than the others
    for group in (np.flatnonzero(own >= 0), np.flatnonzero(own < 0)):
        if group.size == 0:
            continue
        has_self = bool(own[group[0]] >= 0)
        K = min(int(R_v[group].max()), len(ref) - int(has_self))
        self_ids = own[group] if has_self else None
        for start, stop, _, idx in iter_knn(engine, q[valid[group]], K, self_ids):
            rows, R_rows = group[start:stop], R_v[group[start:stop]]
            rel = r_labels[idx] == lab_v[rows, None]
            hit1[rows] = rel[:, 0]
            top1[rows] = r_labels[idx[:, 0]]
            in_r = np.arange(K)[None, :] < R_rows[:, None]
            ap[rows] = average_precision_rows(rel & in_r, R_rows)
    return QueryResults(valid, lab_v, R_v, hit1, ap, top1)


def per_class_rows(results: QueryResults, class_names: Sequence[str]) -> list[dict[str, Any]]:
    """One row per class (``PER_CLASS_COLUMNS``): its non-lone query count and mean Recall@1 and
    AP@R over them (NaN for a class without such queries)."""
    C = len(class_names)
    n = np.bincount(results.labels, minlength=C)
    r1 = np.bincount(results.labels, weights=results.recall_at_1, minlength=C)
    ap = np.bincount(results.labels, weights=results.ap_r, minlength=C)
    with np.errstate(invalid="ignore", divide="ignore"):
        r1, ap = r1 / n, ap / n  # 0/0 = NaN for classes without queries
    return [
        {
            "class": c,
            "class_name": class_names[c],
            "queries": int(n[c]),
            "recall@1": float(r1[c]),
            "map@r": float(ap[c]),
        }
        for c in range(C)
    ]


def per_class_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(PER_CLASS_COLUMNS), lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})
    return buf.getvalue()


def severity_metrics(
    true_classes: np.ndarray, top1_classes: np.ndarray, group_codes: np.ndarray
) -> dict[str, float]:
    """``hier/top1_error_same_group``, ``hier/mistake_severity`` and ``hier/hp@1`` (module
    docstring) of queries of class ``true_classes`` whose top-1 neighbour has ``top1_classes``;
    ``group_codes`` (C, D) from ``langdml.data.hierarchy.class_group_codes``."""
    t = np.asarray(true_classes, dtype=np.int64)
    p = np.asarray(top1_classes, dtype=np.int64)
    codes = np.asarray(group_codes, dtype=np.int64)
    depth = codes.shape[1] + 1  # the group levels and the class itself
    if t.size == 0:
        return {
            k: math.nan
            for k in ("hier/top1_error_same_group", "hier/mistake_severity", "hier/hp@1")
        }
    # codes agree on a prefix of levels (a level-j code encodes levels 0..j), so the agreeing
    # levels are counted directly
    shared = (codes[t] == codes[p]).sum(axis=1) + (t == p)
    wrong = t != p
    errors = int(wrong.sum())
    return {
        "hier/top1_error_same_group": (
            float((codes[t, 0] == codes[p, 0])[wrong].mean()) if errors else math.nan
        ),
        "hier/mistake_severity": float((depth - shared[wrong]).mean()) if errors else math.nan,
        "hier/hp@1": float(shared.sum() / (depth * t.size)),
    }
