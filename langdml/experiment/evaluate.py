"""Embeddings → the run's metrics: retrieval and clustering metrics, per-class rows and the
mistake-severity metrics; :func:`evaluate_run_embeddings` is the one evaluator of a run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from langdml.config import ExperimentConfig
from langdml.data.roles import EvalRoles, eval_roles
from langdml.errors import LangDMLError
from langdml.eval.collapse import warn_if_collapsed
from langdml.experiment.run_data import RunData


def evaluate_embeddings(
    cfg: ExperimentConfig,
    embeddings: torch.Tensor,
    labels: np.ndarray,
    roles: EvalRoles | None = None,
    query_sample: int | None = None,
) -> dict:
    """The run's metrics: leave-one-out over all rows, or with ``roles``
    (``data.roles.eval_roles``: a split file's is_query / is_gallery, In-Shop's query /
    gallery) the queries search the gallery only, a query that is a gallery image without
    itself; ``query_sample``: kNN metrics over that many seeded queries (``retrieval_metrics``)."""
    from langdml.eval import retrieval_metrics

    warn_if_collapsed(embeddings, cfg.eval.metric)
    extra = ("clustering", "f1") if cfg.eval.clustering else ()
    include = ("recall", "map_r", "map_1000", *extra)
    labels = np.asarray(labels)
    reference = reference_labels = self_index = None
    if roles is not None:
        reference, reference_labels = embeddings[roles.gallery], labels[roles.gallery]
        embeddings, labels = embeddings[roles.query], labels[roles.query]
        # no query among the gallery (In-Shop): the plain query -> reference search
        self_index = roles.self_index if (roles.self_index >= 0).any() else None
    return retrieval_metrics(
        embeddings,
        labels,
        reference,
        reference_labels,
        self_index=self_index,
        recall_ks=tuple(cfg.eval.recall_at),
        metric=cfg.eval.metric,
        include=include,
        seed=cfg.seed,
        device=cfg.train.device,
        search=cfg.eval.search,
        search_params=cfg.eval.search_params,
        rerank=cfg.eval.rerank,
        rerank_params=cfg.eval.rerank_params,
        query_sample=query_sample,
    )


def final_details(
    cfg: ExperimentConfig, embeddings: torch.Tensor, data: RunData
) -> tuple[list[dict], dict[str, float]]:
    """Per-class rows (``per_class.csv``) and the mistake-severity metrics (empty without a
    hierarchy) of the eval embeddings (``langdml.eval.per_class``), under the same roles as
    :func:`evaluate_embeddings`."""
    from langdml.eval.per_class import per_class_rows, query_results, severity_metrics

    labels = data.eval.labels
    how = dict(metric=cfg.eval.metric, device=cfg.train.device)
    roles = eval_roles(data.eval)
    if roles is None:
        res = query_results(embeddings, labels, **how)
    else:
        q, g = roles.query, roles.gallery
        res = query_results(
            embeddings[q],
            labels[q],
            embeddings[g],
            labels[g],
            self_index=roles.self_index,
            **how,
        )
    rows = per_class_rows(res, data.eval.class_names)
    codes = data.group_codes
    return rows, ({} if codes is None else severity_metrics(res.labels, res.top1, codes))


@dataclass
class RunEvaluation:
    """What the evaluator of a run found on its held-out classes: the retrieval metrics, and
    (when details were asked for) the per-class rows and the mistake-severity metrics."""

    metrics: dict[str, float] = field(default_factory=dict)
    per_class: list[dict] | None = None
    hierarchy: dict[str, float] = field(default_factory=dict)

    def write_per_class(self, path: str | Path) -> Path:
        """The per-class rows as ``per_class.csv``'s format, written atomically to ``path``."""
        from langdml.eval.per_class import per_class_csv
        from langdml.io import atomic_write_text

        if self.per_class is None:
            raise LangDMLError("this evaluation computed no per-class rows (details=False)")
        atomic_write_text(Path(path), per_class_csv(self.per_class))
        return Path(path)


def evaluate_run_embeddings(
    cfg: ExperimentConfig,
    embeddings: torch.Tensor,
    data: RunData,
    *,
    metrics: bool = True,
    details: bool = False,
    query_sample: int | None = None,
) -> RunEvaluation:
    """The evaluator of a run — training's periodic and final evaluations, ``langdml evaluate``
    and every ablation cell (through training) call it: ``embeddings`` are the rows of
    ``data.eval``; with evaluation roles (``data.roles.eval_roles``: a split file's, In-Shop's)
    the queries search the gallery, else leave-one-out. ``metrics``: the retrieval metrics
    (:func:`evaluate_embeddings`); ``details``: the per-class rows and mistake-severity metrics
    (:func:`final_details`), both from an exact search."""
    out = RunEvaluation()
    if metrics:
        roles = eval_roles(data.eval)
        labels = data.eval.labels
        out.metrics = evaluate_embeddings(cfg, embeddings, labels, roles, query_sample)
    if details:
        out.per_class, out.hierarchy = final_details(cfg, embeddings, data)
    return out
