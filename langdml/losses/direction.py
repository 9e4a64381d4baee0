"""Direction regularisation (Mohan et al., CVPR 2020, "Moving in the Right Direction").

The paper's own equations could not be read (docs/references.md, "Direction regularization");
its figure states the idea: for unit vectors a (anchor), p (positive), n (negative) and
c = (a + p)/2, the negative should move along (n - c), with (n - c) ⊥ (p - a). Two
implementations live in the library:

- form "integrated" (langdml.losses.dr_losses): DR-Triplet, DR-ProxyNCA and DR-MS exactly as the
  public reproductions write them, with +γ·cos∠(n - a, p - a) *inside* the base loss (inside the
  triplet hinge, the NCA exponent, the MS negative term). This is what carries the paper's name.
- form "orthogonal" (DirectionRegularizer below): an additive penalty of this project's own, our
  variant of the stated idea (n - c) ⊥ (p - a). It is not credited to the paper.

Geometry used by both, for unit vectors (every term is elementwise in the similarity matrix S):
  cos∠(n - a, p - a) = (S_pn - S_an - S_ap + 1) / (‖n - a‖‖p - a‖),  ‖u - v‖² = 2 - 2 S_uv
  (n - c)·(p - a) = S_pn - S_an,  ‖n - c‖² = 3/2 + S_ap/2 - S_an - S_pn
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from langdml.errors import LangDMLError

from ._common import as_fp32, check_batch, fp32_region, normalize, positive_negative_masks
from .registry import MODES, canonical_mode

_FORMS = ("orthogonal",)
_MODES = ("auto", *MODES)
_POSITIVES = ("hardest", "all")
# Squared lengths below this make an angle (or the direction n - c) undefined; such terms are 0.
EPS = 1e-6

REPRODUCTION_REMOVED = (
    "form 'reproduction' was removed: its additive -mean cos θ over all triplets was not the "
    "reproductions' form; use form 'integrated' (γ·cos θ inside triplet / proxy_nca / "
    "multi_similarity) or 'orthogonal' (our additive penalty)"
)


def angle_cosine(s_ap: Tensor, s_an: Tensor, s_pn: Tensor) -> Tensor:
    """cos∠(n - a, p - a) of unit vectors from their similarities (broadcast), 0 where undefined.

    Undefined means ‖p - a‖² or ‖n - a‖² < EPS; the clamps keep the discarded branch finite so
    torch.where does not leak a NaN gradient from it.
    """
    ap_sq = 2.0 - 2.0 * s_ap
    an_sq = 2.0 - 2.0 * s_an
    defined = (ap_sq >= EPS) & (an_sq >= EPS)
    den = (ap_sq.clamp_min(EPS) * an_sq.clamp_min(EPS)).sqrt()
    cos = (s_pn - s_an - s_ap + 1.0) / den
    return torch.where(defined, cos, torch.zeros_like(cos))


def orthogonal_terms(
    s_ap: Tensor, s_an: Tensor, s_pn: Tensor, valid: Tensor
) -> tuple[Tensor, Tensor]:
    """Sum and count of ((n - c)·(p - a))² / ‖n - c‖²; s_ap (R, 1), s_an / s_pn / valid (R, M).

    Not divided by ‖p - a‖²: that would make the term scale-free, and its gradient would grow
    like 1/‖p - a‖ as a class tightens. As written it is ‖p - a‖²·cos²∠(n - c, p - a), whose
    gradient vanishes with ‖p - a‖. Only ‖n - c‖ → 0 leaves it undefined (term dropped).
    """
    nc_sq = 1.5 + 0.5 * s_ap - s_an - s_pn
    valid = valid & (nc_sq >= EPS)
    term = (s_pn - s_an).square() / nc_sq.clamp_min(EPS)
    term = torch.where(valid, term, torch.zeros_like(term))
    return term.sum(), valid.sum()


class DirectionRegularizer(nn.Module):
    """R = mean over triplets of ((n - c)·(p - a))² / ‖n - c‖², c = (a + p)/2 (form "orthogonal").

    Our own additive variant of the paper's stated idea (n - c) ⊥ (p - a), not a form from the
    paper or its reproductions (those are the integrated DR losses, selected by build_loss with
    form "integrated"). Equal to ‖p - a‖²·cos²∠(n - c, p - a): it vanishes when the negative sits
    on the bisector of a and p, and stays well-conditioned as ‖p - a‖ → 0.

    mode="batch": triplets of the batch (p a positive, n a negative of anchor a); mode="proxy":
    a = sample, p = a proxy of its class, n = every proxy of another class; "auto" picks proxies
    when the combined loss passes them. positives="hardest" uses each anchor's least similar
    positive, "all" every positive (O(B² · positives) memory).
    """

    def __init__(self, form: str = "orthogonal", mode: str = "auto", positives: str = "hardest"):
        super().__init__()
        if form == "reproduction":
            raise LangDMLError(f"DirectionRegularizer: {REPRODUCTION_REMOVED}")
        if form == "integrated":
            raise LangDMLError(
                "DirectionRegularizer: form 'integrated' is not an additive term; select it "
                "through build_loss or use DRTripletLoss / DRProxyNCALoss / DRMultiSimilarityLoss"
            )
        mode = canonical_mode(mode, "DirectionRegularizer")
        for name, value, allowed in (
            ("form", form, _FORMS),
            ("mode", mode, _MODES),
            ("positives", positives, _POSITIVES),
        ):
            if value not in allowed:
                raise LangDMLError(
                    f"DirectionRegularizer: {name} must be one of {allowed}, got {value!r}"
                )
        self.form, self.mode, self.positives = form, mode, positives

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor,
        proxies: Tensor | None = None,
        proxy_labels: Tensor | None = None,
    ) -> Tensor:
        check_batch(embeddings, labels, "DirectionRegularizer")
        labels = labels.to(device=embeddings.device, dtype=torch.long)
        use_proxies = self.mode == "proxy" or (self.mode == "auto" and proxies is not None)
        if use_proxies and (proxies is None or proxy_labels is None):
            raise LangDMLError("DirectionRegularizer: mode='proxy' needs a proxy-based base loss")
        with fp32_region(embeddings):
            z = normalize(as_fp32(embeddings))
            if use_proxies:
                p = normalize(as_fp32(proxies).to(z.device))
                total, count = self._proxy_triplets(z, labels, p, proxy_labels.to(z.device))
            else:
                total, count = self._batch_triplets(z, labels)
        return total / count.clamp_min(1)

    def _batch_triplets(self, z: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        s = z @ z.T
        pos, neg = positive_negative_masks(labels)
        if self.positives == "hardest":
            choices = torch.where(pos, s.detach(), torch.full_like(s, 2.0)).argmin(
                dim=1, keepdim=True
            )
            has = pos.any(dim=1, keepdim=True)
            candidates = [(choices, has)]
        else:
            n_pos = pos.sum(dim=1, keepdim=True)
            big = torch.full_like(labels[None, :].expand_as(pos), pos.shape[1])
            cols = torch.where(pos, torch.arange(pos.shape[1], device=z.device)[None, :], big)
            cols = cols.sort(dim=1).values
            kmax = int(n_pos.max()) if n_pos.numel() else 0
            candidates = [
                (cols[:, k : k + 1].clamp_max(pos.shape[1] - 1), n_pos > k) for k in range(kmax)
            ]
        return self._accumulate(s, s, neg, candidates)

    def _proxy_triplets(
        self, z: Tensor, labels: Tensor, p: Tensor, proxy_labels: Tensor
    ) -> tuple[Tensor, Tensor]:
        s_xp = z @ p.T  # (B, M)
        s_pp = p @ p.T  # (M, M)
        own = labels[:, None] == proxy_labels[None, :]
        if not bool(own.any(dim=1).all()):
            raise LangDMLError(
                "DirectionRegularizer: a label has no proxy; labels must be < num_classes"
            )
        per_class = int(own.sum(dim=1).max())
        if self.positives == "hardest" or per_class == 1:
            choices = torch.where(own, s_xp.detach(), torch.full_like(s_xp, 2.0)).argmin(
                dim=1, keepdim=True
            )
            candidates = [(choices, torch.ones_like(choices, dtype=torch.bool))]
        else:
            order = torch.where(own, 0, 1).sort(dim=1, stable=True).indices
            candidates = [
                (order[:, k : k + 1], torch.ones_like(order[:, :1], dtype=torch.bool))
                for k in range(per_class)
            ]
        return self._accumulate(s_xp, s_pp, ~own, candidates)

    def _accumulate(
        self, s_an: Tensor, s_other: Tensor, neg: Tensor, candidates: list[tuple[Tensor, Tensor]]
    ) -> tuple[Tensor, Tensor]:
        """s_an (R, M): anchor-to-negative similarities; s_other rows give positive-to-negative
        similarities (indexed by the chosen positive); each candidate is (positive index (R, 1),
        has-positive (R, 1)). s_ap is read from s_an's own columns."""
        total = s_an.sum() * 0.0  # stays attached to the graph when no triplet exists
        count = torch.zeros((), dtype=torch.long, device=s_an.device)
        for idx, has in candidates:
            s_ap = s_an.gather(1, idx)
            s_pn = s_other[idx.squeeze(1)]
            t, c = orthogonal_terms(s_ap, s_an, s_pn, neg & has)
            total, count = total + t, count + c
        return total, count
