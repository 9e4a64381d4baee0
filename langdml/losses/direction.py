"""Direction regularisation (Mohan et al., CVPR 2020, "Moving in the Right Direction").

Geometry, for unit vectors a (anchor), p (positive), n (negative) and c = (a + p)/2:
  cos θ = (n - a)·(p - a) / (‖n - a‖‖p - a‖) = (S_pn - S_an - S_ap + 1) / (D_an D_ap)
  (n - c)·(p - a) = S_pn - S_an,  ‖n - c‖² = 3/2 + S_ap/2 - S_an - S_pn,  ‖p - a‖² = 2 - 2 S_ap
so every triplet term is elementwise in the similarity matrix.

Two forms, both additive (the combined loss multiplies them by a weight γ):
- "reproduction": R = -mean cos θ. Public reproductions add +γ cos θ to the negative's distance
  inside the hinge, i.e. the loss gains -γ cos θ. Sign check (tests/test_regularizers.py, 2-D):
  descending R turns n about the anchor *toward* the a→p direction (cos θ grows) — it does not by
  itself move the negative away from the pair's centre c.
- "orthogonal": R = mean ((n - c)·(p - a))² / (‖n - c‖²‖p - a‖²), the paper's stated idea as an
  explicit penalty. Its descent turns n about c onto the bisector of a and p, where (n - c) ⊥
  (p - a); from there the pair's push on the negative is orthogonal to the anchor–positive axis
  (checked in the tests).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from langdml.errors import LangDMLError

from ._common import as_fp32, check_batch, fp32_region, normalize, positive_negative_masks

_FORMS = ("reproduction", "orthogonal")
_MODES = ("auto", "pairs", "proxies")
_POSITIVES = ("hardest", "all")
_EPS = 1e-6  # squared lengths below this make the angle undefined; such triplets are skipped


def direction_terms(
    s_ap: Tensor, s_an: Tensor, s_pn: Tensor, valid: Tensor, form: str
) -> tuple[Tensor, Tensor]:
    """Sum and count of the per-triplet terms; s_ap (R, 1), s_an / s_pn / valid (R, M)."""
    ap_sq = (2.0 - 2.0 * s_ap).expand_as(s_an)
    if form == "reproduction":
        an_sq = 2.0 - 2.0 * s_an
        valid = valid & (ap_sq > _EPS) & (an_sq > _EPS)
        den = (ap_sq.clamp_min(_EPS) * an_sq.clamp_min(_EPS)).sqrt()
        term = -(s_pn - s_an - s_ap + 1.0) / den
    else:
        nc_sq = 1.5 + 0.5 * s_ap - s_an - s_pn
        valid = valid & (ap_sq > _EPS) & (nc_sq > _EPS)
        term = (s_pn - s_an).square() / (nc_sq.clamp_min(_EPS) * ap_sq.clamp_min(_EPS))
    term = torch.where(valid, term, torch.zeros_like(term))
    return term.sum(), valid.sum()


class DirectionRegularizer(nn.Module):
    """R = -mean cos∠(n - a, p - a) ("reproduction") or mean cos²∠(n - c, p - a) ("orthogonal").

    mode="pairs": triplets of the batch (p a positive, n a negative of anchor a); mode="proxies":
    a = sample, p = a proxy of its class, n = every proxy of another class (DR-ProxyNCA);
    "auto" picks proxies when the combined loss passes them. positives="hardest" uses each
    anchor's least similar positive (DR-MS), "all" every positive (O(B² · positives) memory).
    """

    def __init__(self, form: str = "orthogonal", mode: str = "auto", positives: str = "hardest"):
        super().__init__()
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
        use_proxies = self.mode == "proxies" or (self.mode == "auto" and proxies is not None)
        if use_proxies and (proxies is None or proxy_labels is None):
            raise LangDMLError("DirectionRegularizer: mode='proxies' needs a proxy-based base loss")
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
            t, c = direction_terms(s_ap, s_an, s_pn, neg & has, self.form)
            total, count = total + t, count + c
        return total, count
