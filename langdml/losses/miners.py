"""Miners: pick informative pairs or triplets from a batch, without gradients.

Triplet miners return (anchors, positives, negatives) index tensors, pair miners return
(a1, positives, a2, negatives), the tuple formats of pytorch-metric-learning, so a loss called
with ``indices_tuple=miner(embeddings, labels)`` or built with ``miner=`` uses only those.
Distances are Euclidean between L2-normalised embeddings, similarities are cosines.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._common import (
    as_fp32,
    check_batch,
    distance_from_cosine,
    fp32_region,
    normalize,
    positive_negative_masks,
)

Triplets = tuple[Tensor, Tensor, Tensor]
Pairs = tuple[Tensor, Tensor, Tensor, Tensor]


class _Miner(nn.Module):
    def forward(self, embeddings: Tensor, labels: Tensor) -> tuple[Tensor, ...]:
        check_batch(embeddings, labels, type(self).__name__)
        labels = labels.to(device=embeddings.device, dtype=torch.long)
        with torch.no_grad(), fp32_region(embeddings):
            return self.mine(normalize(as_fp32(embeddings.detach())), labels)

    def mine(self, z: Tensor, labels: Tensor) -> tuple[Tensor, ...]:
        raise NotImplementedError


def _triplets_in_band(d: Tensor, pos: Tensor, neg: Tensor, low: Tensor, high: Tensor) -> Triplets:
    """All (a, p, n) with pos[a, p], neg[a, n] and low[a, p] < d[a, n] <= high[a, p].

    Each anchor's negatives are sorted once, so every (a, p) selects a contiguous run of them;
    memory is O(B^2 + number of triplets returned), never O(B^3).
    """
    inf = torch.tensor(float("inf"), dtype=d.dtype, device=d.device)
    keys, order = torch.where(neg, d, inf).sort(dim=1)
    a, p = pos.nonzero(as_tuple=True)
    start = torch.searchsorted(keys, low.contiguous(), right=True)[a, p]
    stop = torch.searchsorted(keys, high.contiguous(), right=True)[a, p]
    lengths = (stop - start).clamp_min(0)
    pair = torch.repeat_interleave(torch.arange(a.numel(), device=d.device), lengths)
    offsets = torch.cumsum(lengths, 0) - lengths
    rank = start[pair] + torch.arange(pair.numel(), device=d.device) - offsets[pair]
    return a[pair], p[pair], order[a[pair], rank]


class AllTripletsMiner(_Miner):
    """Every (a, p, n) with y_a = y_p, a != p, y_n != y_a (materialised: O(#triplets) memory).

    TripletLoss without a miner already uses all triplets in O(B^2) memory; this miner is for
    inspecting them or feeding other losses.
    """

    def mine(self, z: Tensor, labels: Tensor) -> Triplets:
        d = distance_from_cosine(z @ z.T)
        pos, neg = positive_negative_masks(labels)
        low = torch.full_like(d, -1.0)
        return _triplets_in_band(d, pos, neg, low, torch.full_like(d, 4.0))


class SemiHardMiner(_Miner):
    """Triplets with d_ap < d_an <= d_ap + margin (PML's TripletMarginMiner, "semihard")."""

    def __init__(self, margin: float = 0.2) -> None:
        super().__init__()
        self.margin = float(margin)

    def mine(self, z: Tensor, labels: Tensor) -> Triplets:
        d = distance_from_cosine(z @ z.T)
        pos, neg = positive_negative_masks(labels)
        return _triplets_in_band(d, pos, neg, d, d + self.margin)


class BatchHardMiner(_Miner):
    """Per anchor the farthest positive and the closest negative (Hermans et al. 2017);
    anchors lacking either are dropped (PML BatchHardMiner)."""

    def mine(self, z: Tensor, labels: Tensor) -> Triplets:
        d = distance_from_cosine(z @ z.T)
        pos, neg = positive_negative_masks(labels)
        inf = torch.tensor(float("inf"), dtype=d.dtype, device=d.device)
        hardest_pos = torch.where(pos, d, -inf).argmax(dim=1)
        hardest_neg = torch.where(neg, d, inf).argmin(dim=1)
        a = (pos.any(dim=1) & neg.any(dim=1)).nonzero(as_tuple=True)[0]
        return a, hardest_pos[a], hardest_neg[a]


class DistanceWeightedMiner(_Miner):
    """Distance-weighted sampling (Wu et al., ICCV 2017): one negative per (anchor, positive).

    P(n | a) ∝ 1 / q(max(d_an, cutoff)) for d_an < nonzero_loss_cutoff, where
    q(d) ∝ d^{dim-2} (1 - d²/4)^{(dim-3)/2} is the density of distances between points uniform on
    the unit sphere. An anchor whose negatives all lie at or beyond ``nonzero_loss_cutoff``
    draws its negative uniformly among its negatives. This fallback is ours: the paper's public
    (MXNet) code draws uniformly over the whole batch in that case, the anchor's own class and
    the anchor itself included, and PML drops the anchor. Pass a torch.Generator for
    reproducible draws.
    """

    def __init__(
        self,
        cutoff: float = 0.5,
        nonzero_loss_cutoff: float = 1.4,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.cutoff = float(cutoff)
        self.nonzero_loss_cutoff = float(nonzero_loss_cutoff)
        self.generator = generator

    def probabilities(self, z: Tensor, labels: Tensor) -> Tensor:
        """(B, B) row-stochastic sampling probabilities over each anchor's negatives."""
        dim = z.shape[1]
        d = distance_from_cosine(z @ z.T).clamp_min(self.cutoff)
        _, neg = positive_negative_masks(labels)
        log_inv_q = -(dim - 2.0) * torch.log(d) - ((dim - 3.0) / 2.0) * torch.log1p(-0.25 * d * d)
        usable = neg & (d < self.nonzero_loss_cutoff)
        log_w = torch.where(usable, log_inv_q, torch.full_like(d, float("-inf")))
        fallback = ~usable.any(dim=1, keepdim=True)
        log_w = torch.where(fallback & neg, torch.zeros_like(d), log_w)
        # Rows without negatives keep all -inf; shift by 0 there to avoid inf - inf.
        shift = log_w.amax(dim=1, keepdim=True)
        shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
        w = torch.exp(log_w - shift)
        return w / w.sum(dim=1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)

    def mine(self, z: Tensor, labels: Tensor) -> Triplets:
        probs = self.probabilities(z, labels)
        pos, neg = positive_negative_masks(labels)
        a, p = (pos & neg.any(dim=1, keepdim=True)).nonzero(as_tuple=True)
        if a.numel() == 0:
            return a, p, a.clone()
        gen = (
            self.generator
            if self.generator is not None and self.generator.device == z.device
            else None
        )
        n = torch.multinomial(probs[a], 1, generator=gen).squeeze(1)
        return a, p, n


class MultiSimilarityMiner(_Miner):
    """Keep positives with S_ap - ε < max_n S_an and negatives with S_an + ε > min_p S_ap
    (Wang et al. 2019; PML MultiSimilarityMiner), S the cosine similarity."""

    def __init__(self, epsilon: float = 0.1) -> None:
        super().__init__()
        self.epsilon = float(epsilon)

    def mine(self, z: Tensor, labels: Tensor) -> Pairs:
        s = z @ z.T
        pos, neg = positive_negative_masks(labels)
        inf = torch.tensor(float("inf"), dtype=s.dtype, device=s.device)
        hardest_neg = torch.where(neg, s, -inf).amax(dim=1, keepdim=True)
        hardest_pos = torch.where(pos, s, inf).amin(dim=1, keepdim=True)
        a1, p = (pos & (s - self.epsilon < hardest_neg)).nonzero(as_tuple=True)
        a2, n = (neg & (s + self.epsilon > hardest_pos)).nonzero(as_tuple=True)
        return a1, p, a2, n
