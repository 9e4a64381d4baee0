"""pytorch-metric-learning objects as base losses: ``base: {name: "pml:ClassName", ...}`` with
nested ``pml:`` distances, reducers, regularizers, miners or inner losses (the ``pml`` extra)."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from langdml._extras import require
from langdml.errors import ConfigError

from ._common import as_fp32, check_batch, fp32_region
from ._construct import construct, split_entry


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


# Where a nested "pml:" object is looked up, by the argument it is given for.
_PML_MODULES = ("losses", "miners", "distances", "reducers", "regularizers")
_PML_MODULE_OF_KEY = {"miner": "miners", "distance": "distances", "reducer": "reducers"}


def _is_pml_entry(value: Any) -> bool:
    name = value.get("name") if isinstance(value, Mapping) else value
    return isinstance(name, str) and name.startswith("pml:")


def _pml_class(class_name: str, modules: tuple[str, ...], where: str) -> type:

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
    name, kwargs = split_entry(entry, where)
    where = f"{where} '{name}'"
    cls = _pml_class(name[4:], modules, where)
    return _construct_pml(cls, _pml_kwargs(kwargs, where), where)


def _construct_pml(cls: type, kwargs: dict[str, Any], where: str) -> nn.Module:
    """PML classes take **kwargs, so a misspelt argument fails inside the constructor."""
    try:
        return construct(cls, kwargs, where)
    except TypeError as exc:
        raise ConfigError(f"{where}: bad arguments {sorted(kwargs)} ({exc})") from None


def build_pml_base(
    class_name: str,
    kwargs: dict[str, Any],
    num_classes: int | None,
    embedding_size: int | None,
    build_miner: Callable[[Any], nn.Module],
) -> nn.Module:
    """base "pml:ClassName": a PML loss; nested {name: "pml:…"} arguments (distance, reducer,
    regularizers, an inner loss) become PML objects, and ``miner`` — a PML miner
    ({name: "pml:MultiSimilarityMiner", …}) or one of ours (built by ``build_miner``) — mines
    every call's pairs."""
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
