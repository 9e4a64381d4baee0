"""Triplet margin loss over all triplets in O(B^2) memory."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._class_weights import check_non_negative
from ._common import distance_matrix, mined_pair_masks, positive_negative_masks
from ._fused import distance_grad_to_similarity_, gram_loss, unit_distances_
from .base import IndicesTuple, MetricLoss

# Up to this many positives per anchor, count active triplets with one (B, B) pass per positive
# slot; beyond it, binary-search each negative among the anchor's sorted thresholds.
_LOOP_MAX_POSITIVES = 16


def padded_positives(pos: Tensor) -> tuple[Tensor, Tensor]:
    """(B, K) column indices of each row's positives, K = most positives in a row, and a mask."""
    rows = pos.shape[0]
    counts = pos.sum(dim=1)
    k = int(counts.max()) if rows else 0
    a, p = pos.nonzero(as_tuple=True)
    slot = torch.arange(a.numel(), device=pos.device) - (torch.cumsum(counts, 0) - counts)[a]
    idx = torch.zeros(rows, k, dtype=torch.long, device=pos.device)
    valid = torch.zeros(rows, k, dtype=torch.bool, device=pos.device)
    idx[a, slot] = p
    valid[a, slot] = True
    return idx, valid


def active_triplet_counts(d: Tensor, neg: Tensor, thresholds: Tensor) -> tuple[Tensor, Tensor]:
    """For thresholds t_ak = d_ap_k + m (-inf for padding): cnt_ak = #{n : d_an < t_ak} and
    W_an = #{k : d_an < t_ak}, over negatives n of anchor a. Both O(B^2) memory."""
    # Non-negatives are lifted above every threshold (distances <= 2), so they never count.
    lift = 4.0 + float(thresholds.clamp_min(0).max()) if thresholds.numel() else 4.0
    dn = d + (~neg).to(d.dtype).mul_(lift)
    rows, k = thresholds.shape
    if k <= _LOOP_MAX_POSITIVES:
        weights = torch.zeros_like(d)
        counts = torch.zeros_like(thresholds)
        active = torch.empty_like(d)  # float 0/1: faster than bool masks on CPU
        for j in range(k):
            torch.lt(dn, thresholds[:, j : j + 1], out=active)
            weights += active
            counts[:, j] = active.sum(dim=1)
        return counts, weights
    sorted_t, order = thresholds.sort(dim=1)
    # rank_an = #{k : t_ak <= d_an}; negative n is active for the (k - rank_an) largest thresholds
    rank = torch.searchsorted(sorted_t, dn, right=True)
    weights = (k - rank).to(d.dtype)  # 0 for lifted non-negatives (all thresholds below them)
    hist = torch.zeros(rows, k + 1, dtype=d.dtype, device=d.device)
    hist.scatter_add_(1, rank, torch.ones_like(d))  # non-negatives land in bin k, never summed
    counts = torch.empty_like(thresholds).scatter_(1, order, hist.cumsum(dim=1)[:, :k])
    return counts, weights


def triplet_value_and_grad(
    d: Tensor, pos: Tensor, neg: Tensor, margin: float
) -> tuple[Tensor, Tensor]:
    """mean over active triplets of [d_ap - d_an + m]_+ and its gradient ∂L/∂D, no (B, B, B).

    A triplet is active iff d_an < d_ap + m. With cnt_ap = active triplets through (a, p) and
    W_an = active triplets through (a, n), the sum is Σ cnt_ap (d_ap + m) - Σ W_an d_an and
    ∂sum/∂D = cnt (at the positives) - W: exactly the per-triplet gradients, accumulated.
    """
    idx, valid = padded_positives(pos)
    d_ap = d.gather(1, idx)
    thresholds = torch.where(valid, d_ap + margin, float("-inf"))
    counts, weights = active_triplet_counts(d, neg, thresholds)
    n_active = counts.sum().clamp_min(1)
    # Per-row sums are small in float32; the two batch totals are ~#triplets large and the loss
    # is their (much smaller) difference, so that subtraction happens in float64.
    per_anchor_pos = (counts * (d_ap + margin)).sum(dim=1)
    per_anchor_neg = torch.einsum("ij,ij->i", weights, d)
    total = (per_anchor_pos.double() - per_anchor_neg.double()).sum()
    grad = weights.neg_().scatter_add_(1, idx, counts).div_(n_active)
    return (total / n_active).to(d.dtype), grad


class TripletLoss(MetricLoss):
    """mean over the non-zero terms of [D_ap - D_an + margin]_+ , by default over all triplets.

    D is the Euclidean distance of L2-normalised embeddings (as PML's TripletMarginLoss). All
    triplets are summed in closed form from per-anchor counts of active triplets: O(B^2) memory,
    O(B^2 · P) time for P <= 16 positives per anchor, else O(B^2 log P). A pair miner
    (a1, p, a2, n) restricts positives / negatives per anchor; a triplet miner (a, p, n) gives
    explicit triplets.

    Valid range: margin ≥ 0.
    """

    def __init__(self, margin: float = 0.05, miner: nn.Module | None = None) -> None:
        super().__init__(miner)
        check_non_negative("TripletLoss", margin=margin)
        self.margin = float(margin)

    def compute(self, x: Tensor, labels: Tensor, indices_tuple: IndicesTuple | None) -> Tensor:
        if indices_tuple is not None and len(indices_tuple) == 3:
            d = distance_matrix(x)
            a, p, n = (t.long() for t in indices_tuple)
            losses = torch.relu(d[a, p] - d[a, n] + self.margin)
            return losses.sum() / (losses > 0).sum().clamp_min(1)
        if indices_tuple is None:
            pos, neg = positive_negative_masks(labels)
        else:
            pos, neg = mined_pair_masks(indices_tuple, x.shape[0], x.device)

        def value_and_grad(s: Tensor) -> tuple[Tensor, Tensor]:
            d = unit_distances_(s)
            value, grad_d = triplet_value_and_grad(d, pos, neg, self.margin)
            return value, distance_grad_to_similarity_(grad_d, d)

        return gram_loss(x, value_and_grad)
