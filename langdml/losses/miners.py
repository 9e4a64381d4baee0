"""Miners: pick informative pairs or triplets from a batch, without gradients.

Triplet miners return (anchors, positives, negatives) index tensors, pair miners return
(a1, positives, a2, negatives), the tuple formats of pytorch-metric-learning, so a loss called
with ``indices_tuple=miner(embeddings, labels)`` or built with ``miner=`` uses only those.

Distances are Euclidean between L2-normalised embeddings, computed from direct differences
||z_i - z_j|| (not sqrt(2 - 2 cos), which loses the small distances to cancellation) in the
input's dtype (float64 stays float64; float16 / bfloat16 are computed in float32);
similarities are cosines in the same dtype.

``miner(embeddings, labels, ref_emb, ref_labels)`` mines anchors from the batch against a
separate reference batch (positives and negatives index ``ref_emb``), as PML's miners. An
anchor is never paired with itself when there is no reference, or when ``ref_labels`` is the
very ``labels`` tensor (PML's rule for "the reference is the batch").
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from langdml.errors import LangDMLError

from ._common import as_compute, check_batch, fp32_region, normalize

Triplets = tuple[Tensor, Tensor, Tensor]
Pairs = tuple[Tensor, Tensor, Tensor, Tensor]
TRIPLET_TYPES = ("all", "hard", "semihard", "easy")
FALLBACKS = ("negatives", "batch", "none")


def unit_distances(z: Tensor, r: Tensor) -> Tensor:
    """(B, R) Euclidean distances of unit rows from direct differences (no cancellation)."""
    return torch.cdist(z, r, compute_mode="donot_use_mm_for_euclid_dist")


class _Miner(nn.Module):
    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor,
        ref_emb: Tensor | None = None,
        ref_labels: Tensor | None = None,
    ) -> tuple[Tensor, ...]:
        who = type(self).__name__
        check_batch(embeddings, labels, who)
        same = ref_emb is None or ref_labels is labels
        if ref_emb is None and ref_labels is not None:
            raise LangDMLError(f"{who}: ref_labels given without ref_emb; pass both or neither")
        if ref_emb is None:
            ref_emb, ref_labels = embeddings, labels
        elif ref_labels is None:
            raise LangDMLError(f"{who}: ref_emb needs ref_labels (one label per reference row)")
        check_batch(ref_emb, ref_labels, f"{who} (reference)")
        if ref_emb.shape[1] != embeddings.shape[1]:
            raise LangDMLError(
                f"{who}: ref_emb has dim {ref_emb.shape[1]}, embeddings {embeddings.shape[1]}"
            )
        device = embeddings.device
        labels = labels.to(device=device, dtype=torch.long)
        ref_labels = ref_labels.to(device=device, dtype=torch.long)
        with torch.no_grad(), fp32_region(embeddings):
            z = normalize(as_compute(embeddings.detach()))
            r = normalize(ref_emb.detach().to(device=device, dtype=z.dtype))
            pos = labels[:, None] == ref_labels[None, :]
            neg = ~pos
            if same and pos.shape[0] == pos.shape[1]:
                pos.fill_diagonal_(False)
            return self.mine(z, r, pos, neg)

    def mine(self, z: Tensor, r: Tensor, pos: Tensor, neg: Tensor) -> tuple[Tensor, ...]:
        """z (B, d) anchors and r (R, d) references, unit rows; pos / neg (B, R) masks."""
        raise NotImplementedError


def _triplets_in_band(d: Tensor, pos: Tensor, neg: Tensor, low: Tensor, high: Tensor) -> Triplets:
    """All (a, p, n) with pos[a, p], neg[a, n] and low[a, p] < d[a, n] <= high[a, p].

    Each anchor's negatives are sorted once, so every (a, p) selects a contiguous run of them;
    memory is O(B·R + number of triplets returned), never O(B·R²).
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


