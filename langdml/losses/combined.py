"""CombinedLoss = base loss + Σ weight × regularizer, and build_loss(config_dict)."""

from __future__ import annotations

import copy
import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from langdml._extras import require
from langdml.errors import ConfigError, LangDMLError

from ._common import as_fp32, check_batch, fp32_region
from .arcface import ArcFaceLoss, CosFaceLoss
from .circle import CircleLoss
from .contrastive import ContrastiveLoss
from .direction import REPRODUCTION_REMOVED, DirectionRegularizer
from .dr_losses import DR_BASES, IntegratedDirectionLog, to_integrated_direction
from .language import LanguageGuidanceLoss
from .margin import MarginLoss
from .miners import (
    AllTripletsMiner,
    BatchHardMiner,
    DistanceWeightedMiner,
    MultiSimilarityMiner,
    SemiHardMiner,
)
from .multi_similarity import MultiSimilarityLoss
from .normalized_softmax import NormalizedSoftmaxLoss
from .npair import NPairLoss
from .proxy_anchor import ProxyAnchorLoss
from .proxy_gml import ProxyGMLLoss
from .proxy_nca import ProxyNCALoss
from .proxy_nca_pp import ProxyNCAPlusPlusLoss
from .soft_triple import SoftTripleLoss
from .text_proxies import TEXT_PROXY_LOSSES, TextProjection
from .triplet import TripletLoss
from .vocab import REGULARIZERS
from .xbm import CrossBatchMemory

PAIR_LOSSES: dict[str, type[nn.Module]] = {
    "contrastive": ContrastiveLoss,
    "triplet": TripletLoss,
    "npair": NPairLoss,
    "multi_similarity": MultiSimilarityLoss,
    "margin": MarginLoss,
    "circle": CircleLoss,
}
# Losses with trainable class weights / proxies: built with num_classes and embedding_size.
PROXY_LOSSES: dict[str, type[nn.Module]] = {
    "proxy_nca": ProxyNCALoss,
    "proxy_anchor": ProxyAnchorLoss,
    "proxy_gml": ProxyGMLLoss,
    "proxy_nca_pp": ProxyNCAPlusPlusLoss,
    "arcface": ArcFaceLoss,
    "cosface": CosFaceLoss,
    "normalized_softmax": NormalizedSoftmaxLoss,
    "soft_triple": SoftTripleLoss,
}
MINERS: dict[str, type[nn.Module]] = {
    "all_triplets": AllTripletsMiner,
    "semihard": SemiHardMiner,
    "hard": BatchHardMiner,
    "batch_hard": BatchHardMiner,
    "distance_weighted": DistanceWeightedMiner,
    "multi_similarity": MultiSimilarityMiner,
}
# Every base loss by the name a config gives it. Text-proxy losses are proxy losses whose proxies
# are projected class-name embeddings: they are built with class_text_embeddings as well.
BASE_LOSSES: dict[str, type[nn.Module]] = {**PAIR_LOSSES, **PROXY_LOSSES, **TEXT_PROXY_LOSSES}


class PMLLossAdapter(nn.Module):
    """A pytorch-metric-learning loss behind our interface (validation, fp32, proxies). With a
    ``miner`` (a PML miner or one of ours) the loss gets the mined indices_tuple on every call."""

    def __init__(self, loss: nn.Module, miner: nn.Module | None = None) -> None:
        super().__init__()
        self.loss = loss
        self.miner = miner

    @property
    def proxies(self) -> nn.Parameter | None:
        return getattr(self.loss, "proxies", None)

    @property
    def proxy_labels(self) -> Tensor | None:
        proxies = self.proxies
        return None if proxies is None else torch.arange(proxies.shape[0], device=proxies.device)

    def forward(
        self, embeddings: Tensor, labels: Tensor, indices_tuple: tuple[Tensor, ...] | None = None
    ) -> Tensor:
        check_batch(embeddings, labels, type(self.loss).__name__)
        with fp32_region(embeddings):
            x, y = as_fp32(embeddings), labels.to(embeddings.device).long()
            if indices_tuple is None and self.miner is not None:
                indices_tuple = self.miner(x, y)
            if indices_tuple is None:
                return self.loss(x, y)
            return self.loss(x, y, indices_tuple)

    def proxy_parameters(self) -> list[nn.Parameter]:
        return [self.proxies] if self.proxies is not None else []


