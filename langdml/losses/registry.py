"""The one table of loss-library names: every base loss, miner and regularizer by the name a
config gives it, what kind it is and which regularizer forms apply to it.

Torch-free (classes are named as ``module:Class`` strings, not imported), so the config validates
against it and the CLI lists it without loading torch. A ``module`` without a dot is a module of
:mod:`langdml.losses`; a dotted one is an absolute import path (a loss or regularizer of your own
package).

Adding a base loss: its module (the nn.Module) and one row in ``LOSSES``. Adding a regularizer:
its module and one row in ``REGULARIZERS``. Its module is a torch-free settings module holding a
:class:`~langdml.losses.regularizer.RegularizerSettings` subclass — the fields of its
``loss.<name>`` config block (each with a description), ``check_base`` and ``build``, which
imports the term's nn.Module only when it builds. The ``loss:`` schema
(:class:`langdml.losses.spec.LossConfig`) gets one block per row when it is first imported, with
its typed validation, defaults and descriptions (the generated config reference lists it), and
``build_loss`` calls the row's ``build``; nothing else names a regularizer. A row added from
outside the package must be in ``REGULARIZERS`` before :mod:`langdml.losses.spec` is imported.

One vocabulary for where a regularizer looks: ``batch`` (the batch's samples), ``proxy`` (the
base loss's proxies) and, for the direction regularizer, ``auto`` (proxy when the base loss has
proxies). The older spellings ``pairs`` / ``proxies`` map onto it with a deprecation message.
"""

from __future__ import annotations

import importlib
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from .regularizer import RegularizerSettings

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
    """The object a ``module:name`` target of this table names (imports its module): a module
    of :mod:`langdml.losses`, or an absolute module path when ``module`` has a dot."""
    module, _, name = target.partition(":")
    path = module if "." in module else f"langdml.losses.{module}"
    return getattr(importlib.import_module(path), name)


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
    """One regularizer, whose config block is ``loss.<its name>``: ``settings`` is the
    ``module:Class`` of its torch-free settings model (a
    :class:`~langdml.losses.regularizer.RegularizerSettings`: the block's fields and the
    builder); ``needs_text`` whether it needs class-name embeddings (runs then precompute them)."""

    settings: str
    needs_text: bool = False

    def load_settings(self) -> type[RegularizerSettings]:
        return load(self.settings)


REGULARIZERS: dict[str, RegularizerEntry] = {
    "language": RegularizerEntry("language_settings:LanguageConfig", needs_text=True),
    "direction": RegularizerEntry("direction_settings:DirectionConfig"),
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


def needs_text(regularizers: list[str]) -> bool:
    """Whether any of these regularizers needs class-name embeddings."""
    return any(REGULARIZERS[n].needs_text for n in regularizers)


def canonical_mode(mode: str, who: str) -> str:
    """``mode`` in the one vocabulary; an old spelling is mapped with a one-line warning."""
    if mode in _OLD_MODES:
        new = _OLD_MODES[mode]
        warnings.warn(
            f"{who}: mode {mode!r} is deprecated, use {new!r}", DeprecationWarning, stacklevel=3
        )
        return new
    return mode
