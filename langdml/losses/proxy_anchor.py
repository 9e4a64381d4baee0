"""Proxy Anchor loss (Kim et al., CVPR 2020)."""

from __future__ import annotations

import torch
from torch import Tensor

from ._common import log1p_sum_exp, normalize
from .base import IndicesTuple, ProxyLoss


class ProxyAnchorLoss(ProxyLoss):
    """(1/|P⁺|) Σ_{c∈P⁺} log(1 + Σ_{y_i=c} e^{-α(s_ic - δ)})
    + (1/C) Σ_c log(1 + Σ_{y_i≠c} e^{α(s_ic + δ)}).

    s_ic is the cosine similarity of sample i and proxy c, P⁺ the classes present in the batch,
    δ = ``margin``. Proxies start from kaiming-normal (fan_out), as PML and the paper's code.
    """

    def __init__(
        self, num_classes: int, embedding_size: int, margin: float = 0.1, alpha: float = 32.0
    ) -> None:
        super().__init__(num_classes, embedding_size)
        self.margin = float(margin)
        self.alpha = float(alpha)
        torch.nn.init.kaiming_normal_(self.proxies, mode="fan_out")

    def compute(self, x: Tensor, labels: Tensor, indices_tuple: IndicesTuple | None) -> Tensor:
        cos = normalize(x) @ normalize(self.fp32_proxies(x.device)).T
        pos = labels[:, None] == torch.arange(self.num_classes, device=x.device)[None, :]
        pos_term = log1p_sum_exp(-self.alpha * (cos - self.margin), pos, dim=0)
        neg_term = log1p_sum_exp(self.alpha * (cos + self.margin), ~pos, dim=0)
        num_present = pos.any(dim=0).sum().clamp_min(1)
        return pos_term.sum() / num_present + neg_term.sum() / self.num_classes
