"""SoftTriple loss (Qian et al., "SoftTriple Loss: Deep Metric Learning Without Triplet
Sampling", ICCV 2019)."""

from __future__ import annotations

import torch
from torch import Tensor

from langdml.errors import LangDMLError

from ._class_weights import ClassWeightLoss, check_positive, softmax_cross_entropy_
from ._common import normalize
from ._fused import ValueAndGrad
from .base import IndicesTuple


class SoftTripleLoss(ClassWeightLoss):
    """SoftTriple (Qian et al., ICCV 2019), pytorch-metric-learning's SoftTripleLoss:

        S_ic = Σ_k softmax_k(cos(x_i, w_c^k) / γ) · cos(x_i, w_c^k)
        L = mean_i -log( e^{λ(S_{i,y_i} - δ)} / (e^{λ(S_{i,y_i} - δ)} + Σ_{c≠y_i} e^{λ S_ic}) )
            + τ · R

    K = ``centers_per_class`` centres w_c^k per class (``proxies``, (num_classes·K,
    embedding_size), class-major: rows c·K … c·K+K-1 belong to class c, ``proxy_labels`` says
    which), λ = ``la``, γ = ``gamma``, δ = ``margin``. Centres start as PML's (kaiming-uniform,
    a = √5, on its (embedding_size, C·K) layout, transposed). The paper's centre regulariser
    R = Σ_c Σ_{k<k'} √(2 + 1e-5 - 2 w_c^k·w_c^{k'}) / (C·K(K-1)) (normalised centres; the
    1e-5 inside the root comes from the authors' code, not the paper's equation) is added with
    weight τ = ``tau``; PML leaves it out, so the default τ = 0 equals PML.

    Valid values: num_classes, embedding_size, centers_per_class ints >= 1; la, gamma > 0;
    margin a finite number; tau >= 0.
    """

    init_kind = "kaiming_uniform"

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        centers_per_class: int = 10,
        la: float = 20.0,
        gamma: float = 0.1,
        margin: float = 0.01,
        tau: float = 0.0,
    ) -> None:
        super().__init__(num_classes, embedding_size, proxies_per_class=centers_per_class)
        check_positive("SoftTripleLoss", la=la, gamma=gamma)
        if not float(tau) >= 0 or not abs(float(margin)) < float("inf"):
            raise LangDMLError(
                f"SoftTripleLoss: tau must be >= 0 and margin finite, got {tau}, {margin}"
            )
        self.centers_per_class = centers_per_class
        self.la = float(la)
        self.gamma = float(gamma)
        self.margin = float(margin)
        self.tau = float(tau)

    def compute(self, x: Tensor, labels: Tensor, indices_tuple: IndicesTuple | None) -> Tensor:
        value = super().compute(x, labels, indices_tuple)
        if self.tau > 0 and self.centers_per_class > 1:
            value = value + self.tau * self.center_regularizer()
        return value

    def center_regularizer(self) -> Tensor:
        k = self.centers_per_class
        w = normalize(self.proxies.float()).view(self.num_classes, k, -1)
        sims = w @ w.transpose(1, 2)
        upper = torch.triu(torch.ones(k, k, dtype=torch.bool, device=w.device), diagonal=1)
        dist = (2.0 + 1e-5 - 2.0 * sims[:, upper]).clamp_min(0.0).sqrt()
        return dist.sum() / (self.num_classes * k * (k - 1))

    def logit_fn(self, labels: Tensor, weights: Tensor | None) -> ValueAndGrad:
        classes, k = self.num_classes, self.centers_per_class
        la, inv_gamma, delta = self.la, 1.0 / self.gamma, self.margin

        def value_and_grad(cos: Tensor) -> tuple[Tensor, Tensor]:
            rows = torch.arange(cos.shape[0], device=cos.device)
            c = cos.view(-1, classes, k)
            p = torch.softmax(c * inv_gamma, dim=2)
            s = (p * c).sum(dim=2)  # (B, C) relaxed class similarity
            # ∂S_ic/∂cos_ick = p_ick (1 + (cos_ick - S_ic) / γ)
            slope = c.sub(s.unsqueeze(2)).mul_(inv_gamma).add_(1.0).mul_(p)
            logits = s.mul_(la)
            logits[rows, labels] -= la * delta
            value, grad = softmax_cross_entropy_(logits, labels, weights)
            return value, slope.mul_(grad.mul_(la).unsqueeze(2)).view(cos.shape[0], -1)

        return value_and_grad
