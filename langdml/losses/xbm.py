"""Cross-batch memory (XBM; Wang et al., "Cross-Batch Memory for Embedding Learning", CVPR 2020)
as a wrapper around a pair loss."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from langdml.errors import LangDMLError

from ._common import distance_from_cosine, zero_loss
from ._fused import (
    attach_gradient,
    constant_cosines,
    distance_grad_to_similarity_,
    log1p_sum_exp_,
    unit_distances_,
)
from .base import IndicesTuple, MetricLoss
from .circle import CircleLoss, circle_value_and_grad
from .contrastive import ContrastiveLoss
from .margin import MarginLoss, triplet_pair_weights
from .multi_similarity import MultiSimilarityLoss
from .triplet import TripletLoss, triplet_value_and_grad

# fn(inner loss, s (B, R) cosines of the batch to the references, differentiable, pos, neg,
# batch labels) -> scalar with autograd to s.
RectLoss = Callable[[nn.Module, Tensor, Tensor, Tensor, Tensor], Tensor]


def _through(s: Tensor, value_and_grad: Callable[[Tensor], tuple[Tensor, Tensor]]) -> Tensor:
    """The value of a no-grad (value, ∂L/∂s) kernel with ∂L/∂s attached to s."""
    with torch.no_grad():
        value, grad = value_and_grad(s.detach().clone())
    return attach_gradient(s, value, grad)


def _few_pairs(pos: Tensor, neg: Tensor) -> bool:
    """PML's generic pair losses return 0 when every pair list has at most one entry."""
    return int(pos.sum()) <= 1 and int(neg.sum()) <= 1


# Contrastive pairs are active only past their margin's cosine; the candidates are found on the
# cosines with this slack, then tested with the same distances as the dense form would use.
_CANDIDATE_SLACK = 1e-3


def _contrastive(loss: ContrastiveLoss, s: Tensor, pos: Tensor, neg: Tensor, _: Tensor) -> Tensor:
    if _few_pairs(pos, neg):
        return zero_loss(s)
    mp, mn = loss.pos_margin, loss.neg_margin
    with torch.no_grad():
        c = s.detach()
        # D = sqrt(2 - 2c): D > mp needs c < 1 - mp²/2, D < mn needs c > 1 - mn²/2
        at_p = torch.nonzero((c < 1.0 - mp * mp / 2 + _CANDIDATE_SLACK) & pos, as_tuple=True)
        at_n = torch.nonzero((c > 1.0 - mn * mn / 2 - _CANDIDATE_SLACK) & neg, as_tuple=True)
        d_p, d_n = unit_distances_(c[at_p]), unit_distances_(c[at_n])
        wp, wn = (d_p > mp).to(c.dtype), (d_n < mn).to(c.dtype)
        n_p, n_n = wp.sum().clamp_min(1), wn.sum().clamp_min(1)
        value = ((d_p - mp) * wp).sum() / n_p + ((mn - d_n) * wn).sum() / n_n
        grad = torch.zeros_like(c)  # pos and neg are disjoint: no entry is written twice
        grad[at_p] = distance_grad_to_similarity_(wp.div_(n_p), d_p)
        grad[at_n] = distance_grad_to_similarity_(wn.div_(n_n).neg_(), d_n)
    return attach_gradient(s, value, grad)


def _multi_similarity(
    loss: MultiSimilarityLoss, s: Tensor, pos: Tensor, neg: Tensor, _: Tensor
) -> Tensor:
    if _few_pairs(pos, neg):
        return zero_loss(s)
    a, b, lam = loss.alpha, loss.beta, loss.base

    def value_and_grad(c: Tensor) -> tuple[Tensor, Tensor]:
        t_pos = c.mul(-a).add_(a * lam)
        t_neg = c.mul_(b).sub_(b * lam)
        value = log1p_sum_exp_(t_pos, ~pos, dim=1) / a + log1p_sum_exp_(t_neg, ~neg, dim=1) / b
        return value.mean(), t_neg.sub_(t_pos).div_(c.shape[0])

    return _through(s, value_and_grad)


