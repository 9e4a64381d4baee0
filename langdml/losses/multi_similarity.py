"""Multi-Similarity loss (Wang et al., CVPR 2019)."""

from __future__ import annotations

from torch import Tensor, nn

from ._common import cosine_matrix, log1p_sum_exp, mined_pair_masks, positive_negative_masks
from .base import IndicesTuple, MetricLoss


class MultiSimilarityLoss(MetricLoss):
    """mean_i (1/α) log(1 + Σ_{p∈P_i} e^{-α(S_ip - λ)}) + (1/β) log(1 + Σ_{n∈N_i} e^{β(S_in - λ)}).

    S is the cosine similarity, λ = ``base``; P_i / N_i are all positives / negatives of anchor i,
    or those a miner keeps (e.g. MultiSimilarityMiner). Mean over all anchors, as PML.
    """

    def __init__(
        self,
        alpha: float = 2.0,
        beta: float = 50.0,
        base: float = 0.5,
        miner: nn.Module | None = None,
    ) -> None:
        super().__init__(miner)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.base = float(base)

    def compute(self, x: Tensor, labels: Tensor, indices_tuple: IndicesTuple | None) -> Tensor:
        s = cosine_matrix(x)
        if indices_tuple is None:
            pos, neg = positive_negative_masks(labels)
        else:
            pos, neg = mined_pair_masks(indices_tuple, x.shape[0], x.device)
        pos_term = log1p_sum_exp(self.alpha * (self.base - s), pos, dim=1) / self.alpha
        neg_term = log1p_sum_exp(self.beta * (s - self.base), neg, dim=1) / self.beta
        return (pos_term + neg_term).mean()