def margin_triplets(d: Tensor, pos: Tensor, neg: Tensor, margin: float, kind: str) -> Triplets:
    """Triplets by t = d_an - d_ap: "all" t <= margin, "hard" t <= min(margin, 0), "semihard"
    0 < t <= margin, "easy" t > margin. Candidates come from a slightly widened band of
    d_an around d_ap, then the condition is tested on the difference itself, so rounding in
    d_ap + margin never moves a triplet across the boundary."""
    widen = 16 * torch.finfo(d.dtype).eps * (4.0 + abs(margin))
    lo_t = {"all": -8.0, "hard": -8.0, "semihard": 0.0, "easy": margin}[kind]
    hi_t = {"all": margin, "hard": min(margin, 0.0), "semihard": margin, "easy": 8.0}[kind]
    a, p, n = _triplets_in_band(d, pos, neg, d + (lo_t - widen), d + (hi_t + widen))
    t = d[a, n] - d[a, p]
    if kind == "all":
        keep = t <= margin
    elif kind == "hard":
        keep = (t <= margin) & (t <= 0)
    elif kind == "semihard":
        keep = (t <= margin) & (t > 0)
    else:
        keep = t > margin
    return a[keep], p[keep], n[keep]


class TripletMarginMiner(_Miner):
    """Triplets (a, p, n) by their margin t = d_an - d_ap (PML's TripletMarginMiner):
    ``type_of_triplets`` "all" (t <= margin: every triplet violating the margin), "hard"
    (t <= margin and t <= 0), "semihard" (0 < t <= margin) or "easy" (t > margin).

    Valid values: margin a finite number, type_of_triplets one of the four names.
    """

    def __init__(self, margin: float = 0.2, type_of_triplets: str = "all") -> None:
        super().__init__()
        if type_of_triplets not in TRIPLET_TYPES:
            raise LangDMLError(
                f"type_of_triplets must be one of {list(TRIPLET_TYPES)}, got {type_of_triplets!r}"
            )
        if not abs(float(margin)) < float("inf"):
            raise LangDMLError(f"margin must be a finite number, got {margin!r}")
        self.margin = float(margin)
        self.type_of_triplets = type_of_triplets

    def mine(self, z: Tensor, r: Tensor, pos: Tensor, neg: Tensor) -> Triplets:
        return margin_triplets(unit_distances(z, r), pos, neg, self.margin, self.type_of_triplets)


class AllTripletsMiner(_Miner):
    """Every (a, p, n) with y_a = y_p, a != p, y_n != y_a (materialised: O(#triplets) memory).

    TripletLoss without a miner already uses all triplets in O(B^2) memory; this miner is for
    inspecting them or feeding other losses.
    """

    def mine(self, z: Tensor, r: Tensor, pos: Tensor, neg: Tensor) -> Triplets:
        d = unit_distances(z, r)
        return _triplets_in_band(d, pos, neg, torch.full_like(d, -1.0), torch.full_like(d, 4.0))


class SemiHardMiner(TripletMarginMiner):
    """Triplets with 0 < d_an - d_ap <= margin (PML's TripletMarginMiner, "semihard")."""

    def __init__(self, margin: float = 0.2) -> None:
        super().__init__(margin, "semihard")


class BatchHardMiner(_Miner):
    """Per anchor the farthest positive and the closest negative (Hermans et al. 2017);
    anchors lacking either are dropped (PML BatchHardMiner)."""

    def mine(self, z: Tensor, r: Tensor, pos: Tensor, neg: Tensor) -> Triplets:
        d = unit_distances(z, r)
        inf = torch.tensor(float("inf"), dtype=d.dtype, device=d.device)
        hardest_pos = torch.where(pos, d, -inf).argmax(dim=1)
        hardest_neg = torch.where(neg, d, inf).argmin(dim=1)
        a = (pos.any(dim=1) & neg.any(dim=1)).nonzero(as_tuple=True)[0]
        return a, hardest_pos[a], hardest_neg[a]


