"""pytorch-metric-learning's loss classes over langdml's losses.

Each class takes PML's constructor arguments (same names and defaults) and is called as PML's:
``loss(embeddings, labels, indices_tuple=None, ref_emb=None, ref_labels=None)``; it returns the
value in the embeddings' dtype (computed in float32 for float16 / bfloat16 / float32 input and
in float64 for float64 input). Every loss also takes ``embedding_regularizer=LpRegularizer(...)``
and ``embedding_reg_weight``; the class-weight losses take ``weight_regularizer`` /
``weight_reg_weight`` (``regularizers``). A ``distance=`` object is accepted only when it is the
distance the loss computes (its PML default; NPairsLoss also the unnormalised dot product), and
``reducer=`` objects are not supported: both raise one line naming what is not supported.

``ref_emb`` / ``ref_labels`` work where PML has them: TripletMarginLoss, ContrastiveLoss,
MultiSimilarityLoss, CircleLoss and MarginLoss (MarginLoss not with a mined tuple, nor with a
sampled ``triplets_per_anchor``); the others raise, as PML's do. ``CrossBatchMemory`` wraps those
five as PML's does.

The class-weight losses expose PML's ``W`` (embedding_size, num_classes) as a view of langdml's
``proxies`` (num_classes, embedding_size) transposed; SoftTripleLoss's is PML's ``fc``. Under
the same seed the weights start equal to PML's.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from langdml import losses as native
from langdml.errors import LangDMLError
from langdml.losses.base import MetricLoss

from ._base import COSINE, DOT, LP, LP_SQUARED, PMLCompatLoss, pml_options

_WEIGHT_REGS = ("LpRegularizer",)


def _setup(loss: PMLCompatLoss, kwargs: dict, distances: dict, weight_regs=()) -> dict:
    native_kwargs, regs = pml_options(type(loss).__name__, kwargs, distances, weight_regs)
    loss._regs = regs
    return native_kwargs


class TripletMarginLoss(PMLCompatLoss, native.TripletLoss):
    """PML's TripletMarginLoss (langdml ``TripletLoss``); ``swap`` and ``smooth_loss`` and a
    sampled ``triplets_per_anchor`` are not supported."""

    supports_ref = True
    rect_loss_type = native.TripletLoss  # CrossBatchMemory: the same kernel

    def __init__(
        self,
        margin: float = 0.05,
        swap: bool = False,
        smooth_loss: bool = False,
        triplets_per_anchor: Any = "all",
        **kwargs: Any,
    ) -> None:
        for name, value, default in (
            ("swap", swap, False),
            ("smooth_loss", smooth_loss, False),
            ("triplets_per_anchor", triplets_per_anchor, "all"),
        ):
            if value != default:
                raise LangDMLError(f"TripletMarginLoss: {name}={value!r} is not supported")
        native.TripletLoss.__init__(self, margin=margin)
        _setup(self, kwargs, {LP: {}})


class ContrastiveLoss(PMLCompatLoss, native.ContrastiveLoss):
    supports_ref = True
    rect_loss_type = native.ContrastiveLoss  # CrossBatchMemory: the same kernel

    def __init__(self, pos_margin: float = 0, neg_margin: float = 1, **kwargs: Any) -> None:
        native.ContrastiveLoss.__init__(self, pos_margin=pos_margin, neg_margin=neg_margin)
        _setup(self, kwargs, {LP: {}})


class MultiSimilarityLoss(PMLCompatLoss, native.MultiSimilarityLoss):
    supports_ref = True
    rect_loss_type = native.MultiSimilarityLoss  # CrossBatchMemory: the same kernel

    def __init__(self, alpha: float = 2, beta: float = 50, base: float = 0.5, **kwargs: Any):
        native.MultiSimilarityLoss.__init__(self, alpha=alpha, beta=beta, base=base)
        _setup(self, kwargs, {COSINE: {}})


class CircleLoss(PMLCompatLoss, native.CircleLoss):
    supports_ref = True
    rect_loss_type = native.CircleLoss  # CrossBatchMemory: the same kernel

    def __init__(self, m: float = 0.4, gamma: float = 80, **kwargs: Any) -> None:
        native.CircleLoss.__init__(self, m=m, gamma=gamma)
        _setup(self, kwargs, {COSINE: {}})


class MarginLoss(PMLCompatLoss, native.MarginLoss):
    supports_ref = True
    rect_loss_type = native.MarginLoss  # CrossBatchMemory: the same kernel

    def __init__(
        self,
        margin: float = 0.2,
        nu: float = 0,
        beta: float = 1.2,
        triplets_per_anchor: Any = "all",
        learn_beta: bool = False,
        num_classes: int | None = None,
        **kwargs: Any,
    ) -> None:
        native.MarginLoss.__init__(
            self,
            margin=margin,
            nu=nu,
            beta=beta,
            triplets_per_anchor=triplets_per_anchor,
            learn_beta=learn_beta,
            num_classes=num_classes,
        )
        _setup(self, kwargs, {LP: {}})


class NPairsLoss(PMLCompatLoss, native.NPairLoss):
    """PML's NPairsLoss (langdml ``NPairLoss``); ``distance=DotProductSimilarity(
    normalize_embeddings=False)`` gives the unnormalised inner products."""

    def __init__(self, **kwargs: Any) -> None:
        native.NPairLoss.__init__(self)
        opts = _setup(self, kwargs, {COSINE: {}, DOT: {"normalize_embeddings": False}})
        self.normalize_embeddings = opts.get("normalize_embeddings", True)


def _pml_weight_key(state_dict: dict, prefix: str, name: str) -> None:
    """A PML checkpoint stores the weights as ``name`` (embedding_size, rows): load them as our
    ``proxies`` (rows, embedding_size)."""
    if prefix + name in state_dict and prefix + "proxies" not in state_dict:
        state_dict[prefix + "proxies"] = state_dict.pop(prefix + name).T.contiguous()


class _ClassWeights:
    """PML's ``W`` (embedding_size, rows) as a view of ``proxies`` (rows, embedding_size); a
    PML state dict (key ``W``) loads into ``proxies``."""

    proxies: nn.Parameter

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        _pml_weight_key(state_dict, prefix, "W")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)  # type: ignore[misc]

    @property
    def W(self) -> Tensor:  # noqa: N802 (PML's name)
        return self.proxies.T

    @W.setter
    def W(self, value: Tensor) -> None:  # noqa: N802
        self.proxies.data.copy_(value.detach().T)


class ProxyNCALoss(PMLCompatLoss, native.ProxyNCALoss):
    """PML's ProxyNCALoss (its ``proxies`` are langdml's, same layout)."""

    def __init__(self, num_classes: int, embedding_size: int, softmax_scale: float = 1, **kwargs):
        native.ProxyNCALoss.__init__(self, num_classes, embedding_size, softmax_scale)
        _setup(self, kwargs, {LP_SQUARED: {}}, _WEIGHT_REGS)


class ProxyAnchorLoss(PMLCompatLoss, native.ProxyAnchorLoss):
    def __init__(
        self, num_classes: int, embedding_size: int, margin: float = 0.1, alpha: float = 32, **kw
    ) -> None:
        native.ProxyAnchorLoss.__init__(self, num_classes, embedding_size, margin, alpha)
        _setup(self, kw, {COSINE: {}}, _WEIGHT_REGS)


class ArcFaceLoss(_ClassWeights, PMLCompatLoss, native.ArcFaceLoss):
    def __init__(
        self, num_classes: int, embedding_size: int, margin: float = 28.6, scale: float = 64, **kw
    ) -> None:
        native.ArcFaceLoss.__init__(self, num_classes, embedding_size, margin, scale)
        _setup(self, kw, {COSINE: {}}, _WEIGHT_REGS)


class CosFaceLoss(_ClassWeights, PMLCompatLoss, native.CosFaceLoss):
    def __init__(
        self, num_classes: int, embedding_size: int, margin: float = 0.35, scale: float = 64, **kw
    ) -> None:
        native.CosFaceLoss.__init__(self, num_classes, embedding_size, margin, scale)
        _setup(self, kw, {COSINE: {}}, _WEIGHT_REGS)


class NormalizedSoftmaxLoss(_ClassWeights, PMLCompatLoss, native.NormalizedSoftmaxLoss):
    def __init__(
        self, num_classes: int, embedding_size: int, temperature: float = 0.05, **kw
    ) -> None:
        native.NormalizedSoftmaxLoss.__init__(self, num_classes, embedding_size, temperature)
        _setup(self, kw, {COSINE: {}}, _WEIGHT_REGS)


class SoftTripleLoss(PMLCompatLoss, native.SoftTripleLoss):
    """PML's SoftTripleLoss; its ``fc`` (embedding_size, num_classes · centers_per_class) is a
    view of ``proxies`` transposed; ``weight_regularizer=SparseCentersRegularizer(...)`` is
    PML's centre regulariser (``regularizers``)."""

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        centers_per_class: int = 10,
        la: float = 20,
        gamma: float = 0.1,
        margin: float = 0.01,
        **kwargs: Any,
    ) -> None:
        native.SoftTripleLoss.__init__(
            self, num_classes, embedding_size, centers_per_class, la, gamma, margin
        )
        _setup(self, kwargs, {COSINE: {}}, ("LpRegularizer", "SparseCentersRegularizer"))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        _pml_weight_key(state_dict, prefix, "fc")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def fc(self) -> Tensor:
        return self.proxies.T

    @fc.setter
    def fc(self, value: Tensor) -> None:
        self.proxies.data.copy_(value.detach().T)


