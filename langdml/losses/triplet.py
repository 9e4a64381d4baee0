"""Triplet margin loss over all triplets in O(B^2) memory."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._common import cosine_matrix, distance_from_cosine, mined_pair_masks, positive_negative_masks
from .base import IndicesTuple, MetricLoss


def triplet_sum_and_count(
    d: Tensor, pos: Tensor, neg: Tensor, margin: float
) -> tuple[Tensor, Tensor]:
    """Σ_{a,p,n} [d_ap - d_an + m]_+ and the number of non-zero terms, without a (B, B, B) tensor.

    For anchor a, sort its negatives' distances; the triplets (a, p, ·) that violate the margin
    are the first c_ap = #{n : d_an < d_ap + m} of them, contributing c_ap (d_ap + m) - prefix_c.
    Counts carry no gradient (they are piecewise constant), so autograd gives exactly the
    per-triplet gradients: +1 per active triplet to d_ap, -1 to d_an.
    """
    inf = torch.tensor(float("inf"), dtype=d.dtype, device=d.device)
    keys, order = torch.where(neg, d.detach(), inf).sort(dim=1)
    sorted_neg = torch.where(neg, d, torch.zeros_like(d)).gather(1, order)
    # float64 prefix sums: c (d_ap + m) - prefix_c cancels catastrophically in float32 at large B.
    prefix = F.pad(sorted_neg.double().cumsum(dim=1), (1, 0))
    counts = torch.searchsorted(keys, (d.detach() + margin).contiguous())
    counts = torch.where(pos, counts, torch.zeros_like(counts))
    total = (counts * (d.double() + margin)).sum() - prefix.gather(1, counts).sum()
    return total, counts.sum()


class TripletLoss(MetricLoss):
    """mean over the non-zero terms of [D_ap - D_an + margin]_+ , by default over all triplets.

    D is the Euclidean distance of L2-normalised embeddings (as PML's TripletMarginLoss). All
    triplets are handled in closed form (sort + prefix sums, O(B^2 log B) time, O(B^2) memory);
    a pair miner (a1, p, a2, n) restricts positives/negatives per anchor, a triplet miner
    (a, p, n) gives explicit triplets.
    """

    def __init__(self, margin: float = 0.05, miner: nn.Module | None = None) -> None:
        super().__init__(miner)
        self.margin = float(margin)

    def compute(self, x: Tensor, labels: Tensor, indices_tuple: IndicesTuple | None) -> Tensor:
        d = distance_from_cosine(cosine_matrix(x))
        if indices_tuple is not None and len(indices_tuple) == 3:
            a, p, n = (t.long() for t in indices_tuple)
            losses = torch.relu(d[a, p] - d[a, n] + self.margin)
            return losses.sum() / (losses > 0).sum().clamp_min(1)
        if indices_tuple is None:
            pos, neg = positive_negative_masks(labels)
        else:
            pos, neg = mined_pair_masks(indices_tuple, x.shape[0], x.device)
        total, count = triplet_sum_and_count(d, pos, neg, self.margin)
        return (total / count.clamp_min(1)).to(torch.float32)
