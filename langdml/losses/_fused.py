"""Fused value-and-gradient kernels for the similarity-matrix losses.

A loss L(S) of the cosine matrix S = Z Zᵀ (or Z Pᵀ) of L2-normalised rows is computed together
with G = ∂L/∂S in one no-grad pass that reuses S's buffer in place; backward is then
dZ = (G + Gᵀ) Z (or dZ = G P, dP = Gᵀ Z) chained through the normalisation by hand. This keeps
one (B, B) buffer alive instead of autograd's chain of intermediates, and avoids most
elementwise passes. The cross kernels (S = Zx Zpᵀ, and two row sets of one batch) go further:
no normalised copy of the rows is made; S is the raw product scaled by the inverse row norms,
and backward scales G the same way before its products. Their backward scales G in place, so
it runs once: a second backward through a retained graph raises. Double backward is not
supported.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

# fn(S) -> (L, ∂L/∂S) or (L, ∂L/∂S, number of non-zeros of ∂L/∂S, if the loss knows it)
ValueAndGrad = Callable[[Tensor], tuple[Tensor, ...]]
# On CPU, a gradient this sparse (hinge losses with few active pairs) is multiplied as a sparse
# matrix: O(nnz · d) instead of O(B² · d).
SPARSE_MAX_DENSITY = 1.0 / 16


_NORM_EPS = 1e-12


def _inverse_norms(x: Tensor) -> Tensor:
    """1 / ||x|| per row as a (n, 1) column; 0 for zero rows (their cosines and gradient 0)."""
    norm = torch.linalg.vector_norm(x, dim=1, keepdim=True)
    return torch.where(norm > _NORM_EPS, norm.clamp_min(_NORM_EPS).reciprocal_(), 0.0)


def _unit_rows(x: Tensor) -> tuple[Tensor, Tensor]:
    """(x / ||x||, 1 / ||x||) per row; zero rows give zeros (value and gradient)."""
    inv = _inverse_norms(x)
    return x * inv, inv


def _unit_rows_backward(dz: Tensor, z: Tensor, inv: Tensor, g: Tensor) -> Tensor:
    """Chain ∂L/∂z through z = x / ||x||: (dz - z (z·dz)) / ||x||, scaled by the output grad."""
    along = torch.linalg.vecdot(dz, z, dim=1).unsqueeze(1)
    return dz.addcmul_(z, along, value=-1.0).mul_(inv * g)


class _GramLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, fn: ValueAndGrad, symmetric: bool) -> Tensor:  # type: ignore[override]
        z, inv = _unit_rows(x)
        value, grad, *nnz = fn(z @ z.T)
        if nnz and grad.device.type == "cpu" and int(nnz[0]) <= SPARSE_MAX_DENSITY * grad.numel():
            grad = grad.to_sparse()
        ctx.save_for_backward(z, inv, grad)
        ctx.symmetric = symmetric
        return value

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        z, inv, grad = ctx.saved_tensors
        if grad.is_sparse:
            dz = torch.sparse.mm(grad, z)
            dz = dz.mul_(2.0) if ctx.symmetric else dz.add_(torch.sparse.mm(grad.t(), z))
        else:
            dz = (grad @ z).mul_(2.0) if ctx.symmetric else (grad + grad.T) @ z
        return _unit_rows_backward(dz, z, inv, g), None, None


def _chain_raw_rows_(d: Tensor, x: Tensor, inv: Tensor, scratch: Tensor) -> Tensor:
    """Turn d = ∂L/∂z / ||x|| (z = x / ||x||) into ∂L/∂x in place: d - x (x·d) / ||x||².

    The row dots need one (n, k) product buffer; the dead ∂L/∂S buffer ``scratch`` holds it
    when it is large enough (a fresh buffer costs its page faults on the CPU)."""
    if scratch.numel() >= d.numel() and scratch.is_contiguous():
        buf = scratch.view(-1)[: d.numel()].view(d.shape)
        along = torch.mul(x, d, out=buf).sum(dim=1, keepdim=True)
    else:
        along = torch.linalg.vecdot(x, d, dim=1).unsqueeze(1)
    return d.addcmul_(x, along.mul_(inv.square()), value=-1.0)


def _spend(ctx) -> None:
    """Mark a cross kernel's backward as run; a second run would read buffers it scaled."""
    if ctx.spent:
        raise RuntimeError("this loss's graph was already back-propagated once")
    ctx.spent = True