class CrossBatchMemory(native.CrossBatchMemory):
    """PML's CrossBatchMemory(loss, embedding_size, memory_size=1024) around one of the five
    pair losses above (langdml ``CrossBatchMemory``): every call enqueues the batch and scores
    it against the memory, in train and eval mode alike (as PML); the value comes back in the
    embeddings' dtype. ``miner``, ``indices_tuple``, ``enqueue_mask`` and an inner loss with
    regularizers are not supported."""

    def __init__(
        self, loss: nn.Module, embedding_size: int, memory_size: int = 1024, miner: Any = None
    ) -> None:
        if miner is not None:
            raise LangDMLError("CrossBatchMemory: miner= is not supported")
        regs = getattr(loss, "_regs", {})
        if any(reg is not None for reg, _ in regs.values()):
            raise LangDMLError("CrossBatchMemory: an inner loss with regularizers is not supported")
        super().__init__(loss, embedding_size, memory_size)

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor,
        indices_tuple: tuple[Tensor, ...] | None = None,
        enqueue_mask: Tensor | None = None,
    ) -> Tensor:
        if indices_tuple is not None or enqueue_mask is not None:
            raise LangDMLError("CrossBatchMemory: indices_tuple and enqueue_mask are not supported")
        return MetricLoss.forward(self, embeddings, labels).to(embeddings.dtype)


__all__ = [
    "ArcFaceLoss",
    "CircleLoss",
    "ContrastiveLoss",
    "CosFaceLoss",
    "CrossBatchMemory",
    "MarginLoss",
    "MultiSimilarityLoss",
    "NPairsLoss",
    "NormalizedSoftmaxLoss",
    "ProxyAnchorLoss",
    "ProxyNCALoss",
    "SoftTripleLoss",
    "TripletMarginLoss",
]
