"""Shared pieces of the loss library: input checks, fp32 casting and fast similarity helpers.

Every loss works on L2-normalised embeddings z_i = x_i / ||x_i|| (zero rows stay zero), with
autocast off, in float32 -- in float64 when float64 comes in (``as_compute``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor

from langdml.errors import LangDMLError

# Squared distances below this are treated as exact zeros: sqrt has an infinite slope at 0, and
# a zero distance only arises for duplicate embeddings, whose gradient direction is undefined.
_SQ_EPS = 1e-12
_NORM_EPS = 1e-12


def check_batch(embeddings: object, labels: object, who: str) -> None:
    """Raise LangDMLError (a ValueError) unless embeddings is finite (B, d) and labels int (B,)."""
    if not isinstance(embeddings, Tensor):
        raise LangDMLError(f"{who}: embeddings must be a torch.Tensor, got {type(embeddings)}")
    if embeddings.ndim != 2:
        raise LangDMLError(
            f"{who}: embeddings must be 2-D (batch, dim), got shape {tuple(embeddings.shape)}"
        )
    if not embeddings.is_floating_point():
        raise LangDMLError(f"{who}: embeddings must be floating point, got {embeddings.dtype}")
    if not isinstance(labels, Tensor):
        raise LangDMLError(f"{who}: labels must be a torch.Tensor, got {type(labels)}")
    if labels.ndim != 1:
        raise LangDMLError(f"{who}: labels must be 1-D (batch,), got shape {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise LangDMLError(f"{who}: labels must have an integer dtype, got {labels.dtype}")
    if labels.shape[0] != embeddings.shape[0]:
        raise LangDMLError(
            f"{who}: {labels.shape[0]} labels for {embeddings.shape[0]} embeddings; "
            "expected one label per embedding"
        )
    # One reduction first: its sum is finite unless an entry is NaN/Inf (or the sum overflows).
    if embeddings.numel() and not bool(torch.isfinite(embeddings.sum(dtype=torch.float32))):
        if not bool(torch.isfinite(embeddings).all()):
            raise LangDMLError(f"{who}: embeddings contain NaN or Inf values")
    if labels.numel() and int(labels.min()) < 0:
        raise LangDMLError(f"{who}: labels must be >= 0, got {int(labels.min())}")


def check_proxy_batch(
    embeddings: object, labels: object, num_classes: int, embedding_size: int, who: str
) -> None:
    """check_batch, plus labels below num_classes and embeddings of width embedding_size."""
    check_batch(embeddings, labels, who)
    check_labels_below(labels, num_classes, who)
    if embeddings.shape[1] != embedding_size:
        raise LangDMLError(
            f"{who}: embeddings have dim {embeddings.shape[1]}, "
            f"expected embedding_size={embedding_size}"
        )


def check_labels_below(labels: Tensor, num_classes: int, who: str) -> None:
    if labels.numel() and int(labels.max()) >= num_classes:
        raise LangDMLError(
            f"{who}: label {int(labels.max())} >= num_classes={num_classes}; "
            f"expected labels in [0, {num_classes})"
        )


@contextlib.contextmanager
def fp32_region(t: Tensor) -> Iterator[None]:
    """Turn autocast off so matmuls and exps run in float32 even inside an AMP region."""
    with torch.autocast(device_type=t.device.type, enabled=False):
        yield


def as_fp32(x: Tensor) -> Tensor:
    return x if x.dtype == torch.float32 else x.float()


def as_compute(x: Tensor) -> Tensor:
    """The dtype a loss computes in: float64 stays float64 (a float64 caller gets float64
    precision), every other floating dtype (float16, bfloat16) becomes float32."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def normalize(x: Tensor) -> Tensor:
    """Rows scaled to unit length; an all-zero row stays zero and gets a zero gradient.

    Equal to F.normalize(x, dim=1) in value, but F.normalize's gradient for a zero row is
    g / 1e-12, which overflows to Inf once cast back to float16.
    """
    norm = torch.linalg.vector_norm(x, dim=1, keepdim=True)
    scale = torch.where(norm > _NORM_EPS, 1.0 / norm.clamp_min(_NORM_EPS), torch.zeros_like(norm))
    return x * scale


