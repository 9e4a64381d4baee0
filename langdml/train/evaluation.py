"""Evaluation during training, on the run's held-out classes (data-parallel aware)."""

from __future__ import annotations

import numpy as np
import torch

from langdml.config import ExperimentConfig
from langdml.experiment import RunData, embed, evaluate_embeddings
from langdml.models import EmbeddingModel
from langdml.train import distributed as dd


def evaluate_distributed(
    cfg: ExperimentConfig,
    model: EmbeddingModel | None,
    data: RunData,
    ctx: dd.DistContext,
    device: torch.device,
) -> dict:
    """Metrics of ``model`` (None: the raw eval features) on the eval split. Under several
    processes each rank embeds a contiguous share, rank 0 gathers them, computes the metrics and
    broadcasts them, so every rank continues with the same numbers."""
    if model is None:
        emb = data.eval_features
    elif not ctx.enabled:
        emb = embed(model, cfg, data)
    else:
        share = np.array_split(np.arange(len(data.eval)), ctx.world_size)[ctx.rank]
        local = embed(model, cfg, data, rows=share)
        comm = device if device.type == "cuda" else torch.device("cpu")
        emb = dd.all_gather_rows(local.to(comm)).cpu()
    metrics = evaluate_embeddings(cfg, emb, data.eval.labels) if ctx.is_main else None
    return dd.broadcast_object(metrics, ctx, device)
