"""Additive-margin softmax losses: ArcFace (Deng et al., CVPR 2019) and CosFace (Wang et al.,
CVPR 2018)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from langdml.errors import LangDMLError

from ._class_weights import ClassWeightLoss, check_positive, softmax_cross_entropy_
from ._fused import ValueAndGrad

# sin θ below this is treated as this in ArcFace's gradient (its slope 1/sin θ is unbounded as
# the embedding meets its class weight; PML's acos gives an infinite one there).
_MIN_SINE = 1e-12


class ArcFaceLoss(ClassWeightLoss):
    """ArcFace (Deng et al., "ArcFace: Additive Angular Margin Loss for Deep Face Recognition",
    CVPR 2019), pytorch-metric-learning's ArcFaceLoss:

        L = mean_i -log( e^{s·ψ(θ_{i,y_i})} / (e^{s·ψ(θ_{i,y_i})} + Σ_{j≠y_i} e^{s·cos θ_ij}) )

    cos θ_ij is the cosine of embedding i and class weight W_j (both L2-normalised), ψ(θ) =
    cos(θ + m) while θ <= π - m and cos θ - m·sin m beyond (keeps ψ decreasing), m =
    ``margin`` in DEGREES (PML's unit; 28.6° = the paper's 0.5 rad), s = ``scale``.
    The class weights are ``proxies`` (num_classes, embedding_size) — PML's ``W`` transposed,
    drawn from N(0, 1) in the same order — with ``proxy_labels``, so proxy-level language
    guidance and the proxy learning rate apply to them.

    Valid values: num_classes, embedding_size ints >= 1; margin in [0, 180); scale > 0.
    """

    def __init__(
        self, num_classes: int, embedding_size: int, margin: float = 28.6, scale: float = 64.0
    ) -> None:
        super().__init__(num_classes, embedding_size)
        check_positive("ArcFaceLoss", scale=scale)
        if not (isinstance(margin, (int, float)) and 0 <= margin < 180):
            raise LangDMLError(f"ArcFaceLoss: margin must be in [0, 180) degrees, got {margin!r}")
        self.margin = float(margin)
        self.scale = float(scale)

    def logit_scale(self) -> float:
        return self.scale

    def logit_fn(self, labels: Tensor, weights: Tensor | None) -> ValueAndGrad:
        m, s = math.radians(self.margin), self.scale
        cos_m, sin_m = math.cos(m), math.sin(m)
        column = labels[:, None]
        # logits in [-s (1 + m sin m), s]: ψ >= -1 - m sin m
        bounds = (-s * (1.0 + m * sin_m), s)

        def value_and_grad(logits: Tensor) -> tuple[Tensor, Tensor]:
            c = logits.gather(1, column).div_(s).clamp_(-1.0, 1.0)
            sin = c.square().neg_().add_(1.0).clamp_min_(0.0).sqrt_()
            in_range = c >= -cos_m  # θ = acos(c) <= π - m
            psi = torch.where(in_range, c * cos_m - sin * sin_m, c - m * sin_m)
            # ∂ψ/∂cos: the target logit s·ψ(c) has slope ψ'(c) in the scaled cosine s·c
            slope = torch.where(in_range, cos_m + c * sin_m / sin.clamp_min_(_MIN_SINE), 1.0)
            logits.scatter_(1, column, psi.mul_(s))
            value, grad = softmax_cross_entropy_(logits, labels, weights, bounds=bounds)
            return value, grad.scatter_(1, column, grad.gather(1, column).mul_(slope))

        return value_and_grad


class CosFaceLoss(ClassWeightLoss):
    """CosFace (Wang et al., "CosFace: Large Margin Cosine Loss for Deep Face Recognition",
    CVPR 2018), pytorch-metric-learning's CosFaceLoss:

        L = mean_i -log( e^{s(cos θ_{i,y_i} - m)} / (e^{s(cos θ_{i,y_i} - m)}
                                                      + Σ_{j≠y_i} e^{s·cos θ_ij}) )

    cos θ_ij as in ArcFaceLoss (class weights = ``proxies``, N(0, 1) as PML's ``W``),
    m = ``margin`` (a cosine, not an angle), s = ``scale``.

    Valid values: num_classes, embedding_size ints >= 1; margin a finite number (>= 0 in
    practice); scale > 0.
    """

    def __init__(
        self, num_classes: int, embedding_size: int, margin: float = 0.35, scale: float = 64.0
    ) -> None:
        super().__init__(num_classes, embedding_size)
        check_positive("CosFaceLoss", scale=scale)
        if not (isinstance(margin, (int, float)) and math.isfinite(margin)):
            raise LangDMLError(f"CosFaceLoss: margin must be a finite number, got {margin!r}")
        self.margin = float(margin)
        self.scale = float(scale)

    def logit_scale(self) -> float:
        return self.scale

    def logit_fn(self, labels: Tensor, weights: Tensor | None) -> ValueAndGrad:
        m, s = self.margin, self.scale
        column = labels[:, None]
        bounds = (-s * (1.0 + max(m, 0.0)), s * (1.0 + max(-m, 0.0)))

        def value_and_grad(logits: Tensor) -> tuple[Tensor, Tensor]:
            logits.scatter_add_(1, column, logits.new_full(column.shape, -s * m))
            return softmax_cross_entropy_(logits, labels, weights, bounds=bounds)

        return value_and_grad