class CombinedLoss(nn.Module):
    """L = base(embeddings, labels) + Σ_k weight_k · regularizer_k(embeddings, labels[, proxies]).

    After each call ``last_terms`` holds the detached value of every term ("base", one key per
    regularizer, "total") as floats for logging (a weight-0 regularizer is still evaluated and
    logged, without gradient). ``proxy_parameters()`` returns the base loss's
    proxies (empty for pair losses) so a trainer can give them their own learning rate.
    """

    def __init__(
        self,
        base: nn.Module,
        regularizers: list[tuple[str, float, nn.Module]] | None = None,
    ) -> None:
        super().__init__()
        self.base = base
        regularizers = regularizers or []
        self.regularizer_names = [name for name, _, _ in regularizers]
        self.weights = [float(w) for _, w, _ in regularizers]
        self.regularizers = nn.ModuleList([module for _, _, module in regularizers])
        self._last: dict[str, Tensor] = {}

    @property
    def proxies(self) -> nn.Parameter | None:
        return getattr(self.base, "proxies", None)

    def proxy_parameters(self) -> list[nn.Parameter]:
        getter = getattr(self.base, "proxy_parameters", None)
        return list(getter()) if getter is not None else []

    @staticmethod
    def base_state_dict(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The base loss's part of a CombinedLoss ``state_dict()``."""
        return {k[len("base.") :]: v for k, v in state.items() if k.startswith("base.")}

    def text_projection(self) -> TextProjection | None:
        """The base loss's text → proxy projection (text-proxy bases), else None."""
        getter = getattr(self.base, "text_projection", None)
        return getter() if getter is not None else None

    @property
    def last_terms(self) -> dict[str, float]:
        return {k: float(v) for k, v in self._last.items()}

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        total = self.base(embeddings, labels)
        terms = {"base": total.detach()}
        proxies = self.proxies
        proxy_labels = getattr(self.base, "proxy_labels", None)
        for name, weight, reg in zip(
            self.regularizer_names, self.weights, self.regularizers, strict=True
        ):
            if weight == 0.0:  # still logged (a control arm), but no graph is kept for it
                with torch.no_grad():
                    terms[name] = reg(
                        embeddings, labels, proxies=proxies, proxy_labels=proxy_labels
                    )
                continue
            value = reg(embeddings, labels, proxies=proxies, proxy_labels=proxy_labels)
            terms[name] = value.detach()
            total = total + weight * value
        terms["total"] = total.detach()
        self._last = terms
        return total


def _split(entry: Any, where: str) -> tuple[str, dict[str, Any]]:
    if isinstance(entry, str):
        return entry, {}
    if not isinstance(entry, Mapping) or "name" not in entry:
        raise ConfigError(f"{where}: expected a name or a mapping with a 'name' key, got {entry!r}")
    kwargs = {k: v for k, v in entry.items() if k != "name"}
    return str(entry["name"]), kwargs


def _construct(factory: Callable[..., nn.Module], kwargs: dict[str, Any], where: str) -> nn.Module:
    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where}: bad arguments {sorted(kwargs)} ({exc})") from None
    try:
        return factory(**kwargs)
    except LangDMLError as exc:
        raise ConfigError(f"{where}: {exc}") from None


# Where a nested "pml:" object is looked up, by the argument it is given for.
_PML_MODULES = ("losses", "miners", "distances", "reducers", "regularizers")
_PML_MODULE_OF_KEY = {"miner": "miners", "distance": "distances", "reducer": "reducers"}


def _is_pml_entry(value: Any) -> bool:
    name = value.get("name") if isinstance(value, Mapping) else value
    return isinstance(name, str) and name.startswith("pml:")


