"""N-pair loss (Sohn, NeurIPS 2016)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._class_weights import softmax_cross_entropy_
from ._common import cross_entropy, zero_loss
from ._fused import rows_cross_loss
from .base import IndicesTuple, MetricLoss


def first_pair_per_label(
    anchors: Tensor, positives: Tensor, labels: Tensor
) -> tuple[Tensor, Tensor]:
    """Keep, for every label, the first (anchor, positive) pair in the given order."""
    if anchors.numel() == 0:
        return anchors, positives
    pair_labels = labels[anchors]
    order = torch.sort(pair_labels, stable=True).indices
    sorted_labels = pair_labels[order]
    first = torch.ones_like(sorted_labels, dtype=torch.bool)
    first[1:] = sorted_labels[1:] != sorted_labels[:-1]
    keep = order[first]
    return anchors[keep], positives[keep]


def first_pair_of_each_label(labels: Tensor) -> tuple[Tensor, Tensor]:
    """Without mined pairs: the row-major first positive pair of a label is (its first row, its
    second row), found by one stable sort instead of a (B, B) mask."""
    order = torch.sort(labels, stable=True).indices
    s = labels[order]
    starts = torch.ones_like(s, dtype=torch.bool)
    starts[1:] = s[1:] != s[:-1]
    has_second = torch.zeros_like(starts)
    has_second[:-1] = s[1:] == s[:-1]
    pos = torch.nonzero(starts & has_second).flatten()
    return order[pos], order[pos + 1]


class NPairLoss(MetricLoss):
    """mean_k CE(softmax_j(z_{a_k} · z_{p_j}), k): one (anchor, positive) pair per class.

    As PML's NPairsLoss: embeddings L2-normalised, each class's pair is its first (anchor,
    positive) pair in row-major order. ``normalize_embeddings=False`` gives the paper's
    unnormalised inner products. ``l2_reg_weight`` adds λ · mean_i ||x_i||² over all B rows of
    the batch (the rows outside the chosen pairs included): our own form of the small L2
    penalty on embedding norms that the paper adds. Its weight and normalisation differ between
    sources (TensorFlow's npairs_loss: 0.25·λ·(mean ||a||² + mean ||p||²) over the pairs, λ =
    0.002; Roth et al.'s code reads the paper's λ as 0.02), so no value here is the paper's.
    """

    def __init__(
        self,
        normalize_embeddings: bool = True,
        l2_reg_weight: float = 0.0,
        miner: nn.Module | None = None,
    ) -> None:
        super().__init__(miner)
        self.normalize_embeddings = bool(normalize_embeddings)
        self.l2_reg_weight = float(l2_reg_weight)

    def compute(self, x: Tensor, labels: Tensor, indices_tuple: IndicesTuple | None) -> Tensor:
        if indices_tuple is None:
            a, p = first_pair_of_each_label(labels)
        else:
            a, p = first_pair_per_label(indices_tuple[0].long(), indices_tuple[1].long(), labels)
        if a.numel() == 0:
            loss = zero_loss(x)
        else:
            loss = self._pairs_loss(x, a, p)
        if self.l2_reg_weight:
            loss = loss + self.l2_reg_weight * x.pow(2).sum(dim=1).mean()
        return loss

    def _pairs_loss(self, x: Tensor, a: Tensor, p: Tensor) -> Tensor:
        """CE over the (N, N) similarities of the pairs' anchors and positives, target the
        diagonal. Normalised: the fused kernel (max-shifted: a single pair's loss is then
        exactly 0, as PML's)."""
        target = torch.arange(a.numel(), device=x.device)
        if not self.normalize_embeddings:
            return cross_entropy(x[a] @ x[p].T, target)

        def value_and_grad(cos: Tensor) -> tuple[Tensor, Tensor]:
            return softmax_cross_entropy_(cos, target, None)

        return rows_cross_loss(x, a, p, value_and_grad)
