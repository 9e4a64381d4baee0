"""CombinedLoss = base loss + Σ weight × regularizer, and build_loss(config_dict)."""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from langdml.errors import ConfigError, LangDMLError

from ._common import as_fp32, check_batch, fp32_region
from .contrastive import ContrastiveLoss
from .direction import REPRODUCTION_REMOVED, DirectionRegularizer
from .dr_losses import DR_BASES, IntegratedDirectionLog, to_integrated_direction
from .language import LanguageGuidanceLoss
from .miners import (
    AllTripletsMiner,
    BatchHardMiner,
    DistanceWeightedMiner,
    MultiSimilarityMiner,
    SemiHardMiner,
)
from .multi_similarity import MultiSimilarityLoss
from .npair import NPairLoss
from .proxy_anchor import ProxyAnchorLoss
from .proxy_gml import ProxyGMLLoss
from .proxy_nca import ProxyNCALoss
from .triplet import TripletLoss

PAIR_LOSSES: dict[str, type[nn.Module]] = {
    "contrastive": ContrastiveLoss,
    "triplet": TripletLoss,
    "npair": NPairLoss,
    "multi_similarity": MultiSimilarityLoss,
}
PROXY_LOSSES: dict[str, type[nn.Module]] = {
    "proxy_nca": ProxyNCALoss,
    "proxy_anchor": ProxyAnchorLoss,
    "proxy_gml": ProxyGMLLoss,
}
MINERS: dict[str, type[nn.Module]] = {
    "all_triplets": AllTripletsMiner,
    "semihard": SemiHardMiner,
    "hard": BatchHardMiner,
    "batch_hard": BatchHardMiner,
    "distance_weighted": DistanceWeightedMiner,
    "multi_similarity": MultiSimilarityMiner,
}
REGULARIZERS = ("language", "direction")


class PMLLossAdapter(nn.Module):
    """A pytorch-metric-learning loss behind our interface (validation, fp32, proxies)."""

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        self.loss = loss

    @property
    def proxies(self) -> nn.Parameter | None:
        return getattr(self.loss, "proxies", None)

    @property
    def proxy_labels(self) -> Tensor | None:
        proxies = self.proxies
        return None if proxies is None else torch.arange(proxies.shape[0], device=proxies.device)

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        check_batch(embeddings, labels, type(self.loss).__name__)
        with fp32_region(embeddings):
            return self.loss(as_fp32(embeddings), labels.to(embeddings.device).long())

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


def _build_pml(class_name: str, kwargs: dict[str, Any], num_classes, embedding_size) -> nn.Module:
    try:
        from pytorch_metric_learning import losses as pml_losses
    except ImportError:
        raise ConfigError(
            f"base 'pml:{class_name}' needs pytorch-metric-learning, which is not installed"
        ) from None
    cls = getattr(pml_losses, class_name, None)
    if not isinstance(cls, type) or not issubclass(cls, nn.Module):
        raise ConfigError(
            f"base 'pml:{class_name}': no such loss in pytorch_metric_learning.losses"
        )
    params = inspect.signature(cls.__init__).parameters
    for key, value in (("num_classes", num_classes), ("embedding_size", embedding_size)):
        if key in params and key not in kwargs:
            if value is None:
                raise ConfigError(f"base 'pml:{class_name}' needs {key}= from the builder")
            kwargs[key] = value
    return PMLLossAdapter(_construct(cls, kwargs, f"base 'pml:{class_name}'"))


def build_base(
    entry: Any,
    num_classes: int | None = None,
    embedding_size: int | None = None,
    class_text_embeddings: Tensor | None = None,
) -> nn.Module:
    name, kwargs = _split(entry, "base")
    if name.startswith("text_proxy_"):
        # Language as proxies: proxies projected from class-name embeddings (langdml.xmodal).
        from langdml.xmodal.text_proxies import TEXT_PROXY_LOSSES

        if name not in TEXT_PROXY_LOSSES:
            raise ConfigError(
                f"unknown base loss {name!r}; expected one of {sorted(TEXT_PROXY_LOSSES)}"
            )
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
        return _construct(PAIR_LOSSES[name], kwargs, f"base '{name}'")
    if name in PROXY_LOSSES:
        for key, value in (("num_classes", num_classes), ("embedding_size", embedding_size)):
            if key not in kwargs:
                if value is None:
                    raise ConfigError(f"base '{name}' needs {key}=; pass it to build_loss")
                kwargs[key] = value
        return _construct(PROXY_LOSSES[name], kwargs, f"base '{name}'")
    choices = sorted(PAIR_LOSSES) + sorted(PROXY_LOSSES)
    choices += ["text_proxy_anchor", "text_proxy_nca", "pml:<ClassName>"]
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
