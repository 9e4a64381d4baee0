"""Integrated direction regularisation: DR-Triplet, DR-ProxyNCA and DR-MS.

Mohan et al., CVPR 2020 ("Moving in the Right Direction"). The paper's own equations could not be
read (docs/references.md, "Direction regularization"); these classes follow the forms of its public
reproductions, which add +γ·cos θ to the negative's distance (or subtract it from its
similarity) *inside* the base loss, θ = ∠(n - a, p - a) at the anchor, on L2-normalised vectors.
Only the terms the base loss actually weights (active hinge terms, the NCA softmax, the MS
negative term) see the angle. With γ = 0 every class equals its base loss.

cos θ is computed from similarities (langdml.losses.direction.angle_cosine); it is 0 for a term
whose ‖p - a‖² or ‖n - a‖² is below 1e-6, where the angle is undefined. Each loss keeps the
detached mean cos θ over the terms γ multiplies in ``last_cos``, for logging.

The implementation is plain autograd over (B, K, B) triplet tensors (K = most positives of an
anchor): correctness over speed, fine for batches of a few hundred with few positives each.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from langdml.errors import LangDMLError

from ._common import (
    distance_from_cosine,
    mined_pair_masks,
    mined_sample_weights,
    normalize,
    positive_negative_masks,
)
from .base import IndicesTuple
from .direction import angle_cosine
from .multi_similarity import MultiSimilarityLoss
from .proxy_nca import ProxyNCALoss
from .triplet import TripletLoss, padded_positives


def _mean_over(values: Tensor, mask: Tensor) -> Tensor:
    values = torch.where(mask, values, torch.zeros_like(values))
    return (values.sum() / mask.sum().clamp_min(1)).detach()


class DRTripletLoss(TripletLoss):
    """DR-Triplet: mean over non-zero terms of [d(a,p) - d(a,n) + m - γ·cos∠(n - a, p - a)]_+.

    Reproduction form (non-squared Euclidean d of normalised embeddings, γ inside the hinge).
    Triplets as TripletLoss: all of them, those of a pair miner's (a1, p, a2, n) per anchor, or
    a triplet miner's explicit (a, p, n). The reproductions tuned m ≈ 0.28, γ ≈ 0.49; the default
    margin stays TripletLoss's 0.05 so that γ = 0 is exactly TripletLoss.
    """

    def __init__(self, margin: float = 0.05, gamma: float = 0.0, miner: nn.Module | None = None):
        super().__init__(margin=margin, miner=miner)
        self.gamma = float(gamma)
        self.last_cos = torch.zeros(())

    def compute(self, x: Tensor, labels: Tensor, indices_tuple: IndicesTuple | None) -> Tensor:
        z = normalize(x)
        s = z @ z.T
        d = distance_from_cosine(s)
        if indices_tuple is not None and len(indices_tuple) == 3:
            a, p, n = (t.long() for t in indices_tuple)
            cos = angle_cosine(s[a, p], s[a, n], s[p, n])
            terms = torch.relu(d[a, p] - d[a, n] + self.margin - self.gamma * cos)
        else:
            if indices_tuple is None:
                pos, neg = positive_negative_masks(labels)
            else:
                pos, neg = mined_pair_masks(indices_tuple, x.shape[0], x.device)
            idx, has = padded_positives(pos)  # (B, K): anchor a's k-th positive
            s_ap, d_ap = s.gather(1, idx)[..., None], d.gather(1, idx)[..., None]
            # axes (anchor, positive slot, negative)
            cos = angle_cosine(s_ap, s[:, None, :], s[idx])
            terms = torch.relu(d_ap - d[:, None, :] + self.margin - self.gamma * cos)
            used = has[..., None] & neg[:, None, :]
            terms = torch.where(used, terms, torch.zeros_like(terms))
        active = terms > 0
        self.last_cos = _mean_over(cos, active)
        return terms.sum() / active.sum().clamp_min(1)


class DRProxyNCALoss(ProxyNCALoss):
    """DR-ProxyNCA: mean_x -log( e^{-d(x,P_y)} / Σ_z e^{-(d(x,P_z) + γ·cos∠(P_z - x, P_y - x))} ).

    d(x, P) = s‖x - P‖² (s = ``softmax_scale``) of normalised x and proxies, as ProxyNCALoss.
    variant="paper": the sum runs over z ≠ y, the reproduction's form. variant="pml" (ProxyNCALoss's
    default) also keeps the own class in the denominator, unmodified (γ·cos only for z ≠ y, where
    the angle is between two different proxies) — our adaptation, so that γ = 0 is exactly
    ProxyNCALoss in both variants. A mined ``indices_tuple`` weights each sample's term as in
    ProxyNCALoss (times it is an anchor / the largest such count). Reproduction setting: γ ≈ 0.3.
    """

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        softmax_scale: float = 1.0,
        variant: str = "pml",
        gamma: float = 0.0,
    ) -> None:
        super().__init__(num_classes, embedding_size, softmax_scale=softmax_scale, variant=variant)
        self.gamma = float(gamma)
        self.last_cos = torch.zeros(())

    def compute(self, x: Tensor, labels: Tensor, indices_tuple: IndicesTuple | None) -> Tensor:
        z = normalize(x)
        # one proxy per class: column = class
        proxies = normalize(self.fp32_proxies(x.device).to(x.dtype))
        s_xp = z @ proxies.T
        s_pp = proxies @ proxies.T
        rows = torch.arange(x.shape[0], device=x.device)
        dist = self.softmax_scale * (2.0 - 2.0 * s_xp)
        # a = x, p = P_y, n = P_z
        cos = angle_cosine(s_xp[rows, labels][:, None], s_xp, s_pp[labels])
        own = labels[:, None] == torch.arange(s_xp.shape[1], device=x.device)[None, :]
        exponent = -(dist + self.gamma * cos)
        own_value = float("-inf") if self.variant == "paper" else -dist
        exponent = torch.where(own, own_value, exponent)
        self.last_cos = _mean_over(cos, ~own)
        per_sample = torch.logsumexp(exponent, dim=1) + dist[rows, labels]
        if indices_tuple is not None:
            who = type(self).__name__
            weights = mined_sample_weights(indices_tuple, x.shape[0], x.device, who, True, x.dtype)
            if weights is not None:
                per_sample = per_sample * weights
        return per_sample.mean()


def _log1p_sum_exp(t: Tensor, keep: Tensor) -> Tensor:
    """log(1 + Σ_{keep} e^t) per row, stable: logsumexp with a 0 exponent for the 1."""
    t = torch.where(keep, t, torch.full_like(t, float("-inf")))
    return torch.logsumexp(torch.cat([torch.zeros_like(t[:, :1]), t], dim=1), dim=1)


class DRMultiSimilarityLoss(MultiSimilarityLoss):
    """DR-MS: mean_i (1/α) log(1 + Σ_{k∈P_i} e^{-α(S_ik - λ)})
    + (1/β) log(1 + Σ_{n∈N_i} e^{β(S_in - λ - γ·cos∠(n - a, p - a))}), a = i, λ = ``base``.

    Reproduction form; p is anchor i's hardest positive (least similar, picked without gradient)
    among the positives the loss uses, all or a miner's (e.g. MultiSimilarityMiner, epsilon 0.1),
    with P_i / N_i as MultiSimilarityLoss. An anchor without a positive gets no γ term.
    Reproduction setting (said to be the paper's): α = 2, β = 50, λ = 0.7, γ = 0.3.
    """

    def __init__(
        self,
        alpha: float = 2.0,
        beta: float = 50.0,
        base: float = 0.5,
        gamma: float = 0.0,
        miner: nn.Module | None = None,
    ) -> None:
        super().__init__(alpha=alpha, beta=beta, base=base, miner=miner)
        self.gamma = float(gamma)
        self.last_cos = torch.zeros(())

    def compute(self, x: Tensor, labels: Tensor, indices_tuple: IndicesTuple | None) -> Tensor:
        if indices_tuple is None:
            pos, neg = positive_negative_masks(labels)
        else:
            pos, neg = mined_pair_masks(indices_tuple, x.shape[0], x.device)
        z = normalize(x)
        s = z @ z.T
        # similarities are <= 1, so 2 never wins the argmin over a row that has a positive
        hardest = torch.where(pos, s.detach(), torch.full_like(s, 2.0)).argmin(dim=1)
        has_pos = pos.any(dim=1, keepdim=True)
        cos = angle_cosine(s.gather(1, hardest[:, None]), s, s[hardest])
        cos = torch.where(has_pos, cos, torch.zeros_like(cos))
        a, b, lam = self.alpha, self.beta, self.base
        pos_val = _log1p_sum_exp(-a * (s - lam), pos)
        neg_val = _log1p_sum_exp(b * (s - lam - self.gamma * cos), neg)
        self.last_cos = _mean_over(cos, neg & has_pos)
        return (pos_val / a + neg_val / b).mean()


def to_integrated_direction(base: nn.Module, gamma: float) -> nn.Module:
    """The DR form of a built TripletLoss / ProxyNCALoss / MultiSimilarityLoss, same settings
    (and the same proxy values); raises LangDMLError for any other loss."""
    kind = type(base)
    if kind is TripletLoss:
        return DRTripletLoss(margin=base.margin, gamma=gamma, miner=base.miner)
    if kind is MultiSimilarityLoss:
        return DRMultiSimilarityLoss(base.alpha, base.beta, base.base, gamma, miner=base.miner)
    if kind is ProxyNCALoss:
        # Built under a forked RNG and given the base's proxies, so selecting the DR form leaves
        # the proxies and the global random stream as building the base alone would.
        with torch.random.fork_rng(devices=[]):
            dr = DRProxyNCALoss(
                base.num_classes, base.embedding_size, base.softmax_scale, base.variant, gamma
            )
        with torch.no_grad():
            dr.proxies.copy_(base.proxies)
        return dr
    raise LangDMLError(f"no integrated direction form for {kind.__name__}")


class IntegratedDirectionLog(nn.Module):
    """Reports a DR loss's ``last_cos`` as CombinedLoss's "direction" term.

    The integrated form has no separate term to add; registered with weight 0, CombinedLoss
    calls this after the base (without gradient) and logs the value. The DR loss is held outside
    the module registry so its proxies are not registered (and saved) twice.
    """

    def __init__(self, dr_loss: nn.Module) -> None:
        super().__init__()
        object.__setattr__(self, "_dr_loss", dr_loss)

    def forward(self, embeddings: Tensor, labels: Tensor, **_: object) -> Tensor:
        return self._dr_loss.last_cos.to(embeddings.device)
