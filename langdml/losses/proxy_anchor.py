"""Proxy Anchor loss (Kim et al., CVPR 2020)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._class_weights import check_non_negative, check_positive
from ._common import mined_sample_weights
from ._fused import DIRECT_EXP_BOUND, cross_loss, log1p_sum_exp_
from .base import IndicesTuple, ProxyLoss


class ProxyAnchorLoss(ProxyLoss):
    """(1/|P⁺|) Σ_{c∈P⁺} log(1 + Σ_{y_i=c} e^{-α(s_ic - δ)})
    + (1/C) Σ_c log(1 + Σ_{y_i≠c} e^{α(s_ic + δ)}).

    s_ic is the cosine similarity of sample i and proxy c, P⁺ the classes present in the batch,
    δ = ``margin``. Proxies start from kaiming-normal (fan_out), as PML and the paper's code.

    A mined ``indices_tuple`` (a, p, n) or (a1, p, a2, n) weights samples as PML does: with
    w_i = (times sample i occurs anywhere in the tuple) / (the largest such count), every
    exponent of sample i, positive and negative, gets + (w_i - 1); each of its terms is scaled
    by e^{w_i - 1}, so a sample the tuple never names still counts, at e^{-1}. The divisors
    (|P⁺| and C) are unchanged. A tuple with no indices at all leaves the loss unmined (as PML).

    Valid ranges: δ ≥ 0 (margin), α > 0 (scale).
    """

    def __init__(
        self, num_classes: int, embedding_size: int, margin: float = 0.1, alpha: float = 32.0
    ) -> None:
        super().__init__(num_classes, embedding_size)
        check_non_negative("ProxyAnchorLoss", margin=margin)
        check_positive("ProxyAnchorLoss", alpha=alpha)
        self.margin = float(margin)
        self.alpha = float(alpha)
        torch.nn.init.kaiming_normal_(self.proxies, mode="fan_out")

    def compute(self, x: Tensor, labels: Tensor, indices_tuple: IndicesTuple | None) -> Tensor:
        alpha, delta, num_classes = self.alpha, self.margin, self.num_classes
        rows = torch.arange(x.shape[0], device=x.device)
        # cosines lie in [-1, 1]: within DIRECT_EXP_BOUND the exps need no max-shift
        direct = abs(alpha) * (1 + abs(delta)) <= DIRECT_EXP_BOUND
        # Mined: log-weights w_i - 1 <= 0, added to sample i's exponents (keeps `direct` safe).
        log_w = None
        if indices_tuple is not None:
            who = type(self).__name__
            weights = mined_sample_weights(indices_tuple, x.shape[0], x.device, who, dtype=x.dtype)
            log_w = None if weights is None else weights.sub_(1.0)

        def value_and_grad(cos: Tensor) -> tuple[Tensor, Tensor]:
            # Positive part: each sample has exactly one positive proxy, so it is O(B).
            t = cos[rows, labels].sub(delta).mul_(-alpha)
            if log_w is not None:
                t.add_(log_w)
            shift = cos.new_zeros(num_classes).scatter_reduce_(0, labels, t, "amax")
            e = (t - shift[labels]).exp_()
            denom = cos.new_zeros(num_classes).index_add_(0, labels, e).add_(torch.exp(-shift))
            present = torch.zeros(num_classes, dtype=torch.bool, device=cos.device)
            present[labels] = True
            n_present = present.sum().clamp_min(1).to(cos.dtype)  # a float: exact in float64
            pos_value = (shift + denom.log()).sum() / n_present  # absent classes add log(1) = 0
            # Negative part over all (sample, other proxy) entries, in cos's buffer.
            if direct:  # e^{α(s+δ)} = e^{αδ} e^{αs}: the margin as one factor per proxy
                e_neg = cos.mul_(alpha)
                if log_w is not None:
                    e_neg.add_(log_w[:, None])
                e_neg[rows, labels] = float("-inf")  # exp -> 0: positives drop out
                denom_neg = e_neg.exp_().sum(dim=0).mul_(math.exp(alpha * delta)).add_(1.0)
                neg_value = denom_neg.log().sum() / num_classes
                grad = e_neg.mul_(
                    denom_neg.reciprocal_().mul_(math.exp(alpha * delta) * alpha / num_classes)
                )
            else:
                t_neg = cos.add_(delta).mul_(alpha)
                if log_w is not None:
                    t_neg.add_(log_w[:, None])
                t_neg[rows, labels] = float("-inf")
                neg_value = log1p_sum_exp_(t_neg, None, dim=0).sum() / num_classes
                grad = t_neg.mul_(alpha / num_classes)
            grad[rows, labels] = e.div_(denom[labels]).mul_(-alpha / n_present)
            return pos_value + neg_value, grad

        return cross_loss(x, self.fp32_proxies(x.device), value_and_grad)
