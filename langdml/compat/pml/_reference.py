"""Pair losses against a separate reference batch (PML's ``ref_emb`` / ``ref_labels``).

Anchors are the batch, positives and negatives the reference rows: (i, j) is a positive pair
when labels[i] == ref_labels[j] and a negative pair otherwise; the pair (i, i) is left out only
when ``ref_labels`` is the very ``labels`` tensor (PML's rule). Without a mined tuple the loss
is evaluated on the (B, R) cosine matrix by the rectangular kernels of
``langdml.losses.xbm.RECT_LOSSES`` (the ones cross-batch memory uses); a mined tuple's
positives and negatives index the reference, and the per-pair / per-triplet terms are written
out from PML's definitions (triplet: mean over the non-zero [d_ap - d_an + m]_+; contrastive:
the mean of the non-zero positive terms plus that of the non-zero negative terms).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from langdml.errors import LangDMLError
from langdml.losses import ContrastiveLoss, MarginLoss, TripletLoss
from langdml.losses.inputs import distance_from_cosine, normalize, zero_loss
from langdml.losses.xbm import RECT_LOSSES


def _native_type(loss: nn.Module) -> type:
    for cls in type(loss).__mro__:
        if cls in RECT_LOSSES:
            return cls
    raise LangDMLError(f"{type(loss).__name__}: ref_emb is not supported for this loss")


def _pair_masks(labels: Tensor, ref_labels: Tensor, same: bool) -> tuple[Tensor, Tensor]:
    pos = labels[:, None] == ref_labels[None, :]
    neg = ~pos
    if same and pos.shape[0] == pos.shape[1]:
        pos.fill_diagonal_(False)
    return pos, neg


def _mined_masks(indices_tuple: tuple[Tensor, ...], shape: tuple[int, int], device) -> tuple:
    a1, p, a2, n = _as_pairs(indices_tuple)
    pos = torch.zeros(shape, dtype=torch.bool, device=device)
    neg = torch.zeros_like(pos)
    pos[a1, p] = True
    neg[a2, n] = True
    return pos, neg


def _as_pairs(indices_tuple: tuple[Tensor, ...]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    if len(indices_tuple) == 3:
        a, p, n = (t.long() for t in indices_tuple)
        return a, p, a, n
    if len(indices_tuple) == 4:
        return tuple(t.long() for t in indices_tuple)  # type: ignore[return-value]
    raise LangDMLError(
        f"indices_tuple must be (a, p, n) or (a1, p, a2, n), got {len(indices_tuple)} entries"
    )


def _as_triplets(indices_tuple: tuple[Tensor, ...]) -> tuple[Tensor, Tensor, Tensor]:
    """(a, p, n); a pair tuple is joined on its anchors (each positive pair of an anchor with
    each of its negative pairs), as PML's convert_to_triplets."""
    if len(indices_tuple) == 3:
        return tuple(t.long() for t in indices_tuple)  # type: ignore[return-value]
    a1, p, a2, n = _as_pairs(indices_tuple)
    i, j = torch.where(a1[:, None] == a2[None, :])
    return a1[i], p[i], n[j]


def _mean_nonzero(terms: Tensor) -> Tensor:
    return terms.sum() / (terms > 0).sum().clamp_min(1)


def _pair_distances(z: Tensor, r: Tensor, a: Tensor, b: Tensor) -> Tensor:
    return distance_from_cosine((z[a] * r[b]).sum(dim=1))


def _mined_loss(loss: nn.Module, z: Tensor, r: Tensor, indices_tuple: tuple) -> Tensor | None:
    """The explicit-tuple forms (triplet, contrastive); None for the mask-based losses."""
    if isinstance(loss, TripletLoss):
        a, p, n = _as_triplets(indices_tuple)
        if a.numel() == 0:
            return zero_loss(z)
        d_ap, d_an = _pair_distances(z, r, a, p), _pair_distances(z, r, a, n)
        return _mean_nonzero(torch.relu(d_ap - d_an + loss.margin))
    if isinstance(loss, ContrastiveLoss):
        a1, p, a2, n = _as_pairs(indices_tuple)
        if all(len(t) <= 1 for t in (a1, p, a2, n)):
            return zero_loss(z)
        pos = torch.relu(_pair_distances(z, r, a1, p) - loss.pos_margin)
        neg = torch.relu(loss.neg_margin - _pair_distances(z, r, a2, n))
        return _mean_nonzero(pos) + _mean_nonzero(neg)
    if isinstance(loss, MarginLoss):
        raise LangDMLError("MarginLoss: a mined indices_tuple with ref_emb is not supported")
    return None


def reference_loss(
    loss: nn.Module,
    x: Tensor,
    labels: Tensor,
    ref: Tensor,
    ref_labels: Tensor,
    indices_tuple: tuple[Tensor, ...] | None,
    same: bool,
) -> Tensor:
    """``loss`` (a pair loss) of anchors ``x`` against the reference ``ref``; module docstring."""
    native = _native_type(loss)
    if native is MarginLoss and loss.triplets_per_anchor != "all":
        raise LangDMLError("MarginLoss: ref_emb needs triplets_per_anchor='all'")
    z, r = normalize(x), normalize(ref.to(x.dtype))
    if indices_tuple is None:
        pos, neg = _pair_masks(labels, ref_labels, same)
    else:
        mined = _mined_loss(loss, z, r, indices_tuple)
        if mined is not None:
            return mined
        if all(len(t) <= 1 for t in indices_tuple):
            return zero_loss(z)
        pos, neg = _mined_masks(indices_tuple, (len(x), len(ref)), x.device)
    return RECT_LOSSES[native](loss, z @ r.T, pos, neg, labels)
