"""Shared pieces of the classification-style losses with one trainable weight row per class
(ArcFace, CosFace, NormalizedSoftmax, SoftTriple): PML-compatible initialisation, the
softmax cross-entropy gradient, and the base class that keeps the weights as ``proxies``."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from langdml.errors import LangDMLError

from ._common import mined_sample_weights
from ._fused import ValueAndGrad, cross_loss, direct_exp_ok
from .base import IndicesTuple, ProxyLoss


def pml_layout_init(rows: int, dim: int, kind: str) -> Tensor:
    """(rows, dim) class weights drawn as pytorch-metric-learning draws its (dim, rows) ``W``:
    the same random stream fills a (dim, rows) tensor, then it is transposed, so under the same
    seed ours equal PML's ``W.T`` exactly. ``kind``: "normal" (N(0, 1), PML's default weight
    init) or "kaiming_uniform" (a = √5 on the (dim, rows) layout, i.e. U(±1/√rows): SoftTriple)."""
    w = torch.empty(dim, rows)
    if kind == "normal":
        torch.nn.init.normal_(w)
    elif kind == "kaiming_uniform":
        torch.nn.init.kaiming_uniform_(w, a=math.sqrt(5))
    else:
        raise LangDMLError(f"unknown weight init {kind!r}")
    return w.T.contiguous()


def softmax_cross_entropy_(
    logits: Tensor,
    labels: Tensor,
    weights: Tensor | None,
    grad_scale: float = 1.0,
    bounds: tuple[float, float] | None = None,
    exclude_target: bool = False,
) -> tuple[Tensor, Tensor]:
    """mean_i w_i (logsumexp_j logits_ij - logits_iy) and ``grad_scale`` times its gradient
    ∂/∂logits, which overwrites ``logits``: grad_scale · w_i (softmax_ij - [j = y_i]) / B.
    ``weights`` None means all 1. ``bounds``: (lowest, highest) logit, where the caller knows
    them; when they allow (``direct_exp_ok``) the exps need no max-shift. ``exclude_target``:
    the log-sum-exp runs over the other classes only (j != y_i; the target's gradient is then
    -grad_scale · w_i / B). One exp per entry, one pass for the gradient."""
    batch, classes = logits.shape
    column = labels[:, None]
    target = logits.gather(1, column).squeeze(1)
    if exclude_target:
        logits.scatter_(1, column, float("-inf"))
    if bounds is not None and direct_exp_ok(*bounds, classes):
        total = logits.exp_().sum(dim=1, keepdim=True)
        lse = total.log()
    else:
        shift = logits.amax(dim=1, keepdim=True)
        total = logits.sub_(shift).exp_().sum(dim=1, keepdim=True)
        lse = total.log().add_(shift)
    per_sample = lse.squeeze(1).sub_(target)
    step = grad_scale / batch
    coef = total.reciprocal_().mul_(step)
    if weights is None:
        at_target = torch.full_like(target, -step).unsqueeze(1)
    else:
        per_sample.mul_(weights)
        coef.mul_(weights[:, None])
        at_target = weights.mul(-step).unsqueeze(1)
    grad = logits.mul_(coef).scatter_add_(1, column, at_target)
    return per_sample.mean(), grad


def check_positive(who: str, **values: float) -> None:
    for name, value in values.items():
        if not (isinstance(value, (int, float)) and not isinstance(value, bool)) or not (
            math.isfinite(value) and value > 0
        ):
            raise LangDMLError(f"{who}: {name} must be a finite number > 0, got {value!r}")


def check_non_negative(who: str, **values: float) -> None:
    for name, value in values.items():
        if not (isinstance(value, (int, float)) and not isinstance(value, bool)) or not (
            math.isfinite(value) and value >= 0
        ):
            raise LangDMLError(f"{who}: {name} must be a finite number >= 0, got {value!r}")


class ClassWeightLoss(ProxyLoss):
    """A ProxyLoss whose ``proxies`` are a classifier's class weights (PML's ``W.T``), drawn as
    PML draws them. Subclasses give ``logit_fn(labels, weights) -> fn(t) -> (L, ∂L/∂t)`` on
    t = ``logit_scale()`` x the cosines of L2-normalised embeddings and weights.

    A mined ``indices_tuple`` weights samples as PML's classification losses do: w_i = (times
    sample i occurs anywhere in the tuple) / (the largest such count), the loss mean_i w_i ·
    loss_i (a sample never named gets 0); a tuple with no indices leaves the loss unmined.
    """

    init_kind = "normal"

    def __init__(self, num_classes: int, embedding_size: int, proxies_per_class: int = 1) -> None:
        super().__init__(num_classes, embedding_size, proxies_per_class)
        rows = num_classes * proxies_per_class
        with torch.no_grad():
            self.proxies.copy_(pml_layout_init(rows, embedding_size, self.init_kind))

    def compute(self, x: Tensor, labels: Tensor, indices_tuple: IndicesTuple | None) -> Tensor:
        weights = None
        if indices_tuple is not None:
            who = type(self).__name__
            weights = mined_sample_weights(indices_tuple, x.shape[0], x.device, who, dtype=x.dtype)
        fn = self.logit_fn(labels, weights)
        return cross_loss(x, self.weight_rows(x.device), fn, self.logit_scale())

    def weight_rows(self, device: torch.device) -> Tensor:
        """The rows ``logit_fn``'s cosines are taken against, in its column order (the proxies,
        in float32; a subclass may reorder them, with autograd to ``proxies``)."""
        return self.fp32_proxies(device)

    def logit_scale(self) -> float:
        """The factor ``logit_fn``'s input carries: it gets logit_scale() x the cosines."""
        return 1.0

    def logit_fn(self, labels: Tensor, weights: Tensor | None) -> ValueAndGrad:
        raise NotImplementedError
