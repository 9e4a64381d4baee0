"""SoftTriple loss (Qian et al., "SoftTriple Loss: Deep Metric Learning Without Triplet
Sampling", ICCV 2019)."""

from __future__ import annotations

import torch
from torch import Tensor

from langdml.errors import LangDMLError

from ._class_weights import ClassWeightLoss, check_positive, softmax_cross_entropy_
from ._common import normalize
from ._fused import DIRECT_EXP_BOUND, ValueAndGrad
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

    def weight_rows(self, device: torch.device) -> Tensor:
        """The centres centre-major (row k·C + c is centre k of class c): the cosines then come
        as (B, K, C), whose reductions over K run along contiguous class rows (over a trailing
        axis of size K, torch's CPU softmax and sums are an order of magnitude slower)."""
        w = self.fp32_proxies(device)
        k = self.centers_per_class
        if k == 1:
            return w
        return w.view(self.num_classes, k, -1).transpose(0, 1).reshape(k * self.num_classes, -1)

    def logit_fn(self, labels: Tensor, weights: Tensor | None) -> ValueAndGrad:
        classes, k = self.num_classes, self.centers_per_class
        la, gamma, delta = self.la, self.gamma, self.margin
        # t = cos / γ lies in [-1/γ, 1/γ]: within DIRECT_EXP_BOUND its exps need no max-shift
        direct = 1.0 / gamma <= DIRECT_EXP_BOUND

        def value_and_grad(cos: Tensor) -> tuple[Tensor, Tensor]:
            batch = cos.shape[0]
            rows = torch.arange(batch, device=cos.device)
            t = cos.view(batch, k, classes).div_(gamma)
            e = torch.exp(t) if direct else torch.sub(t, t.amax(dim=1, keepdim=True)).exp_()
            z = e.sum(dim=1)  # softmax_k(t) = e / z
            et = t.mul_(e)  # e·t, in t's buffer
            mean_t = et.sum(dim=1).div_(z)  # S_ic / γ, S the relaxed class similarity
            logits = mean_t.mul(gamma * la)
            logits[rows, labels] -= la * delta
            # S_ic in [-1, 1]: the logits lie within ±la (1 + |δ|)
            bound = la * (1.0 + abs(delta))
            value, grad = softmax_cross_entropy_(logits, labels, weights, la, (-bound, bound))
            # ∂S_ic/∂cos_ick = p_ick (1 + (cos_ick - S_ic) / γ) = (e / z)(1 + t - S / γ), so
            # ∂L/∂cos = a·(e·t) - b·e with a = la·∂L/∂logits / z and b = a (S / γ - 1)
            a = grad.div_(z)
            b = mean_t.sub_(1.0).mul_(a)
            slope = et.mul_(a.unsqueeze(1)).addcmul_(e, b.unsqueeze(1), value=-1.0)
            return value, slope.view(batch, -1)

        return value_and_grad
