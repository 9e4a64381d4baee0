"""Contrastive loss (Hadsell et al. 2006) in pytorch-metric-learning's default form."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._common import cosine_matrix, distance_from_cosine, mined_pair_counts, positive_negative_masks
from .base import IndicesTuple, MetricLoss


def avg_nonzero(losses: Tensor, weights: Tensor) -> Tensor:
    """Weighted mean of the strictly positive entries (0 if none), without a host sync."""
    w = torch.where(losses > 0, weights.to(losses.dtype), torch.zeros_like(losses))
    return (losses * w).sum() / w.sum().clamp_min(1.0)


class ContrastiveLoss(MetricLoss):
    """mean_{pos pairs, >0} [D_ij - m_pos]_+  +  mean_{neg pairs, >0} [m_neg - D_ij]_+ .

    D is the Euclidean distance of L2-normalised embeddings; each mean runs over the pairs with a
    non-zero term (PML's AvgNonZeroReducer). Pairs come from the labels (all i != j) or a miner.
    """

    def __init__(
        self, pos_margin: float = 0.0, neg_margin: float = 1.0, miner: nn.Module | None = None
    ) -> None:
        super().__init__(miner)
        self.pos_margin = float(pos_margin)
        self.neg_margin = float(neg_margin)

    def compute(self, x: Tensor, labels: Tensor, indices_tuple: IndicesTuple | None) -> Tensor:
        d = distance_from_cosine(cosine_matrix(x))
        if indices_tuple is None:
            pos_w, neg_w = positive_negative_masks(labels)
        else:
            pos_w, neg_w = mined_pair_counts(indices_tuple, x.shape[0], x.device)
        pos = avg_nonzero(torch.relu(d - self.pos_margin), pos_w)
        neg = avg_nonzero(torch.relu(self.neg_margin - d), neg_w)
        return pos + neg
