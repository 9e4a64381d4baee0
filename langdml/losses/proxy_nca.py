"""ProxyNCA (Movshovitz-Attias et al., ICCV 2017)."""

from __future__ import annotations

import torch
from torch import Tensor

from langdml.errors import LangDMLError

from ._fused import cross_loss
from .base import IndicesTuple, ProxyLoss


class ProxyNCALoss(ProxyLoss):
    """mean_i -log( e^{-s‖z_i - p_{y_i}‖²} / Σ_c e^{-s‖z_i - p_c‖²} ), z and p L2-normalised.

    variant="pml" (default) is PML's ProxyNCALoss (denominator over all classes, s =
    ``softmax_scale``); variant="paper" excludes c = y_i from the denominator as in the paper.
    Proxies start from N(0, 1) like PML's. (PML drops samples whose softmax underflows to 0;
    this log-softmax form never underflows, so the two agree whenever PML's value is finite.)
    """

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        softmax_scale: float = 1.0,
        variant: str = "pml",
    ) -> None:
        super().__init__(num_classes, embedding_size)
        if variant not in ("pml", "paper"):
            raise LangDMLError(f"ProxyNCALoss: variant must be 'pml' or 'paper', got {variant!r}")
        if variant == "paper" and num_classes < 2:
            raise LangDMLError("ProxyNCALoss: variant='paper' needs num_classes >= 2")
        self.softmax_scale = float(softmax_scale)
        self.variant = variant
        torch.nn.init.normal_(self.proxies)

    def compute(self, x: Tensor, labels: Tensor, indices_tuple: IndicesTuple | None) -> Tensor:
        scale = 2.0 * self.softmax_scale
        rows = torch.arange(x.shape[0], device=x.device)
        paper = self.variant == "paper"

        def value_and_grad(cos: Tensor) -> tuple[Tensor, Tensor]:
            # -s‖z - p‖² = 2s·cos - 2s for unit vectors; the constant cancels in the softmax.
            logits = cos.mul_(scale)
            target = logits[rows, labels].clone()
            if paper:
                logits[rows, labels] = float("-inf")  # denominator over c != y only
            lse = torch.logsumexp(logits, dim=1, keepdim=True)
            value = (lse.squeeze(1) - target).mean()
            # ∂/∂logits = softmax (over the denominator's classes) - one_hot(y), per sample / B
            grad = logits.sub_(lse).exp_()
            grad[rows, labels] -= 1.0
            return value, grad.mul_(scale / x.shape[0])

        return cross_loss(x, self.fp32_proxies(x.device), value_and_grad)