def _triplet(loss: TripletLoss, s: Tensor, pos: Tensor, neg: Tensor, _: Tensor) -> Tensor:
    def value_and_grad(c: Tensor) -> tuple[Tensor, Tensor]:
        d = unit_distances_(c)
        value, grad_d = triplet_value_and_grad(d, pos, neg, loss.margin)
        return value, distance_grad_to_similarity_(grad_d, d)

    return _through(s, value_and_grad)


def _circle(loss: CircleLoss, s: Tensor, pos: Tensor, neg: Tensor, _: Tensor) -> Tensor:
    if _few_pairs(pos, neg):
        return zero_loss(s)
    return _through(s, lambda c: circle_value_and_grad(c, pos, neg, loss.m, loss.gamma))


def _margin(loss: MarginLoss, s: Tensor, pos: Tensor, neg: Tensor, labels: Tensor) -> Tensor:
    # The memory hands PML's MarginLoss pairs, which it joins into all triplets: the
    # triplets_per_anchor setting does not apply here.
    wp, wn, triplets = triplet_pair_weights(pos, neg)
    return loss.reduce(distance_from_cosine(s), labels, wp, wn, triplets)


RECT_LOSSES: dict[type[nn.Module], RectLoss] = {
    ContrastiveLoss: _contrastive,
    MultiSimilarityLoss: _multi_similarity,
    TripletLoss: _triplet,
    MarginLoss: _margin,
    CircleLoss: _circle,
}


def rect_type(loss: nn.Module) -> type:
    """The RECT_LOSSES key of ``loss``: its type, or the ``rect_loss_type`` a subclass declares
    when it computes exactly its parent's loss (the PML-named compat classes)."""
    return getattr(type(loss), "rect_loss_type", type(loss))


