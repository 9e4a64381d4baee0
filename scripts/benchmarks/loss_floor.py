"""The floor of a loss in bench_losses.py: the work any implementation of its formula must do
at the benchmark's shape, as matrix products and row norms that can be timed beside the loss.

What counts (and nothing else, so the floor is a lower bound, not a target picked to flatter):

* the forward similarity product, (B, d) @ (d, R) for R reference rows: the proxies or class
  weights (C, or C·K SoftTriple centres), the memory of a cross-batch memory, the batch itself
  for a pair loss, the pairs' positives for N-pair;
* the backward products ∂L/∂S @ (R, d) for the batch and ∂L/∂Sᵀ @ (B, d) for trained reference
  rows (proxies, class weights; N-pair's positives; a memory or a symmetric Gram needs only the
  first, as (G + Gᵀ) Z), but only where ∂L/∂S is dense for every input: softmax and
  log-sum-exp losses (ProxyNCA, Proxy Anchor, ArcFace, CosFace, NormalizedSoftmax, SoftTriple,
  N-pair). Hinge and mined losses (contrastive, triplet, margin, multi-similarity, circle, and
  the memory around contrastive or multi-similarity) can have a sparse gradient, which an
  implementation may multiply for less, so their floor is the forward product alone;
* the row norms of the rows the formula normalises and that must be normalised in this call:
  the batch, the trained reference rows; not a memory's rows (they could be stored normalised).

Not counted: the elementwise work (scaling, exp / log, the margins, the chain through the
normalisation), label handling, allocations of anything but the products' outputs. The products
run in float32 on random operands of the loss's shapes and layouts (the batch (B, d) row-major,
reference rows (R, d) row-major, as the losses hold them).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

PROXY_CASES = (
    "proxy_anchor",
    "proxy_nca",
    "arcface",
    "cosface",
    "normalized_softmax",
    "soft_triple",
)
# Pair losses whose gradient may be sparse (hinges, mining): forward Gram product only.
SPARSE_PAIR_CASES = ("multi_similarity", "triplet", "contrastive", "margin", "circle")


@dataclass(frozen=True)
class Product:
    """One matrix product: an (m, k) operand times a (k, n) operand, read from the tensors the
    floor names ("x" the batch, "ref" the reference rows, "grad" ∂L/∂S), transposed where the
    loss reads them transposed. ``role`` says which term of the loss it is."""

    role: str
    m: int
    k: int
    n: int
    a: str
    b: str


@dataclass(frozen=True)
class Floor:
    """The products and row norms of one forward+backward of a loss at one shape."""

    batch: int
    dim: int
    refs: int
    products: tuple[Product, ...]
    normalised: tuple[str, ...]  # operands whose rows are normalised: "x", "ref"

    def operands(self, device: str) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(0)
        shapes = {"x": (self.batch, self.dim), "ref": (self.refs, self.dim)}
        shapes["grad"] = (self.batch, self.refs)
        return {k: torch.randn(*s, generator=g).to(device) for k, s in shapes.items()}

    def run(self, ops: dict[str, torch.Tensor]) -> None:
        """The products and norms once (outputs discarded)."""
        for name in self.normalised:
            torch.linalg.vector_norm(ops[name], dim=1)
        for p in self.products:
            _operand(ops, p.a) @ _operand(ops, p.b)


def _operand(ops: dict[str, torch.Tensor], spec: str) -> torch.Tensor:
    name, _, transpose = spec.partition(".")
    return ops[name].T if transpose == "T" else ops[name]


def _products(batch: int, dim: int, refs: int, dense_grad: bool, trained_refs: bool):
    out = [Product("forward S = X Rᵀ", batch, dim, refs, "x", "ref.T")]
    if dense_grad:
        out.append(Product("backward ∂L/∂S R", batch, refs, dim, "grad", "ref"))
        if trained_refs:
            out.append(Product("backward ∂L/∂Sᵀ X", refs, batch, dim, "grad.T", "x"))
    return tuple(out)


def pair_count(labels: torch.Tensor) -> int:
    """The number of classes with at least two samples: N-pair's anchor-positive pairs."""
    _, counts = torch.unique(labels, return_counts=True)
    return int((counts >= 2).sum())


def xbm_references(loss: torch.nn.Module, batch: int) -> int:
    """Rows the memory holds after the next call enqueues a batch of ``batch``."""
    head, wrapped = int(loss.queue_state[0]), bool(loss.queue_state[1])
    filled = loss.memory_size if wrapped else head
    return min(loss.memory_size, filled + batch)


def case_floor(name: str, loss: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor) -> Floor:
    """The floor of bench_losses.py's case ``name`` for ``loss`` (ours, in the state before
    the call) on the batch (x, labels)."""
    batch, dim = x.shape
    if name in PROXY_CASES:
        refs = loss.proxies.shape[0]
        products = _products(batch, dim, refs, dense_grad=True, trained_refs=True)
        return Floor(batch, dim, refs, products, ("x", "ref"))
    if name == "npair":
        # The loss scores N anchors against N positives, one pair per class: batch N.
        n = pair_count(labels)
        products = _products(n, dim, n, dense_grad=True, trained_refs=True)
        return Floor(n, dim, n, products, ("x", "ref"))
    if name.startswith("xbm_"):
        refs = xbm_references(loss, batch)
        return Floor(batch, dim, refs, _products(batch, dim, refs, False, False), ("x",))
    if name in SPARSE_PAIR_CASES:
        return Floor(batch, dim, batch, _products(batch, dim, batch, False, False), ("x",))
    raise KeyError(f"no floor for case {name!r}")
