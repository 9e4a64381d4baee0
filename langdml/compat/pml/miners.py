"""pytorch-metric-learning's miner classes over langdml's miners.

Called as PML's: ``miner(embeddings, labels, ref_emb=None, ref_labels=None)`` returns the
(a, p, n) or (a1, p, a2, n) index tuple; distances are computed from direct differences in the
input's dtype (``langdml.losses.miners``). Only the distance each miner computes is accepted
as ``distance=`` (PML's default for it); other distances raise one line.
"""

from __future__ import annotations

from typing import Any

import torch

from langdml.errors import LangDMLError
from langdml.losses import miners as native

from ._base import COSINE, LP
from .distances import describe, distance_key


def _check(who: str, kwargs: dict[str, Any], default: tuple) -> None:
    kwargs = dict(kwargs)
    distance = kwargs.pop("distance", None)
    if distance is not None and distance_key(distance) != default:
        raise LangDMLError(
            f"{who}: distance={describe(distance_key(distance))} is not supported; this miner "
            f"computes {describe(default)}"
        )
    if kwargs.pop("collect_stats", False):
        raise LangDMLError(f"{who}: collect_stats=True is not supported (no recorded stats)")
    if kwargs:
        raise LangDMLError(f"{who}: argument(s) {sorted(kwargs)} not supported")


class TripletMarginMiner(native.TripletMarginMiner):
    """type_of_triplets "all", "hard", "semihard" or "easy", by t = d_an - d_ap."""

    def __init__(self, margin: float = 0.2, type_of_triplets: str = "all", **kwargs: Any):
        super().__init__(margin, type_of_triplets)
        _check(type(self).__name__, kwargs, LP)


class MultiSimilarityMiner(native.MultiSimilarityMiner):
    def __init__(self, epsilon: float = 0.1, **kwargs: Any) -> None:
        super().__init__(epsilon)
        _check(type(self).__name__, kwargs, COSINE)


class BatchHardMiner(native.BatchHardMiner):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        _check(type(self).__name__, kwargs, LP)


class DistanceWeightedMiner(native.DistanceWeightedMiner):
    """PML's DistanceWeightedMiner: an anchor with no negative within ``nonzero_loss_cutoff``
    gets no triplets (``fallback="none"``, PML's behaviour; langdml's own default elsewhere is
    "negatives"). ``generator`` (ours) seeds the draws; PML's draws use other random calls, so
    the sampled triplets differ from PML's while following the same distribution."""

    def __init__(
        self,
        cutoff: float = 0.5,
        nonzero_loss_cutoff: float = 1.4,
        fallback: str = "none",
        generator: torch.Generator | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(cutoff, nonzero_loss_cutoff, generator=generator, fallback=fallback)
        _check(type(self).__name__, kwargs, LP)


__all__ = ["BatchHardMiner", "DistanceWeightedMiner", "MultiSimilarityMiner", "TripletMarginMiner"]
