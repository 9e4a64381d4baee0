"""ProxyNCA (Movshovitz-Attias et al., ICCV 2017)."""

from __future__ import annotations

import torch
from torch import Tensor

from langdml.errors import LangDMLError

from ._class_weights import check_positive, softmax_cross_entropy_
from ._common import mined_sample_weights
from ._fused import cross_loss
from .base import IndicesTuple, ProxyLoss


class ProxyNCALoss(ProxyLoss):
    """mean_i -log( e^{-s‖z_i - p_{y_i}‖²} / Σ_c e^{-s‖z_i - p_c‖²} ), z and p L2-normalised.

    variant="pml" (default) is PML's ProxyNCALoss (denominator over all classes, s =
    ``softmax_scale``); variant="paper" excludes c = y_i from the denominator as in the paper.
    Proxies start from N(0, 1) like PML's. (PML drops samples whose softmax underflows to 0;
    this log-softmax form never underflows, so the two agree whenever PML's value is finite.)

    A mined ``indices_tuple`` (a, p, n) or (a1, p, a2, n) does not restrict pairs (there are
    none between samples); as in PML it weights each sample's term by w_i = (times i occurs as
    an anchor, a or a1/a2) / (the largest such count): mean_i w_i · loss_i, still divided by B,
    so samples never mined as anchors contribute 0. variant="paper" weights its terms the same
    way. A tuple with no indices at all leaves the loss unmined (as PML does).

    Valid range: softmax_scale > 0.
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
        check_positive("ProxyNCALoss", softmax_scale=softmax_scale)
        self.softmax_scale = float(softmax_scale)
        self.variant = variant
        torch.nn.init.normal_(self.proxies)

    def compute(self, x: Tensor, labels: Tensor, indices_tuple: IndicesTuple | None) -> Tensor:
        # -s‖z - p‖² = 2s·cos - 2s for unit vectors; the constant cancels in the softmax, so
        # the logits are the cosines scaled by 2s, within ±2s.
        scale = 2.0 * self.softmax_scale
        weights = None
        if indices_tuple is not None:
            who = type(self).__name__
            weights = mined_sample_weights(indices_tuple, x.shape[0], x.device, who, True, x.dtype)
        exclude = self.variant == "paper"  # denominator over c != y only

        def value_and_grad(logits: Tensor) -> tuple[Tensor, Tensor]:
            return softmax_cross_entropy_(
                logits, labels, weights, bounds=(-scale, scale), exclude_target=exclude
            )

        return cross_loss(x, self.fp32_proxies(x.device), value_and_grad, scale)
