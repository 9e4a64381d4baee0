"""Collapsed evaluation embeddings: every image mapped to (nearly) one point.

Retrieval metrics of such embeddings are tie order, i.e. chance, and would otherwise pass as a
(bad) result; evaluation warns in one line instead.
"""

from __future__ import annotations

import numpy as np
import torch

# Spread below which evaluation embeddings count as collapsed to one point (relative RMS distance
# to their centroid): float32 noise of identical rows is ~1e-7, any working model is >> 1e-2.
COLLAPSE_SPREAD = 1e-4


def embedding_spread(embeddings: torch.Tensor, metric: str = "cosine") -> float:
    """RMS distance of the rows to their centroid over their RMS norm (cosine: of the
    L2-normalised rows); 0 when every row is the same point."""
    x = embeddings.detach().float().cpu()
    if metric == "cosine":
        x = torch.nn.functional.normalize(x, dim=-1)
    scale = x.pow(2).sum(-1).mean().sqrt().clamp_min(1e-12)
    return float((x - x.mean(0)).pow(2).sum(-1).mean().sqrt() / scale)


def warn_if_collapsed(embeddings: torch.Tensor | np.ndarray, metric: str = "cosine") -> bool:
    """Warn (one line) when the evaluation embeddings are one point: retrieval metrics of them
    are tie order, i.e. chance, and would otherwise pass as a (bad) result. True if so."""
    if isinstance(embeddings, np.ndarray):
        embeddings = torch.from_numpy(embeddings)
    if not torch.is_tensor(embeddings) or not embeddings.is_floating_point():
        return False
    if embeddings.dim() != 2 or len(embeddings) < 2 or not torch.isfinite(embeddings).all():
        return False  # NaN / inf are refused by the metrics themselves
    spread = embedding_spread(embeddings, metric)
    if spread >= COLLAPSE_SPREAD:
        return False
    import warnings

    warnings.warn(
        f"the {len(embeddings)} evaluation embeddings have collapsed to one point ({metric} "
        f"spread {spread:.1e} < {COLLAPSE_SPREAD:g}): every image gets the same embedding, so "
        "the retrieval metrics are chance; the model's features saturated or died in training "
        "(e.g. a fine-tuned trunk with frozen BatchNorm driven into the flat ends of its ReLU6: "
        "lower optimizer.lr; Proxy Anchor's paper fine-tunes at 1e-4)",
        RuntimeWarning,
        stacklevel=2,
    )
    return True
