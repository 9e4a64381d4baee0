"""The one table of loss-library names: every base loss, miner and regularizer by the name a
config gives it, what kind it is and which regularizer forms apply to it.

Torch-free (classes are named, not imported), so the config validates against it and the CLI
lists it without loading torch. Adding a loss is its module plus one row here; adding a
regularizer is its module, its builder and one row in ``REGULARIZERS``.

One vocabulary for where a regularizer looks: ``batch`` (the batch's samples), ``proxy`` (the
base loss's proxies) and, for the direction regularizer, ``auto`` (proxy when the base loss has
proxies). The older spellings ``pairs`` / ``proxies`` map onto it with a deprecation message.
"""

from __future__ import annotations

import importlib
import warnings
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["pair", "proxy", "text_proxy"]


@dataclass(frozen=True)
class LossEntry:
    """One base loss: ``target`` is ``module:Class`` inside :mod:`langdml.losses`; ``kind`` is
    ``pair`` (built from its arguments alone; takes ``miner`` and ``xbm``), ``proxy`` (trainable
    proxies / class weights: built with num_classes and embedding_size) or ``text_proxy``
    (proxies projected from class-name embeddings: built with those as well); ``direction`` is
    the class of its integrated direction-regularized form, when it has one."""

    target: str
    kind: Kind
    direction: str | None = None

    def load(self) -> type:
        return load(self.target)


def load(target: str) -> Any:
    """The object a ``module:name`` target of this table names (imports its module)."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(f"langdml.losses.{module}"), name)


LOSSES: dict[str, LossEntry] = {
    "contrastive": LossEntry("contrastive:ContrastiveLoss", "pair"),
    "triplet": LossEntry("triplet:TripletLoss", "pair", "dr_losses:DRTripletLoss"),
    "npair": LossEntry("npair:NPairLoss", "pair"),
    "multi_similarity": LossEntry(
        "multi_similarity:MultiSimilarityLoss", "pair", "dr_losses:DRMultiSimilarityLoss"
    ),
    "margin": LossEntry("margin:MarginLoss", "pair"),
    "circle": LossEntry("circle:CircleLoss", "pair"),
    "proxy_nca": LossEntry("proxy_nca:ProxyNCALoss", "proxy", "dr_losses:DRProxyNCALoss"),
    "proxy_anchor": LossEntry("proxy_anchor:ProxyAnchorLoss", "proxy"),
    "proxy_gml": LossEntry("proxy_gml:ProxyGMLLoss", "proxy"),
    "proxy_nca_pp": LossEntry("proxy_nca_pp:ProxyNCAPlusPlusLoss", "proxy"),
    "arcface": LossEntry("arcface:ArcFaceLoss", "proxy"),
    "cosface": LossEntry("arcface:CosFaceLoss", "proxy"),
    "normalized_softmax": LossEntry("normalized_softmax:NormalizedSoftmaxLoss", "proxy"),
    "soft_triple": LossEntry("soft_triple:SoftTripleLoss", "proxy"),
    "text_proxy_anchor": LossEntry("text_proxies:TextProxyAnchorLoss", "text_proxy"),
    "text_proxy_nca": LossEntry("text_proxies:TextProxyNCALoss", "text_proxy"),
}

MINERS: dict[str, str] = {
    "all_triplets": "miners:AllTripletsMiner",
    "semihard": "miners:SemiHardMiner",
    "hard": "miners:BatchHardMiner",
    "batch_hard": "miners:BatchHardMiner",
    "distance_weighted": "miners:DistanceWeightedMiner",
    "multi_similarity": "miners:MultiSimilarityMiner",
    "triplet_margin": "miners:TripletMarginMiner",
}


@dataclass(frozen=True)
class RegularizerEntry:
    """One regularizer: ``section`` is the ``loss.<section>`` config block holding its settings
    (its own pydantic model), ``builder`` the ``module:function`` in :mod:`langdml.losses` that
    turns (base module, its settings block, build context) into (base, module, weight) — a
    builder may replace the base (the integrated direction form does) —, ``needs_text``
    whether it needs class-name embeddings."""

    section: str
    builder: str
    needs_text: bool = False

    def load_builder(self) -> Any:
        return load(self.builder)


REGULARIZERS: dict[str, RegularizerEntry] = {
    "language": RegularizerEntry("language", "build:language_term", needs_text=True),
    "direction": RegularizerEntry("direction", "build:direction_term"),
}

MODES = ("batch", "proxy")
_OLD_MODES = {"pairs": "batch", "proxies": "proxy"}

# Views of the table for callers that need one kind (all derived, never listed twice).
TEXT_PROXY_BASES = tuple(n for n, e in LOSSES.items() if e.kind == "text_proxy")
DR_BASES = tuple(n for n, e in LOSSES.items() if e.direction is not None)


def base_names() -> list[str]:
    """Every accepted base-loss spelling, for messages."""
    return [*LOSSES, "pml:<ClassName>"]


def check_base(name: str) -> None:
    """One line naming the bad base-loss name and the accepted ones."""
    if name in LOSSES or (name.startswith("pml:") and len(name) > 4):
        return
    raise ValueError(f"unknown base loss {name!r}; expected one of {base_names()}")


def check_regularizer(name: str) -> None:
    if name not in REGULARIZERS:
        raise ValueError(f"unknown regularizer {name!r}; expected {' / '.join(REGULARIZERS)}")


def check_direction_form(base: str, form: str) -> None:
    """The integrated direction form exists only for the bases with a DR class."""
    if form == "integrated" and base not in DR_BASES:
        raise ValueError(
            f"regularizer 'direction' (form 'integrated') exists only for bases "
            f"{list(DR_BASES)}, not {base!r}; use form 'orthogonal' (our additive penalty) "
            "with other bases"
        )


def canonical_mode(mode: str, who: str) -> str:
    """``mode`` in the one vocabulary; an old spelling is mapped with a one-line warning."""
    if mode in _OLD_MODES:
        new = _OLD_MODES[mode]
        warnings.warn(
            f"{who}: mode {mode!r} is deprecated, use {new!r}", DeprecationWarning, stacklevel=3
        )
        return new
    return mode
