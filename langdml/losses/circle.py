"""Circle loss (Sun et al., "Circle Loss: A Unified Perspective of Pair Similarity
Optimization", CVPR 2020)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from langdml.errors import LangDMLError

from ._class_weights import check_positive
from ._common import mined_pair_masks, positive_negative_masks
from ._fused import gram_loss
from .base import IndicesTuple, MetricLoss


def _masked_softmax_lse(t: Tensor, keep: Tensor) -> tuple[Tensor, Tensor]:
    """(row-wise logsumexp over the kept entries, softmax over them: 0 elsewhere and in rows
    with nothing kept)."""
    t = torch.where(keep, t, float("-inf"))
    lse = torch.logsumexp(t, dim=1, keepdim=True)
    safe = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
    return lse.squeeze(1), torch.where(keep, (t - safe).exp(), torch.zeros_like(t))


def circle_value_and_grad(
    s: Tensor, pos: Tensor, neg: Tensor, m: float, gamma: float
) -> tuple[Tensor, Tensor]:
    """Circle loss of a (B, R) cosine matrix with boolean pair masks, and ∂L/∂s.

    Per anchor i with positives and negatives: L_i = softplus(lse_p + lse_n), lse_p =
    log Σ_p e^{-γ α_p (s_p - (1 - m))}, lse_n = log Σ_n e^{γ α_n (s_n - m)}, α_p = [1 + m - s_p]_+
    and α_n = [s_n + m]_+ held constant (no gradient, as the paper); the mean runs over the
    anchors whose L_i > 0 (PML's AvgNonZeroReducer).
    """
    a_p = (1.0 + m - s).clamp_min_(0.0).mul_(-gamma)  # ∂(pos logit)/∂s
    a_n = (s + m).clamp_min_(0.0).mul_(gamma)  # ∂(neg logit)/∂s
    lse_p, soft_p = _masked_softmax_lse(a_p * (s - (1.0 - m)), pos)
    lse_n, soft_n = _masked_softmax_lse(a_n * (s - m), neg)
    valid = pos.any(dim=1) & neg.any(dim=1)
    z = torch.where(valid, lse_p + lse_n, torch.zeros_like(lse_p))
    per_anchor = torch.where(valid, F.softplus(z), torch.zeros_like(z))
    counted = per_anchor > 0
    n = counted.sum().clamp_min(1).to(s.dtype)
    value = per_anchor.sum() / n  # rows not counted are exactly 0
    row_grad = torch.where(counted, torch.sigmoid(z), torch.zeros_like(z)).div_(n).unsqueeze(1)
    grad = soft_p.mul_(a_p).add_(soft_n.mul_(a_n)).mul_(row_grad)
    return value, grad


class CircleLoss(MetricLoss):
    """Circle loss (Sun et al., CVPR 2020), pytorch-metric-learning's CircleLoss:

        L = mean_{i: L_i > 0} log(1 + Σ_{p∈P_i} Σ_{n∈N_i} e^{γ(α_n (s_n - Δ_n) - α_p (s_p - Δ_p))})

    s the cosine similarity, α_p = [1 + m - s_p]_+ and α_n = [s_n + m]_+ (constants for the
    gradient), Δ_p = 1 - m, Δ_n = m; m = ``m`` (relaxation), γ = ``gamma`` (scale). Anchors
    without a positive or a negative add nothing. Pairs come from the labels (all i != j) or a
    miner; as PML, a mined tuple whose pair lists all have <= 1 entry gives 0.

    Valid values: m a finite number (the paper uses 0.25–0.4), gamma > 0.
    """

    def __init__(self, m: float = 0.4, gamma: float = 80.0, miner: nn.Module | None = None) -> None:
        super().__init__(miner)
        check_positive("CircleLoss", gamma=gamma)
        if not (isinstance(m, (int, float)) and abs(m) < float("inf")):
            raise LangDMLError(f"CircleLoss: m must be a finite number, got {m!r}")
        self.m = float(m)
        self.gamma = float(gamma)

    def compute(self, x: Tensor, labels: Tensor, indices_tuple: IndicesTuple | None) -> Tensor:
        if indices_tuple is None:
            pos, neg = positive_negative_masks(labels)
        else:
            if all(len(t) <= 1 for t in indices_tuple):
                return (x * 0.0).sum()
            pos, neg = mined_pair_masks(indices_tuple, x.shape[0], x.device)

        def value_and_grad(s: Tensor) -> tuple[Tensor, Tensor]:
            return circle_value_and_grad(s, pos, neg, self.m, self.gamma)

        return gram_loss(x, value_and_grad)
