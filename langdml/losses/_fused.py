"""Fused value-and-gradient kernels for the similarity-matrix losses.

A loss L(S) of the cosine matrix S = Z Zᵀ (or Z Pᵀ) of L2-normalised rows is computed together
with G = ∂L/∂S in one no-grad pass that reuses S's buffer in place; backward is then
dZ = (G + Gᵀ) Z (or dZ = G P, dP = Gᵀ Z) chained through the normalisation by hand. This keeps
one (B, B) buffer alive instead of autograd's chain of intermediates, and avoids most
elementwise passes. Double backward is not supported.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

# fn(S) -> (L, ∂L/∂S) or (L, ∂L/∂S, number of non-zeros of ∂L/∂S, if the loss knows it)
ValueAndGrad = Callable[[Tensor], tuple[Tensor, ...]]
# On CPU, a gradient this sparse (hinge losses with few active pairs) is multiplied as a sparse
# matrix: O(nnz · d) instead of O(B² · d).
SPARSE_MAX_DENSITY = 1.0 / 16


_NORM_EPS = 1e-12


def _unit_rows(x: Tensor) -> tuple[Tensor, Tensor]:
    """(x / ||x||, 1 / ||x||) per row; zero rows give zeros (value and gradient)."""
    norm = torch.linalg.vector_norm(x, dim=1, keepdim=True)
    inv = torch.where(norm > _NORM_EPS, 1.0 / norm.clamp_min(_NORM_EPS), torch.zeros_like(norm))
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


class _CrossLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, p: Tensor, fn: ValueAndGrad) -> Tensor:  # type: ignore[override]
        zx, inv_x = _unit_rows(x)
        zp, inv_p = _unit_rows(p)
        value, grad = fn(zx @ zp.T)
        ctx.save_for_backward(zx, inv_x, zp, inv_p, grad)
        return value

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        zx, inv_x, zp, inv_p, grad = ctx.saved_tensors
        dx = _unit_rows_backward(grad @ zp, zx, inv_x, g)
        dp = _unit_rows_backward(grad.T @ zx, zp, inv_p, g)
        return dx, dp, None


class _RowsCrossLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, a: Tensor, b: Tensor, fn: ValueAndGrad) -> Tensor:  # type: ignore[override]
        rows = torch.cat((a, b))
        z, inv = _unit_rows(x[rows])  # both sides in one buffer: one chain in backward
        za, zb = z.split(a.numel())
        value, grad = fn(za @ zb.T)
        ctx.save_for_backward(rows, z, inv, grad)
        ctx.x_shape = x.shape
        return value

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        rows, z, inv, grad = ctx.saved_tensors
        n = grad.shape[0]
        za, zb = z.split(n)
        dz = torch.empty_like(z)
        torch.mm(grad, zb, out=dz[:n])
        torch.mm(grad.T, za, out=dz[n:])
        dx = z.new_zeros(ctx.x_shape)
        return dx.index_add_(0, rows, _unit_rows_backward(dz, z, inv, g)), None, None, None


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


def cross_loss(x: Tensor, p: Tensor, fn: ValueAndGrad) -> Tensor:
    """fn(S) -> (L, ∂L/∂S) for S = Zx Zpᵀ of the L2-normalised rows of x and p (p is used in
    x's dtype; its gradient comes back in its own)."""
    return _CrossLoss.apply(x, p if p.dtype == x.dtype else p.to(x.dtype), fn)


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