def _pml_class(class_name: str, modules: tuple[str, ...], where: str) -> type:
    import importlib

    require("pytorch_metric_learning", "pml", where)
    found = [importlib.import_module(f"pytorch_metric_learning.{m}") for m in modules]
    for module in found:
        cls = getattr(module, class_name, None)
        if isinstance(cls, type) and issubclass(cls, nn.Module):
            return cls
    places = " / ".join(f"pytorch_metric_learning.{m}" for m in modules)
    kind = modules[0].removesuffix("es" if modules[0] == "losses" else "s")
    kind = kind if len(modules) == 1 else "class"
    raise ConfigError(f"{where}: no such {kind} {class_name!r} in {places}")


def _pml_kwargs(kwargs: dict[str, Any], where: str) -> dict[str, Any]:
    """Build nested {name: "pml:Class", ...} arguments (a distance, reducer, miner, loss,
    regularizer) into PML objects, recursively; other values pass through."""
    out = {}
    for key, value in kwargs.items():
        if not _is_pml_entry(value):
            out[key] = value
            continue
        if key in _PML_MODULE_OF_KEY:
            modules: tuple[str, ...] = (_PML_MODULE_OF_KEY[key],)
        elif key.endswith("regularizer"):
            modules = ("regularizers",)
        elif key == "loss":
            modules = ("losses",)
        else:
            modules = _PML_MODULES
        out[key] = _build_pml_object(value, modules, f"{where} {key}")
    return out


def _build_pml_object(entry: Any, modules: tuple[str, ...], where: str) -> nn.Module:
    name, kwargs = _split(entry, where)
    where = f"{where} '{name}'"
    cls = _pml_class(name[4:], modules, where)
    return _construct_pml(cls, _pml_kwargs(kwargs, where), where)


def _construct_pml(cls: type, kwargs: dict[str, Any], where: str) -> nn.Module:
    """PML classes take **kwargs, so a misspelt argument fails inside the constructor."""
    try:
        return _construct(cls, kwargs, where)
    except TypeError as exc:
        raise ConfigError(f"{where}: bad arguments {sorted(kwargs)} ({exc})") from None


def _build_pml(class_name: str, kwargs: dict[str, Any], num_classes, embedding_size) -> nn.Module:
    """base "pml:ClassName": a PML loss; nested {name: "pml:…"} arguments (distance, reducer,
    regularizers, an inner loss) become PML objects, and ``miner`` — a PML miner
    ({name: "pml:MultiSimilarityMiner", …}) or one of ours — mines every call's pairs."""
    where = f"base 'pml:{class_name}'"
    cls = _pml_class(class_name, ("losses",), where)
    params = inspect.signature(cls.__init__).parameters
    for key, value in (("num_classes", num_classes), ("embedding_size", embedding_size)):
        if key in params and key not in kwargs:
            if value is None:
                raise ConfigError(f"base 'pml:{class_name}' needs {key}= from the builder")
            kwargs[key] = value
    miner_entry = kwargs.pop("miner", None)
    miner = None
    if miner_entry is not None:
        if _is_pml_entry(miner_entry):
            miner = _build_pml_object(miner_entry, ("miners",), f"{where} miner")
        else:
            miner = build_miner(miner_entry)
    loss = _construct_pml(cls, _pml_kwargs(kwargs, where), where)
    return PMLLossAdapter(loss, miner)


def _wrap_xbm(loss: nn.Module, entry: Any, name: str, embedding_size: int | None) -> nn.Module:
    """base {name: <pair loss>, xbm: {memory_size: …, start_iteration: …, batch_weight: …}}
    (or ``xbm: true`` for the defaults): the loss inside a CrossBatchMemory."""
    where = f"base '{name}' xbm"
    if entry is True:
        entry = {}
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where}: expected a mapping of CrossBatchMemory arguments or true")
    kwargs = dict(entry)
    if "embedding_size" not in kwargs:
        if embedding_size is None:
            raise ConfigError(f"{where} needs embedding_size=; pass it to build_loss")
        kwargs["embedding_size"] = embedding_size
    return _construct(functools.partial(CrossBatchMemory, loss), kwargs, where)