class DistanceWeightedMiner(_Miner):
    """Distance-weighted sampling (Wu et al., ICCV 2017): one negative per (anchor, positive).

    P(n | a) ∝ 1 / q(max(d_an, cutoff)) for d_an < nonzero_loss_cutoff, where
    q(d) ∝ d^{dim-2} (1 - d²/4)^{(dim-3)/2} is the density of distances between points uniform on
    the unit sphere. Pass a torch.Generator for reproducible draws.

    ``fallback`` says what an anchor gets when none of its negatives lies within
    ``nonzero_loss_cutoff`` (all would give a zero loss):

    * "negatives" (default, our own rule): its negative is drawn uniformly among its
      negatives. Chosen because the anchor keeps contributing, as in the authors' code, but
      only with real negatives.
    * "batch": drawn uniformly over the whole batch (reference), the anchor's own class and the
      anchor itself included -- what the paper's public (MXNet) code does; such a "negative"
      can share the anchor's label.
    * "none": the anchor gets no triplets, as pytorch-metric-learning's DistanceWeightedMiner.
    """

    def __init__(
        self,
        cutoff: float = 0.5,
        nonzero_loss_cutoff: float = 1.4,
        generator: torch.Generator | None = None,
        fallback: str = "negatives",
    ) -> None:
        super().__init__()
        if fallback not in FALLBACKS:
            raise LangDMLError(f"fallback must be one of {list(FALLBACKS)}, got {fallback!r}")
        self.cutoff = float(cutoff)
        self.nonzero_loss_cutoff = float(nonzero_loss_cutoff)
        self.generator = generator
        self.fallback = fallback

    def probabilities(self, z: Tensor, labels: Tensor) -> Tensor:
        """(B, B) sampling probabilities over each anchor's negatives (rows of unit vectors
        ``z``): row-stochastic, except the all-zero rows of "none"-fallback anchors."""
        with torch.no_grad():
            pos = labels[:, None] == labels[None, :]
            return self._probabilities(unit_distances(z, z), ~pos, z.shape[1])

    def _probabilities(self, d: Tensor, neg: Tensor, dim: int) -> Tensor:
        d = d.clamp_min(self.cutoff)
        log_inv_q = -(dim - 2.0) * torch.log(d) - ((dim - 3.0) / 2.0) * torch.log1p(-0.25 * d * d)
        usable = neg & (d < self.nonzero_loss_cutoff)
        log_w = torch.where(usable, log_inv_q, torch.full_like(d, float("-inf")))
        stuck = ~usable.any(dim=1, keepdim=True)
        if self.fallback == "negatives":
            log_w = torch.where(stuck & neg, torch.zeros_like(d), log_w)
        elif self.fallback == "batch":
            log_w = torch.where(stuck, torch.zeros_like(d), log_w)
        # Rows with nothing to draw keep all -inf; shift by 0 there to avoid inf - inf.
        shift = log_w.amax(dim=1, keepdim=True)
        shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
        w = torch.exp(log_w - shift)
        return w / w.sum(dim=1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)

    def mine(self, z: Tensor, r: Tensor, pos: Tensor, neg: Tensor) -> Triplets:
        probs = self._probabilities(unit_distances(z, r), neg, z.shape[1])
        drawable = probs.sum(dim=1, keepdim=True) > 0
        a, p = (pos & drawable).nonzero(as_tuple=True)
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

    def mine(self, z: Tensor, r: Tensor, pos: Tensor, neg: Tensor) -> Pairs:
        s = z @ r.T
        inf = torch.tensor(float("inf"), dtype=s.dtype, device=s.device)
        hardest_neg = torch.where(neg, s, -inf).amax(dim=1, keepdim=True)
        hardest_pos = torch.where(pos, s, inf).amin(dim=1, keepdim=True)
        a1, p = (pos & (s - self.epsilon < hardest_neg)).nonzero(as_tuple=True)
        a2, n = (neg & (s + self.epsilon > hardest_pos)).nonzero(as_tuple=True)
        return a1, p, a2, n