def different_labels(labels: Tensor) -> Tensor:
    """(B, B) float32: 1 where labels differ, 0 where equal.

    Built with float arithmetic, |y_i - y_j| clipped at 1 (exact for labels below 2^24),
    because boolean masks and masked_fill are several times slower than float multiplies.
    """
    if labels.numel() and int(labels.max()) >= 2**24:
        return (labels[:, None] != labels[None, :]).to(torch.float32)
    f = labels.to(torch.float32)
    return (f[:, None] - f[None, :]).abs_().clamp_max_(1.0)


def float_pair_masks(labels: Tensor) -> tuple[Tensor, Tensor]:
    """Float (B, B) masks: positives (same label, i != j) and negatives (different label)."""
    neg = different_labels(labels)
    pos = 1.0 - neg
    pos.fill_diagonal_(0.0)
    return pos, neg


class _SymmetricGram(torch.autograd.Function):
    """S = Z Zᵀ whose backward is one matmul, (G + Gᵀ) Z, instead of autograd's two."""

    @staticmethod
    def forward(ctx, z: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(z)
        return z @ z.T

    @staticmethod
    def backward(ctx, g: Tensor) -> Tensor:  # type: ignore[override]
        (z,) = ctx.saved_tensors
        return (g + g.T) @ z


def cosine_matrix(x: Tensor) -> Tensor:
    """(B, B) cosine similarities of the rows of x."""
    return _SymmetricGram.apply(normalize(x))


def distance_from_cosine(s: Tensor) -> Tensor:
    """Euclidean distance between unit vectors, sqrt(2 - 2 s), with a zero gradient at 0."""
    sq = (2.0 - 2.0 * s).clamp_min(0.0)
    nonzero = sq > _SQ_EPS
    return torch.where(nonzero, sq.clamp_min(_SQ_EPS).sqrt(), torch.zeros_like(sq))


class _UnitDistance(torch.autograd.Function):
    """D = sqrt(2 - 2 Z Zᵀ) for unit rows Z, fused: in-place forward, one-matmul backward.

    dL/dS = -G / D (0 where D = 0), so dL/dZ = -(G/D + (G/D)ᵀ) Z. Only Z and D are kept for
    backward, against five (B, B) intermediates for the same chain through autograd.
    """

    @staticmethod
    def forward(ctx, z: Tensor) -> Tensor:  # type: ignore[override]
        d = z @ z.T
        d.mul_(-2.0).add_(2.0).clamp_min_(0.0)
        d.masked_fill_(d <= _SQ_EPS, 0.0)
        d.sqrt_()
        ctx.save_for_backward(z, d)
        return d

    @staticmethod
    def backward(ctx, g: Tensor) -> Tensor:  # type: ignore[override]
        z, d = ctx.saved_tensors
        gs = torch.where(d > 0, g / d, torch.zeros_like(g))
        gs = gs + gs.T
        return -(gs @ z)


def distance_matrix(x: Tensor) -> Tensor:
    """(B, B) Euclidean distances between the L2-normalised rows of x."""
    return _UnitDistance.apply(normalize(x))


def positive_negative_masks(labels: Tensor) -> tuple[Tensor, Tensor]:
    """Boolean (B, B) masks: positives (same label, i != j) and negatives (different label)."""
    same = labels[:, None] == labels[None, :]
    neg = ~same
    same.fill_diagonal_(False)
    return same, neg


def zero_loss(x: Tensor) -> Tensor:
    """A 0 that is still attached to the graph, so .backward() works and gives zero gradients."""
    return (x * 0.0).sum()


def mined_pair_masks(
    indices_tuple: tuple[Tensor, ...], batch_size: int, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Boolean (B, B) positive and negative masks from (a, p, n) or (a1, p, a2, n) indices."""
    if len(indices_tuple) == 3:
        a1, p, n = indices_tuple
        a2 = a1
    elif len(indices_tuple) == 4:
        a1, p, a2, n = indices_tuple
    else:
        raise LangDMLError(
            f"indices_tuple must have 3 (a, p, n) or 4 (a1, p, a2, n) entries, "
            f"got {len(indices_tuple)}"
        )
    pos = torch.zeros(batch_size, batch_size, dtype=torch.bool, device=device)
    neg = torch.zeros_like(pos)
    pos[a1.long(), p.long()] = True
    neg[a2.long(), n.long()] = True
    return pos, neg


def mined_pair_counts(
    indices_tuple: tuple[Tensor, ...], batch_size: int, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Like mined_pair_masks but (B, B) float multiplicities: a triplet miner repeats each
    anchor-positive pair once per negative, and pytorch-metric-learning counts every repeat."""
    if len(indices_tuple) == 3:
        a1, p, n = indices_tuple
        a2 = a1
    elif len(indices_tuple) == 4:
        a1, p, a2, n = indices_tuple
    else:
        raise LangDMLError(f"indices_tuple must have 3 or 4 entries, got {len(indices_tuple)}")
    size = batch_size * batch_size
    pos = torch.bincount(a1.long() * batch_size + p.long(), minlength=size)
    neg = torch.bincount(a2.long() * batch_size + n.long(), minlength=size)
    shape = (batch_size, batch_size)
    return (
        pos.view(shape).to(device=device, dtype=torch.float32),
        neg.view(shape).to(device=device, dtype=torch.float32),
    )


def mined_sample_weights(
    indices_tuple: tuple[Tensor, ...],
    batch_size: int,
    device: torch.device,
    who: str,
    anchors_only: bool = False,
    dtype: torch.dtype = torch.float32,
) -> Tensor | None:
    """Per-sample weights (B,) in ``dtype`` of a mined (a, p, n) or (a1, p, a2, n) tuple, as
    pytorch-metric-learning's proxy losses read one: w_i = (number of times sample i occurs in
    the tuple) / (the largest such count), 0 for a sample the tuple never names.

    ``anchors_only`` counts only the anchors (a, or a1 and a2). Returns None when every entry is
    empty: PML then weights every sample 1, so the loss is the unmined one. Raises
    LangDMLError (one line) for a malformed tuple.
    """
    if not isinstance(indices_tuple, (tuple, list)) or len(indices_tuple) not in (3, 4):
        what = (
            f"{len(indices_tuple)} entries"
            if isinstance(indices_tuple, (tuple, list))
            else type(indices_tuple).__name__
        )
        raise LangDMLError(f"{who}: indices_tuple must be (a, p, n) or (a1, p, a2, n), got {what}")
    for t in indices_tuple:
        integer = isinstance(t, Tensor) and not (
            t.is_floating_point() or t.is_complex() or t.dtype == torch.bool
        )
        if not integer or t.ndim != 1:
            raise LangDMLError(f"{who}: indices_tuple entries must be 1-D integer tensors")
    lengths = [len(t) for t in indices_tuple]
    if len(lengths) == 3:
        consistent = lengths[0] == lengths[1] == lengths[2]
        anchors = [indices_tuple[0]]
    else:
        consistent = lengths[0] == lengths[1] and lengths[2] == lengths[3]
        anchors = [indices_tuple[0], indices_tuple[2]]
    if not consistent:
        raise LangDMLError(f"{who}: indices_tuple entries have mismatched lengths {lengths}")
    if not any(lengths):
        return None
    every = torch.cat([t.to(device=device, dtype=torch.long) for t in indices_tuple])
    lo, hi = (int(v) for v in torch.aminmax(every))
    if lo < 0 or hi >= batch_size:
        bad = lo if lo < 0 else hi
        raise LangDMLError(f"{who}: indices_tuple index {bad} is outside the batch of {batch_size}")
    if anchors_only:
        every = torch.cat([t.to(device=device, dtype=torch.long) for t in anchors])
    counts = torch.bincount(every, minlength=batch_size).to(dtype)
    return counts.div_(counts.max())


def log_softmax(x: Tensor, dim: int) -> Tensor:
    """x - logsumexp(x): same values as torch.log_softmax. On CPU, torch's softmax kernels spin
    up the thread pool even for tiny inputs, which costs milliseconds when cores are shared."""
    return x - torch.logsumexp(x, dim=dim, keepdim=True)


def cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """Mean over rows of -log_softmax(logits)[target] (F.cross_entropy with defaults)."""
    picked = logits.gather(1, target[:, None]).squeeze(1)
    return (torch.logsumexp(logits, dim=1) - picked).mean()