def build_base(
    entry: Any,
    num_classes: int | None = None,
    embedding_size: int | None = None,
    class_text_embeddings: Tensor | None = None,
) -> nn.Module:
    """The base loss of a config entry: a name or {name: …, <constructor arguments>}.

    Pair losses (PAIR_LOSSES) take ``miner`` (a miner entry) and ``xbm`` (a mapping of
    CrossBatchMemory arguments — memory_size, start_iteration, batch_weight — or true): the
    loss is then wrapped in a cross-batch memory of embedding_size-wide entries. MarginLoss's
    ``num_classes: auto`` means one β per class of the builder's num_classes. Proxy and
    class-weight losses (PROXY_LOSSES) get num_classes / embedding_size from the builder.
    "pml:ClassName" builds a pytorch-metric-learning loss; nested {name: "pml:…"} arguments
    (distance, reducer, miner, …) become PML objects (see _build_pml).
    """
    name, kwargs = _split(entry, "base")
    xbm = kwargs.pop("xbm", None)
    if xbm not in (None, False) and name not in PAIR_LOSSES:
        raise ConfigError(f"base '{name}': xbm wraps the pair losses {sorted(PAIR_LOSSES)} only")
    if name in TEXT_PROXY_LOSSES:
        # Language as proxies: proxies projected from class-name embeddings.
        if class_text_embeddings is None:
            raise ConfigError(f"base '{name}' needs class_text_embeddings (precompute them first)")
        kwargs.setdefault("num_classes", num_classes)
        kwargs.setdefault("embedding_size", embedding_size)
        cls = TEXT_PROXY_LOSSES[name]
        return _construct(lambda **kw: cls(class_text_embeddings, **kw), kwargs, f"base '{name}'")
    if name.startswith("pml:"):
        return _build_pml(name[4:], kwargs, num_classes, embedding_size)
    if name in PAIR_LOSSES:
        if "miner" in kwargs and kwargs["miner"] is not None:
            kwargs["miner"] = build_miner(kwargs["miner"])
        if kwargs.get("num_classes") == "auto":  # MarginLoss: one β per class
            if num_classes is None:
                raise ConfigError(f"base '{name}' num_classes='auto' needs num_classes=")
            kwargs["num_classes"] = num_classes
        loss = _construct(PAIR_LOSSES[name], kwargs, f"base '{name}'")
        return loss if xbm in (None, False) else _wrap_xbm(loss, xbm, name, embedding_size)
    if name in PROXY_LOSSES:
        for key, value in (("num_classes", num_classes), ("embedding_size", embedding_size)):
            if key not in kwargs:
                if value is None:
                    raise ConfigError(f"base '{name}' needs {key}=; pass it to build_loss")
                kwargs[key] = value
        return _construct(PROXY_LOSSES[name], kwargs, f"base '{name}'")
    choices = sorted(PAIR_LOSSES) + sorted(PROXY_LOSSES) + list(TEXT_PROXY_LOSSES)
    choices += ["pml:<ClassName>"]
    raise ConfigError(f"unknown base loss {name!r}; expected one of {choices}")


def build_miner(entry: Any) -> nn.Module:
    if isinstance(entry, nn.Module):
        return entry
    name, kwargs = _split(entry, "miner")
    if name not in MINERS:
        raise ConfigError(f"unknown miner {name!r}; expected one of {sorted(MINERS)}")
    return _construct(MINERS[name], kwargs, f"miner '{name}'")


