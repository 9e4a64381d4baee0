"""Embeddings → the run's metrics: retrieval and clustering metrics, per-class rows and the
mistake-severity metrics."""

from __future__ import annotations

import numpy as np
import torch

from langdml.config import ExperimentConfig
from langdml.data.records import query_gallery
from langdml.eval.collapse import warn_if_collapsed
from langdml.experiment.run_data import RunData


def evaluate_embeddings(
    cfg: ExperimentConfig,
    embeddings: torch.Tensor,
    labels: np.ndarray,
    split: tuple[np.ndarray, np.ndarray] | None = None,
    query_sample: int | None = None,
) -> dict:
    """The run's metrics: leave-one-out over all rows, or with ``split`` = (query, gallery rows)
    (``data.records.query_gallery``, In-Shop) queries search the gallery only; ``query_sample``:
    kNN metrics over that many seeded queries (``retrieval_metrics``)."""
    from langdml.eval import retrieval_metrics

    warn_if_collapsed(embeddings, cfg.eval.metric)
    extra = ("clustering", "f1") if cfg.eval.clustering else ()
    include = ("recall", "map_r", "map_1000", *extra)
    labels = np.asarray(labels)
    reference = reference_labels = None
    if split is not None:
        q, g = split
        reference, reference_labels = embeddings[g], labels[g]
        embeddings, labels = embeddings[q], labels[q]
    return retrieval_metrics(
        embeddings,
        labels,
        reference,
        reference_labels,
        recall_ks=tuple(cfg.eval.recall_at),
        metric=cfg.eval.metric,
        include=include,
        seed=cfg.seed,
        device=cfg.train.device,
        search=cfg.eval.search,
        search_params=cfg.eval.search_params,
        query_sample=query_sample,
    )


def final_details(
    cfg: ExperimentConfig, embeddings: torch.Tensor, data: RunData
) -> tuple[list[dict], dict[str, float]]:
    """Per-class rows (``per_class.csv``) and the mistake-severity metrics (empty without a
    hierarchy) of the eval embeddings (``langdml.eval.per_class``)."""
    from langdml.eval.per_class import per_class_rows, query_results, severity_metrics

    labels = data.eval.labels
    how = dict(metric=cfg.eval.metric, device=cfg.train.device)
    split = query_gallery(data.eval)
    if split is None:
        res = query_results(embeddings, labels, **how)
    else:
        q, g = split
        res = query_results(embeddings[q], labels[q], embeddings[g], labels[g], **how)
    rows = per_class_rows(res, data.eval.class_names)
    codes = data.group_codes
    return rows, ({} if codes is None else severity_metrics(res.labels, res.top1, codes))