class _CrossLoss(torch.autograd.Function):
    """S = diag(1/||x||) X Pᵀ diag(1/||p||): the rows are never normalised into new buffers.
    Backward scales ∂L/∂S by both norms in place, so X and P enter the products as they are,
    and chains the normalisation with the row dots x·(∂L/∂x) (no z = x / ||x|| is kept)."""

    @staticmethod
    def forward(ctx, x: Tensor, p: Tensor, fn: ValueAndGrad, scale: float) -> Tensor:  # type: ignore[override]
        inv_x, inv_p = _inverse_norms(x), _inverse_norms(p)
        # the row scale and the caller's scale in one pass, the column scale in a second
        scaled = torch.mm(x, p.T).mul_(inv_x * scale).mul_(inv_p.T)
        value, grad = fn(scaled)
        ctx.save_for_backward(x, inv_x, p, inv_p, grad)
        ctx.scale, ctx.spent = scale, False
        return value

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        _spend(ctx)
        x, inv_x, p, inv_p, grad = ctx.saved_tensors
        grad.mul_(inv_x * (g * ctx.scale)).mul_(inv_p.T)
        dx = torch.mm(grad, p)
        dp = torch.mm(grad.T, x)
        _chain_raw_rows_(dx, x, inv_x, grad)
        _chain_raw_rows_(dp, p, inv_p, grad)
        return dx, dp, None, None


class _RowsCrossLoss(torch.autograd.Function):
    """S = diag(1/||x_a||) X_a X_bᵀ diag(1/||x_b||) for two row sets of one batch. S is small
    (pairs × pairs), so a copy of it is kept: the row dots that chain the normalisation are then
    row and column sums of S ∘ ∂L/∂S, and each side's gradient is one pass that writes the
    normalisation term plus a product accumulated onto it (addmm)."""

    @staticmethod
    def forward(ctx, x: Tensor, a: Tensor, b: Tensor, fn: ValueAndGrad) -> Tensor:  # type: ignore[override]
        rows = torch.cat((a, b))
        xr = x[rows]  # both sides in one buffer: one gradient buffer in backward
        inv = _inverse_norms(xr)
        (xa, xb), (inv_a, inv_b) = xr.split(a.numel()), inv.split(a.numel())
        cos = torch.mm(xa, xb.T).mul_(inv_a).mul_(inv_b.T)
        kept = cos.clone()
        value, grad = fn(cos)
        ctx.save_for_backward(rows, xr, inv, kept, grad)
        ctx.x_shape, ctx.spent = x.shape, False
        return value

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        _spend(ctx)
        rows, xr, inv, kept, grad = ctx.saved_tensors
        n = grad.shape[0]
        both = kept.mul_(grad)  # ∂L/∂S ∘ S
        # z·(∂L/∂z) per row: row sums for the a side, column sums for the b side
        along = torch.cat((both.sum(dim=1), both.sum(dim=0))).unsqueeze(1).mul_(g)
        d = torch.mul(xr, along.mul_(inv.square()).neg_())
        (xa, xb), (inv_a, inv_b) = xr.split(n), inv.split(n)
        grad.mul_(inv_a * g).mul_(inv_b.T)
        d[:n].addmm_(grad, xb)
        d[n:].addmm_(grad.T, xa)
        return d.new_zeros(ctx.x_shape).index_add_(0, rows, d), None, None, None


def rows_cross_loss(x: Tensor, a: Tensor, b: Tensor, fn: ValueAndGrad) -> Tensor:
    """cross_loss(x[a], x[b], fn) with one gradient buffer for x: the rows' gradients are
    added into a single zero (B, d) tensor (autograd's two gathers would fill and sum two)."""
    return _RowsCrossLoss.apply(x, a, b, fn)


def _sparse_enough(grad: Tensor) -> bool:
    return grad.device.type == "cpu" and int(torch.count_nonzero(grad)) <= (
        SPARSE_MAX_DENSITY * grad.numel()
    )


class _ConstantCosines(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, refs: Tensor) -> Tensor:  # type: ignore[override]
        z, inv = _unit_rows(x)
        zr = _unit_rows(refs)[0]
        ctx.save_for_backward(z, inv, zr)
        return z @ zr.T

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        z, inv, zr = ctx.saved_tensors
        dz = torch.sparse.mm(grad.to_sparse(), zr) if _sparse_enough(grad) else grad @ zr
        return _unit_rows_backward(dz, z, inv, grad.new_ones(())), None


def constant_cosines(x: Tensor, refs: Tensor) -> Tensor:
    """(B, R) cosines of the rows of x to constant reference rows (no gradient to refs),
    differentiable in x: backward is one product (a sparse one on the CPU when ∂L/∂S is
    sparse, as hinge losses' often are) and the normalisation chained by hand."""
    return _ConstantCosines.apply(x, refs.detach())


