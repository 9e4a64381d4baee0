"""Evaluation during training, on the run's held-out classes: the embeddings (data-parallel
aware) go to the one evaluator of a run, ``experiment.evaluate_run_embeddings``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from langdml.config import ExperimentConfig
from langdml.experiment import RunData, embed, evaluate_run_embeddings
from langdml.models import EmbeddingModel
from langdml.train import distributed as dd


def eval_embeddings(
    cfg: ExperimentConfig,
    model: EmbeddingModel | None,
    data: RunData,
    ctx: dd.DistContext,
    device: torch.device,
) -> torch.Tensor:
    """Embeddings of the eval split (``model`` None: the raw eval features). Under several
    processes each rank embeds a contiguous share and all ranks gather them."""
    if model is None:
        return data.eval_features
    if not ctx.enabled:
        return embed(model, cfg, data)
    share = np.array_split(np.arange(len(data.eval)), ctx.world_size)[ctx.rank]
    local = embed(model, cfg, data, rows=share)
    comm = device if device.type == "cuda" else torch.device("cpu")
    return dd.all_gather_rows(local.to(comm)).cpu()


def evaluate_distributed(
    cfg: ExperimentConfig,
    model: EmbeddingModel | None,
    data: RunData,
    ctx: dd.DistContext,
    device: torch.device,
) -> dict:
    """Metrics of ``model`` (None: the raw eval features) on the eval split. Rank 0 computes the
    metrics and broadcasts them, so every rank continues with the same numbers."""
    emb = eval_embeddings(cfg, model, data, ctx, device)
    metrics = evaluate_run_embeddings(cfg, emb, data).metrics if ctx.is_main else None
    return dd.broadcast_object(metrics, ctx, device)


def final_evaluation_details(
    cfg: ExperimentConfig,
    model: EmbeddingModel,
    data: RunData,
    ctx: dd.DistContext,
    device: torch.device,
    run_dir: Path,
) -> dict[str, Any]:
    """After the last epoch: ``per_class.csv`` (per eval class: queries, mean Recall@1 and
    MAP@R; written atomically by rank 0) and, with a class hierarchy, the summary's
    ``{"hierarchy": {...}}`` mistake-severity metrics (``langdml.eval.per_class``)."""
    from langdml.eval.per_class import PER_CLASS

    emb = eval_embeddings(cfg, model, data, ctx, device)
    if not ctx.is_main:
        return {}
    found = evaluate_run_embeddings(cfg, emb, data, metrics=False, details=True)
    found.write_per_class(Path(run_dir) / PER_CLASS)
    return {"hierarchy": found.hierarchy} if found.hierarchy else {}
