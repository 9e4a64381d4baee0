"""build_loss: a CombinedLoss (or S2SDLoss) from the one loss schema, :class:`LossConfig`.

Every name is looked up in :mod:`langdml.losses.registry`; each listed regularizer's settings
block builds its own term (``RegularizerSettings.build``), so nothing here names a regularizer.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from torch import Tensor, nn

from langdml.errors import ConfigError

from ._construct import construct, split_entry
from .combined import CombinedLoss
from .pml_bases import build_pml_base
from .registry import LOSSES, MINERS, base_names, load
from .regularizer import BuildContext
from .s2sd import S2SDLoss
from .spec import LossConfig
from .xbm import CrossBatchMemory

# The registry's base losses as name → class (public: ``langdml.losses.BASE_LOSSES``).
BASE_LOSSES: dict[str, type[nn.Module]] = {n: e.load() for n, e in LOSSES.items()}


def loss_config(config: LossConfig | Mapping[str, Any]) -> LossConfig:
    """The typed loss config of a LossConfig or of the same mapping (one line when invalid)."""
    if isinstance(config, LossConfig):
        return config
    if not isinstance(config, Mapping):
        raise ConfigError(f"loss config must be a mapping, got {type(config).__name__}")
    if "base" not in config:
        raise ConfigError("loss config: missing 'base' (e.g. {'name': 'multi_similarity'})")
    try:
        return LossConfig.model_validate(dict(config))
    except ValidationError as exc:
        raise ConfigError(_one_line(exc.errors())) from None


def _one_line(errors: list[dict[str, Any]]) -> str:
    err = errors[0]
    loc = [str(p) for p in err["loc"]]
    if err["type"] == "extra_forbidden":
        unknown = sorted(".".join(map(str, e["loc"])) for e in errors if e["type"] == err["type"])
        return f"loss config: unknown keys {unknown}; expected {list(LossConfig.model_fields)}"
    where = ".".join(loc)
    message = str(err["msg"]).removeprefix("Value error, ").replace("Input should be", "must be")
    value = err.get("input")
    shown = "" if isinstance(value, (dict, list)) else f" (got {value!r})"
    if message.startswith("must be"):
        return f"loss config: {where} {message}{shown}"
    return f"loss config{' ' + where if where else ''}: {message}{shown}"


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
    return construct(functools.partial(CrossBatchMemory, loss), kwargs, where)


def build_base(
    entry: Any,
    num_classes: int | None = None,
    embedding_size: int | None = None,
    class_text_embeddings: Tensor | None = None,
) -> nn.Module:
    """The base loss of a config entry: a name or {name: …, <constructor arguments>}.

    Pair losses take ``miner`` (a miner entry) and ``xbm`` (a mapping of CrossBatchMemory
    arguments — memory_size, start_iteration, batch_weight — or true): the loss is then wrapped
    in a cross-batch memory of embedding_size-wide entries. MarginLoss's ``num_classes: auto``
    means one β per class of the builder's num_classes. Proxy and class-weight losses get
    num_classes / embedding_size from the builder; text-proxy losses class_text_embeddings as
    well. "pml:ClassName" builds a pytorch-metric-learning loss; nested {name: "pml:…"}
    arguments (distance, reducer, miner, …) become PML objects.
    """
    name, kwargs = split_entry(entry, "base")
    xbm = kwargs.pop("xbm", None)
    if name.startswith("pml:"):
        if xbm not in (None, False):
            raise ConfigError(f"base '{name}': xbm wraps langdml's pair losses only")
        return build_pml_base(name[4:], kwargs, num_classes, embedding_size, build_miner)
    if name not in LOSSES:
        raise ConfigError(f"unknown base loss {name!r}; expected one of {base_names()}")
    entry_info, where = LOSSES[name], f"base '{name}'"
    if xbm not in (None, False) and entry_info.kind != "pair":
        pairs = sorted(n for n, e in LOSSES.items() if e.kind == "pair")
        raise ConfigError(f"{where}: xbm wraps the pair losses {pairs} only")
    cls = entry_info.load()
    if entry_info.kind == "text_proxy":
        # Language as proxies: proxies projected from class-name embeddings.
        if class_text_embeddings is None:
            raise ConfigError(f"{where} needs class_text_embeddings (precompute them first)")
        kwargs.setdefault("num_classes", num_classes)
        kwargs.setdefault("embedding_size", embedding_size)
        return construct(lambda **kw: cls(class_text_embeddings, **kw), kwargs, where)
    if entry_info.kind == "pair":
        if kwargs.get("miner") is not None:
            kwargs["miner"] = build_miner(kwargs["miner"])
        if kwargs.get("num_classes") == "auto":  # MarginLoss: one β per class
            if num_classes is None:
                raise ConfigError(f"{where} num_classes='auto' needs num_classes=")
            kwargs["num_classes"] = num_classes
        loss = construct(cls, kwargs, where)
        return loss if xbm in (None, False) else _wrap_xbm(loss, xbm, name, embedding_size)
    for key, value in (("num_classes", num_classes), ("embedding_size", embedding_size)):
        if key not in kwargs:
            if value is None:
                raise ConfigError(f"{where} needs {key}=; pass it to build_loss")
            kwargs[key] = value
    return construct(cls, kwargs, where)


def build_miner(entry: Any) -> nn.Module:
    if isinstance(entry, nn.Module):
        return entry
    name, kwargs = split_entry(entry, "miner")
    if name not in MINERS:
        raise ConfigError(f"unknown miner {name!r}; expected one of {sorted(MINERS)}")
    return construct(load(MINERS[name]), kwargs, f"miner '{name}'")


def build_loss(
    config: LossConfig | Mapping[str, Any],
    num_classes: int | None = None,
    embedding_size: int | None = None,
    class_text_embeddings: Tensor | None = None,
) -> nn.Module:
    """The training loss of a ``loss:`` config (typed, or the same mapping).

    ``{"base": {"name": "multi_similarity", "alpha": 2, ...} | "triplet",
       "regularizers": ["language", "direction"], "language": {"weight": 5.0, ...},
       "direction": {"weight": 0.3}, "s2sd": {"dims": [...]}}``
    (a regularizer may also be listed as ``{"name": "language", "weight": 5.0, ...}``).
    Proxy losses get num_classes / embedding_size from the arguments; "language" gets
    ``class_text_embeddings`` ((C, d) or (C, k, d), one row per class).

    The result is a CombinedLoss = base + Σ weight × regularizer. "direction" with form
    "integrated" (the default) swaps a triplet / proxy_nca / multi_similarity base for its DR
    form (DRTripletLoss, ...) with γ = weight, adding no term; its "direction" log entry
    (weight 0) is the mean cos θ the γ multiplies. Form "orthogonal" adds our
    DirectionRegularizer penalty to any base. With ``s2sd.dims`` the CombinedLoss is S2SD's
    target loss and the base alone trains each auxiliary head (an S2SDLoss).
    """
    spec = loss_config(config)
    base_entry = spec.base.model_dump()
    ctx = BuildContext(base_entry, num_classes, embedding_size, class_text_embeddings)
    base = build_base(dict(base_entry), num_classes, embedding_size, class_text_embeddings)
    terms: list[tuple[str, float, nn.Module]] = []
    for name in spec.regularizers:
        settings = getattr(spec, name)
        try:  # the config checked this when read; a block assigned since is checked here
            settings.check_base(ctx.base_name)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        base, module, weight = settings.build(base, ctx)
        terms.append((name, weight, module))
    loss = CombinedLoss(base, terms)
    if not spec.s2sd.dims:
        return loss
    return _s2sd(loss, spec, base_entry, ctx)


def _s2sd(loss: CombinedLoss, spec: LossConfig, base_entry, ctx: BuildContext) -> nn.Module:
    """S2SD: the full loss (base + regularizers) on the target embedding, the base loss alone
    on each auxiliary head."""
    if ctx.embedding_size is None:
        raise ConfigError("loss s2sd needs embedding_size=; pass it to build_loss")
    dims = spec.s2sd.dims
    heads = [
        build_base(dict(base_entry), ctx.num_classes, d, ctx.class_text_embeddings) for d in dims
    ]
    settings = spec.s2sd.model_dump(exclude={"dims"})
    return construct(
        functools.partial(S2SDLoss, loss, heads, embedding_sizes=[ctx.embedding_size, *dims]),
        settings,
        "loss s2sd",
    )