class _Attach(torch.autograd.Function):
    @staticmethod
    def forward(ctx, s: Tensor, value: Tensor, grad: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(grad)
        return value.clone()

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        return grad * g, None, None


def attach_gradient(s: Tensor, value: Tensor, grad: Tensor) -> Tensor:
    """``value`` (computed without autograd) with ∂value/∂s = ``grad`` attached to s."""
    return _Attach.apply(s, value, grad)


def gram_loss(x: Tensor, fn: ValueAndGrad, symmetric: bool = False) -> Tensor:
    """fn(S) -> (L, ∂L/∂S) for S = Z Zᵀ, Z the L2-normalised rows of x; returns L with autograd
    to x. symmetric=True promises ∂L/∂S is symmetric (saves a transpose)."""
    return _GramLoss.apply(x, fn, symmetric)


def cross_loss(x: Tensor, p: Tensor, fn: ValueAndGrad, scale: float = 1.0) -> Tensor:
    """fn(T) -> (L, ∂L/∂T) for T = scale · Zx Zpᵀ, the cosines of the L2-normalised rows of x
    and p times ``scale`` (p is used in x's dtype; its gradient comes back in its own). fn may
    overwrite T with ∂L/∂T. A scaled-logit loss passes its scale here: it costs no pass of its
    own (it rides on the normalisation's) and backward folds it back into the gradient."""
    return _CrossLoss.apply(x, p if p.dtype == x.dtype else p.to(x.dtype), fn, float(scale))


def log1p_sum_exp_(t: Tensor, drop: Tensor | None, dim: int) -> Tensor:
    """Return log(1 + Σ_{not drop} exp(t)) along dim and overwrite t with its gradient ∂/∂t.

    Stable (shifted by max(0, max t)); dropped entries get gradient 0; empty rows give 0.
    """
    if drop is not None:
        t.masked_fill_(drop, float("-inf"))
    shift = t.amax(dim=dim, keepdim=True).clamp_min_(0.0)
    t.sub_(shift).exp_()
    denom = t.sum(dim=dim, keepdim=True).add_(torch.exp(-shift))
    t.div_(denom)
    return (shift + denom.log()).squeeze(dim)


# Floor for distances we divide by (sqrt's slope 1 / (2 D) is unbounded at 0).
MIN_DISTANCE = 1e-6
# exp(t) is summed without a max-shift when t <= this bound: e^60 * 1e9 terms stays finite.
DIRECT_EXP_BOUND = 60.0
# float32's largest value is e^88.7 and its smallest normal e^-87.3: a sum of n exps of values in
# [low, high] needs no max-shift when high + ln n <= this (e^8 headroom) and low >= -this.
_DIRECT_SUM_LOG = 80.0


def direct_exp_ok(low: float, high: float, terms: int) -> bool:
    """True when Σ e^t over ``terms`` values t in [low, high] is safe without a max-shift in
    float32: the sum stays finite with room to spare and no term falls below the normal range
    (a row of underflowed terms would sum to 0 and its log to -inf)."""
    return high + math.log(max(terms, 1)) <= _DIRECT_SUM_LOG and low >= -_DIRECT_SUM_LOG


def unit_distances_(s: Tensor) -> Tensor:
    """Turn cosine similarities of unit vectors into Euclidean distances, in place."""
    return s.mul_(-2.0).add_(2.0).clamp_min_(0.0).sqrt_()


def above(t: Tensor, threshold: float, out: Tensor | None = None) -> Tensor:
    """Float 1.0 where t > threshold, else 0.0 (a float result: bool masks are slow on CPU)."""
    out = torch.empty_like(t) if out is None else out
    return torch.gt(t, threshold, out=out)


def below(t: Tensor, threshold: float, out: Tensor | None = None) -> Tensor:
    out = torch.empty_like(t) if out is None else out
    return torch.lt(t, threshold, out=out)


def distance_grad_to_similarity_(grad_d: Tensor, d: Tensor) -> Tensor:
    """∂L/∂S = -∂L/∂D / D for D = sqrt(2 - 2S), in place (d is clobbered).

    D is clamped at MIN_DISTANCE: for near-coincident unit vectors the chain through the
    normalisation multiplies this by the tangential part of z_j (~D), so the gradient on the
    embeddings stays bounded (and is exactly 0 for identical ones).
    """
    return grad_d.div_(d.clamp_min_(MIN_DISTANCE)).neg_()


def log1p_sum_exp_direct_(t: Tensor, keep: Tensor | None, dim: int) -> Tensor:
    """log1p_sum_exp_ for t known to be <= DIRECT_EXP_BOUND: no shift, float mask ``keep``."""
    t.exp_()
    if keep is not None:
        t.mul_(keep)
    denom = t.sum(dim=dim, keepdim=True).add_(1.0)
    t.div_(denom)
    return denom.log().squeeze(dim)
