"""Margin loss with a learnable boundary β (Wu et al., "Sampling Matters in Deep Embedding
Learning", ICCV 2017)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from langdml.errors import LangDMLError

from ._common import (
    check_labels_below,
    distance_matrix,
    mined_pair_counts,
    positive_negative_masks,
    zero_loss,
)
from .base import IndicesTuple, MetricLoss


def triplet_pair_weights(pos: Tensor, neg: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """All triplets (a, p, n) of boolean (B, R) pair masks, as pair multiplicities.

    Returns (Wp, Wn, T): Wp[a, p] = triplets through (a, p) = [pos] · #neg(a), Wn[a, n] =
    [neg] · #pos(a), T[a] = #pos(a) · #neg(a) — every per-triplet sum is a weighted pair sum.
    """
    n_pos = pos.sum(dim=1, keepdim=True).to(torch.float32)
    n_neg = neg.sum(dim=1, keepdim=True).to(torch.float32)
    return pos.float() * n_neg, neg.float() * n_pos, (n_pos * n_neg).squeeze(1)


def mined_triplet_weights(
    indices_tuple: IndicesTuple, batch_size: int, device: torch.device
) -> tuple[Tensor, Tensor, Tensor]:
    """(Wp, Wn, T) of mined triplets (a, p, n), or of pairs (a1, p, a2, n) joined on a shared
    anchor into every (a, p, n) — pytorch-metric-learning's convert_to_triplets — with repeats
    counted."""
    wp, wn = mined_pair_counts(indices_tuple, batch_size, device)
    if len(indices_tuple) == 4:  # each positive pair meets each negative pair of its anchor
        n_pos, n_neg = wp.sum(dim=1, keepdim=True), wn.sum(dim=1, keepdim=True)
        return wp * n_neg, wn * n_pos, (n_pos * n_neg).squeeze(1)
    anchors = indices_tuple[0].to(device=device, dtype=torch.long)
    counts = torch.bincount(anchors, minlength=batch_size).to(torch.float32)
    return wp, wn, counts


def sampled_triplet_weights(
    pos: Tensor, neg: Tensor, per_anchor: int
) -> tuple[Tensor, Tensor, Tensor]:
    """(Wp, Wn, T) of ``per_anchor`` random triplets for every anchor that has a positive and a
    negative: positive and negative each drawn uniformly (with replacement), global RNG."""
    rows = pos.shape[0]
    usable = pos.any(dim=1) & neg.any(dim=1)
    a = usable.nonzero(as_tuple=True)[0].repeat_interleave(per_anchor)
    if a.numel() == 0:
        zeros = torch.zeros(pos.shape, dtype=torch.float32, device=pos.device)
        return zeros, zeros.clone(), torch.zeros(rows, device=pos.device)
    p = torch.multinomial(pos[a].float(), 1).squeeze(1)
    n = torch.multinomial(neg[a].float(), 1).squeeze(1)
    return mined_triplet_weights((a, p, n), rows, pos.device)


def margin_loss_from_distances(
    d: Tensor, wp: Tensor, wn: Tensor, triplets: Tensor, beta_a: Tensor, margin: float
) -> tuple[Tensor, Tensor]:
    """(Σ_t [d_ap - β_a + m]_+ + [β_a - d_an + m]_+ , number of non-zero terms) over the
    triplets given as weighted pairs (Wp, Wn); ``beta_a`` is (B, 1) or (1, 1)."""
    pos_terms = torch.relu(d - beta_a + margin)
    neg_terms = torch.relu(beta_a - d + margin)
    total = (wp * pos_terms).sum() + (wn * neg_terms).sum()
    active = (wp * (pos_terms > 0)).sum() + (wn * (neg_terms > 0)).sum()
    return total, active


class MarginLoss(MetricLoss):
    """Margin loss (Wu et al., ICCV 2017), pytorch-metric-learning's MarginLoss:

        L = Σ_{(a,p,n)} ([D_ap - β_a + m]_+ + [β_a - D_an + m]_+) / #(non-zero terms)
            + ν · β_reg

    over all triplets (``triplets_per_anchor="all"``), ``triplets_per_anchor`` = k random
    triplets per anchor, or the triplets of a miner; D is the Euclidean distance of
    L2-normalised embeddings, m = ``margin``. β_a is one global β, or with ``num_classes`` one
    β per class (β_{y_a}), starting at ``beta``; ``learn_beta`` makes it an nn.Parameter,
    returned by ``proxy_parameters()`` so the trainer gives it the proxy learning rate (the
    paper's own β learning rate; Roth et al.'s benchmark uses 5e-4). The β regulariser (only
    when learn_beta) is ν·β for a global β and Σ_t ν·β_{y_a} / #(non-zero terms) per class,
    as PML. A batch without triplets gives 0.

    Sampling as the paper: ``MarginLoss(miner=DistanceWeightedMiner())`` (Roth et al.'s default
    pairing), whose (a, p, n) triplets are used as mined. All triplets are summed in closed
    form as weighted pairs: O(B²) memory, never O(B³).

    Valid values: margin >= 0, nu >= 0, beta a finite number, triplets_per_anchor "all" or an
    int >= 1, num_classes None or an int >= 1 (labels must then be below it).
    """

    def __init__(
        self,
        margin: float = 0.2,
        nu: float = 0.0,
        beta: float = 1.2,
        triplets_per_anchor: int | str = "all",
        learn_beta: bool = False,
        num_classes: int | None = None,
        miner: nn.Module | None = None,
    ) -> None:
        super().__init__(miner)
        if not margin >= 0 or not nu >= 0:
            raise LangDMLError(f"MarginLoss: margin and nu must be >= 0, got {margin}, {nu}")
        if not torch.isfinite(torch.tensor(float(beta))):
            raise LangDMLError(f"MarginLoss: beta must be a finite number, got {beta}")
        per_anchor = triplets_per_anchor
        if per_anchor != "all" and (
            not isinstance(per_anchor, int) or isinstance(per_anchor, bool) or per_anchor < 1
        ):
            raise LangDMLError(
                f"MarginLoss: triplets_per_anchor must be 'all' or an int >= 1, got {per_anchor!r}"
            )
        if num_classes is not None and (
            not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1
        ):
            raise LangDMLError(f"MarginLoss: num_classes must be None or >= 1, got {num_classes}")
        self.margin = float(margin)
        self.nu = float(nu)
        self.triplets_per_anchor = per_anchor
        self.learn_beta = bool(learn_beta)
        self.num_classes = num_classes
        init = torch.full((num_classes or 1,), float(beta))
        if self.learn_beta:
            self.beta = nn.Parameter(init)
        else:
            self.register_buffer("beta", init)

    def proxy_parameters(self) -> list[nn.Parameter]:
        return [self.beta] if self.learn_beta else []

    def anchor_beta(self, labels: Tensor) -> Tensor:
        """(B, 1) β of each anchor (its class's β, or the global one), float32."""
        beta = self.beta.to(device=labels.device, dtype=torch.float32)
        if self.num_classes is None:
            return beta.expand(labels.shape[0]).unsqueeze(1)
        check_labels_below(labels, self.num_classes, type(self).__name__)
        return beta[labels].unsqueeze(1)

    def compute(self, x: Tensor, labels: Tensor, indices_tuple: IndicesTuple | None) -> Tensor:
        if indices_tuple is not None:
            wp, wn, triplets = mined_triplet_weights(indices_tuple, x.shape[0], x.device)
        else:
            pos, neg = positive_negative_masks(labels)
            if self.triplets_per_anchor == "all":
                wp, wn, triplets = triplet_pair_weights(pos, neg)
            else:
                wp, wn, triplets = sampled_triplet_weights(pos, neg, self.triplets_per_anchor)
        return self.reduce(distance_matrix(x), labels, wp, wn, triplets)

    def reduce(self, d: Tensor, labels: Tensor, wp: Tensor, wn: Tensor, triplets: Tensor) -> Tensor:
        """The loss from the (B, R) distances of the anchors and triplet weights; also used by
        CrossBatchMemory, whose references are the memory."""
        if float(triplets.sum()) == 0:
            return zero_loss(d)
        beta_a = self.anchor_beta(labels)
        total, active = margin_loss_from_distances(d, wp, wn, triplets, beta_a, self.margin)
        value = total / active if float(active) > 0 else zero_loss(d)
        if self.learn_beta:
            if self.num_classes is None:
                value = value + self.nu * beta_a[0, 0]
            elif float(active) > 0:
                value = value + self.nu * (triplets * beta_a.squeeze(1)).sum() / active
        return value
