"""Contrastive loss (Hadsell et al. 2006) in pytorch-metric-learning's default form."""

from __future__ import annotations

from torch import Tensor, nn

from ._class_weights import check_non_negative
from ._common import float_pair_masks, mined_pair_counts
from ._fused import above, below, distance_grad_to_similarity_, gram_loss, unit_distances_
from .base import IndicesTuple, MetricLoss


class ContrastiveLoss(MetricLoss):
    """mean_{pos pairs, >0} [D_ij - m_pos]_+  +  mean_{neg pairs, >0} [m_neg - D_ij]_+ .

    D is the Euclidean distance of L2-normalised embeddings; each mean runs over the pairs with a
    non-zero term (PML's AvgNonZeroReducer). Pairs come from the labels (all i != j) or a miner
    (a pair mined k times counts k times, as in PML). This is PML's ContrastiveLoss with its
    defaults, not Hadsell et al.'s own formula: theirs squares and halves both terms
    (½ D² for positives, ½ [m - D]_+² for negatives), has no positive margin and sums over pairs.

    Valid ranges: m_pos ≥ 0, m_neg ≥ 0.
    """

    def __init__(
        self, pos_margin: float = 0.0, neg_margin: float = 1.0, miner: nn.Module | None = None
    ) -> None:
        super().__init__(miner)
        check_non_negative("ContrastiveLoss", pos_margin=pos_margin, neg_margin=neg_margin)
        self.pos_margin = float(pos_margin)
        self.neg_margin = float(neg_margin)

    def compute(self, x: Tensor, labels: Tensor, indices_tuple: IndicesTuple | None) -> Tensor:
        if indices_tuple is None:
            pos_w, neg_w = float_pair_masks(labels)
        else:
            pos_w, neg_w = mined_pair_counts(indices_tuple, x.shape[0], x.device)
        mp, mn = self.pos_margin, self.neg_margin

        def value_and_grad(s: Tensor) -> tuple[Tensor, Tensor]:
            d = unit_distances_(s)
            wp = above(d, mp).mul_(pos_w)  # pairs with a non-zero term, times multiplicity
            wn = below(d, mn).mul_(neg_w)
            n_p, n_n = wp.sum(), wn.sum()
            # ∂L/∂D = wp / n_p - wn / n_n, and L = Σ (∂L/∂D) D - m_pos [n_p > 0] + m_neg [n_n > 0]
            grad = wp.div_(n_p.clamp_min(1)).sub_(wn.div_(n_n.clamp_min(1)))
            value = grad.flatten().dot(d.flatten())
            value = value - mp * (n_p > 0).to(d.dtype) + mn * (n_n > 0).to(d.dtype)
            # without a miner every weight is 0/1, so n_p + n_n counts the gradient's non-zeros
            nnz = n_p + n_n if indices_tuple is None else d.numel()
            return value, distance_grad_to_similarity_(grad, d), nnz

        return gram_loss(x, value_and_grad, symmetric=indices_tuple is None)