def _direction(
    entry: Any, base: nn.Module, weight: float, kwargs: dict[str, Any]
) -> tuple[nn.Module, nn.Module, float]:
    """(base, regularizer module, weight) for a "direction" entry; form "integrated" replaces
    the base by its DR form with γ = weight and logs its cos θ through a weight-0 module."""
    form = kwargs.get("form", "integrated")
    if form == "reproduction":
        raise ConfigError(f"regularizer 'direction': {REPRODUCTION_REMOVED}")
    if form == "orthogonal":
        return base, _construct(DirectionRegularizer, kwargs, "regularizer 'direction'"), weight
    if form != "integrated":
        raise ConfigError(
            "regularizer 'direction': form must be one of ['integrated', 'orthogonal'], "
            f"got {form!r}"
        )
    where = "regularizer 'direction' (form 'integrated')"
    name, _ = _split(entry, "base")
    if name not in DR_BASES:
        raise ConfigError(
            f"{where} exists only for bases {list(DR_BASES)}, not {name!r}; "
            "use form 'orthogonal' (our additive penalty) with other bases"
        )
    extra = sorted(set(kwargs) - {"form"})
    if extra:
        raise ConfigError(f"{where} takes only 'weight' (= γ), got {extra}")
    if getattr(base, "gamma", None) is not None:
        raise ConfigError(f"{where} given twice; list one direction entry")
    dr_base = to_integrated_direction(base, weight)
    return dr_base, IntegratedDirectionLog(dr_base), 0.0


def build_loss(
    config: Mapping[str, Any],
    num_classes: int | None = None,
    embedding_size: int | None = None,
    class_text_embeddings: Tensor | None = None,
) -> CombinedLoss:
    """Build a CombinedLoss from a plain dict.

    ``{"base": {"name": "multi_similarity", "alpha": 2, ...} | "triplet",
       "regularizers": [{"name": "language", "weight": 5.0, ...},
                        {"name": "direction", "weight": 0.3}]}``
    Proxy losses get num_classes / embedding_size from the arguments; "language" gets
    ``class_text_embeddings`` ((C, d) or (C, k, d), one row per class).

    "direction" with form "integrated" (the default) swaps a triplet / proxy_nca /
    multi_similarity base for its DR form (DRTripletLoss, ...) with γ = weight, adding no term;
    its "direction" log entry (weight 0) is the mean cos θ the γ multiplies. Form "orthogonal"
    adds our DirectionRegularizer penalty to any base.
    """
    if not isinstance(config, Mapping):
        raise ConfigError(f"loss config must be a mapping, got {type(config).__name__}")
    unknown = set(config) - {"base", "regularizers"}
    if unknown:
        raise ConfigError(
            f"loss config: unknown keys {sorted(unknown)}; expected 'base', 'regularizers'"
        )
    if "base" not in config:
        raise ConfigError("loss config: missing 'base' (e.g. {'name': 'multi_similarity'})")
    config = copy.deepcopy(dict(config))
    base = build_base(config["base"], num_classes, embedding_size, class_text_embeddings)
    regs: list[tuple[str, float, nn.Module]] = []
    entries = config.get("regularizers") or []
    if not isinstance(entries, (list, tuple)):
        raise ConfigError(f"loss config: 'regularizers' must be a list, got {entries!r}")
    for entry in entries:
        name, kwargs = _split(entry, "regularizer")
        weight = kwargs.pop("weight", 1.0)
        if not isinstance(weight, (int, float)) or isinstance(weight, bool):
            raise ConfigError(f"regularizer '{name}': weight must be a number, got {weight!r}")
        if name == "language":
            if class_text_embeddings is None:
                raise ConfigError(
                    "regularizer 'language' needs class_text_embeddings (precompute them first)"
                )
            kwargs.setdefault("num_classes", num_classes)
            module = _construct(
                lambda **kw: LanguageGuidanceLoss(class_text_embeddings, **kw),
                kwargs,
                "regularizer 'language'",
            )
        elif name == "direction":
            base, module, weight = _direction(config["base"], base, float(weight), kwargs)
        else:
            raise ConfigError(f"unknown regularizer {name!r}; expected one of {list(REGULARIZERS)}")
        taken = {n for n, _, _ in regs}
        key = name if name not in taken else f"{name}_{len(regs) + 1}"
        regs.append((key, float(weight), module))
    return CombinedLoss(base, regs)
