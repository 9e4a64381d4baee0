"""Multi-Similarity loss (Wang et al., CVPR 2019)."""

from __future__ import annotations

import math

from torch import Tensor, nn

from ..errors import LangDMLError
from ._class_weights import check_positive
from ._common import float_pair_masks, mined_pair_masks
from ._fused import DIRECT_EXP_BOUND, gram_loss, log1p_sum_exp_, log1p_sum_exp_direct_
from .base import IndicesTuple, MetricLoss


class MultiSimilarityLoss(MetricLoss):
    """mean_i (1/α) log(1 + Σ_{p∈P_i} e^{-α(S_ip - λ)}) + (1/β) log(1 + Σ_{n∈N_i} e^{β(S_in - λ)}).

    S is the cosine similarity, λ = ``base``; P_i / N_i are all positives / negatives of anchor i,
    or those a miner keeps (e.g. MultiSimilarityMiner). Mean over all anchors, as PML.

    Valid ranges: α > 0, β > 0 (scales), λ finite.
    """

    def __init__(
        self,
        alpha: float = 2.0,
        beta: float = 50.0,
        base: float = 0.5,
        miner: nn.Module | None = None,
    ) -> None:
        super().__init__(miner)
        check_positive("MultiSimilarityLoss", alpha=alpha, beta=beta)
        if not math.isfinite(base):
            raise LangDMLError(f"MultiSimilarityLoss: base must be a finite number, got {base!r}")
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.base = float(base)

    def compute(self, x: Tensor, labels: Tensor, indices_tuple: IndicesTuple | None) -> Tensor:
        if indices_tuple is None:
            pos, neg = float_pair_masks(labels)
        else:
            pos, neg = (m.float() for m in mined_pair_masks(indices_tuple, x.shape[0], x.device))
        a, b, lam = self.alpha, self.beta, self.base
        # S in [-1, 1] bounds both exponents; within DIRECT_EXP_BOUND no max-shift is needed.
        top_pos = max(-a * (e - lam) for e in (-1.0, 1.0))
        top_neg = max(b * (e - lam) for e in (-1.0, 1.0))
        direct = max(top_pos, top_neg) <= DIRECT_EXP_BOUND

        def value_and_grad(s: Tensor) -> tuple[Tensor, Tensor]:
            rows = s.shape[0]
            t_pos = s.mul(-a).add_(a * lam)
            t_neg = s.mul_(b).sub_(b * lam)  # s is not needed after this
            if direct:
                pos_val = log1p_sum_exp_direct_(t_pos, pos, dim=1)
                neg_val = log1p_sum_exp_direct_(t_neg, neg, dim=1)
            else:
                pos_val = log1p_sum_exp_(t_pos, pos == 0, dim=1)
                neg_val = log1p_sum_exp_(t_neg, neg == 0, dim=1)
            value = (pos_val / a + neg_val / b).mean()
            # ∂/∂S of (1/β) log(1 + Σ e^{β(S - λ)}) is the softmax weight; the α-term's is minus it
            return value, t_neg.sub_(t_pos).div_(rows)

        return gram_loss(x, value_and_grad)