def _int_at_least(who: str, name: str, value: object, low: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise LangDMLError(f"{who}: {name} must be an int >= {low}, got {value!r}")
    return value


class CrossBatchMemory(MetricLoss):
    """Cross-batch memory (Wang et al., CVPR 2020) around a pair loss, as pytorch-metric-
    learning's CrossBatchMemory:

        L = loss(anchors = the batch, references = batch ∪ memory, pairs = all (i, r) but
            each sample with its own memory copy)  [+ batch_weight · loss(batch)]

    The memory is a FIFO queue of the last ``memory_size`` embeddings (detached, in the compute
    dtype: float32, or float64 after float64 input) and
    labels; each training call first enqueues the batch, then scores it against everything
    stored (before the queue has wrapped once, only the filled slots). Gradients reach only the
    batch (the anchors); the references are constants. Equal to PML's CrossBatchMemory(loss,
    embedding_size, memory_size) over consecutive calls, for the supported inner losses:
    ContrastiveLoss, MultiSimilarityLoss, TripletLoss, MarginLoss (all triplets of the pairs,
    as PML) and CircleLoss; each is evaluated on the (B, R) batch×memory matrix, O(B·R)
    memory, so large queues (XBM uses up to tens of thousands) fit.

    ``start_iteration``: the first that many training calls return the plain inner loss on the
    batch and leave the memory empty (the paper starts XBM after the embedding has settled,
    e.g. 1000 iterations). ``batch_weight`` adds the in-batch loss, as the authors' code does
    (weight 1 there; PML and the default here: 0). In eval mode (``.eval()``) the loss is the
    plain inner loss and the memory is untouched. The queue (and its position and the call
    count) are buffers, so they follow ``.to()`` and ``state_dict()``; under DDP each rank
    keeps its own queue. Mined ``indices_tuple`` and inner-loss miners are not supported.

    Valid values: loss one of the types above (not a DR or other subclass) without a miner;
    embedding_size, memory_size ints >= 1 (a batch may not exceed memory_size);
    start_iteration an int >= 0; batch_weight >= 0.
    """

    def __init__(
        self,
        loss: nn.Module,
        embedding_size: int,
        memory_size: int = 1024,
        start_iteration: int = 0,
        batch_weight: float = 0.0,
    ) -> None:
        super().__init__(miner=None)
        who = "CrossBatchMemory"
        if rect_type(loss) not in RECT_LOSSES:
            names = sorted(t.__name__ for t in RECT_LOSSES)
            raise LangDMLError(
                f"{who}: inner loss {type(loss).__name__} not supported; use {names}"
            )
        if getattr(loss, "miner", None) is not None:
            raise LangDMLError(f"{who}: the inner loss's miner is not supported with a memory")
        self.embedding_size = _int_at_least(who, "embedding_size", embedding_size, 1)
        self.memory_size = _int_at_least(who, "memory_size", memory_size, 1)
        self.start_iteration = _int_at_least(who, "start_iteration", start_iteration, 0)
        if not float(batch_weight) >= 0:
            raise LangDMLError(f"{who}: batch_weight must be >= 0, got {batch_weight!r}")
        self.batch_weight = float(batch_weight)
        self.loss = loss
        self.register_buffer("embedding_memory", torch.zeros(memory_size, embedding_size))
        self.register_buffer("label_memory", torch.zeros(memory_size, dtype=torch.long))
        # [next slot, queue wrapped at least once (0/1), training calls so far]
        self.register_buffer("queue_state", torch.zeros(3, dtype=torch.long))

    def proxy_parameters(self) -> list[nn.Parameter]:
        return list(self.loss.proxy_parameters())

    def reset_queue(self) -> None:
        self.embedding_memory.zero_()
        self.label_memory.zero_()
        self.queue_state[:2] = 0

    def forward(
        self, embeddings: Tensor, labels: Tensor, indices_tuple: IndicesTuple | None = None
    ) -> Tensor:
        if indices_tuple is not None:
            raise LangDMLError("CrossBatchMemory: mined indices_tuple is not supported")
        if not self.training:
            return self.loss(embeddings, labels)
        calls = int(self.queue_state[2])
        self.queue_state[2] += 1
        if calls < self.start_iteration:
            return self.loss(embeddings, labels)
        return super().forward(embeddings, labels)

    def compute(self, x: Tensor, labels: Tensor, indices_tuple: IndicesTuple | None) -> Tensor:
        if x.shape[1] != self.embedding_size:
            raise LangDMLError(
                f"CrossBatchMemory: embeddings have dim {x.shape[1]}, "
                f"expected embedding_size={self.embedding_size}"
            )
        if x.shape[0] > self.memory_size:
            raise LangDMLError(
                f"CrossBatchMemory: batch of {x.shape[0]} exceeds memory_size={self.memory_size}"
            )
        slots = self._enqueue(x.detach(), labels)
        memory, memory_labels = self.memory()
        rows = torch.arange(x.shape[0], device=x.device)
        pos = labels[:, None] == memory_labels[None, :]
        neg = ~pos
        pos[rows, slots] = False  # no pair of a sample with its own copy
        s = constant_cosines(x, memory)
        value = RECT_LOSSES[rect_type(self.loss)](self.loss, s, pos, neg, labels)
        if self.batch_weight > 0:
            value = value + self.batch_weight * self.loss.compute(x, labels, None)
        return value

    def memory(self) -> tuple[Tensor, Tensor]:
        """The stored (embeddings, labels): the filled slots until the queue has wrapped."""
        head, wrapped = int(self.queue_state[0]), bool(self.queue_state[1])
        if wrapped:
            return self.embedding_memory, self.label_memory
        return self.embedding_memory[:head], self.label_memory[:head]

    def _enqueue(self, x: Tensor, labels: Tensor) -> Tensor:
        if self.embedding_memory.device != x.device or self.embedding_memory.dtype != x.dtype:
            # the memory follows the compute dtype (float64 input: float64 references)
            self.embedding_memory = self.embedding_memory.to(x.device, x.dtype)
            self.label_memory = self.label_memory.to(x.device)
        head = int(self.queue_state[0])
        slots = (head + torch.arange(x.shape[0], device=x.device)) % self.memory_size
        self.embedding_memory[slots] = x.to(self.embedding_memory.dtype)
        self.label_memory[slots] = labels
        new_head = (head + x.shape[0]) % self.memory_size
        if new_head <= head:
            self.queue_state[1] = 1
        self.queue_state[0] = new_head
        return slots
