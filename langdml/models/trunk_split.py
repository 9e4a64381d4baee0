"""Partial fine-tuning: a trunk cut into a frozen prefix and a trainable suffix.

``suffix(prefix(x)) == trunk(x)`` for a features-only trunk, so the prefix's activations can be
cached once and only the suffix trains (``model.trainable_blocks N``). The unit N counts:

- EfficientNet / MobileNet (timm ``blocks`` + ``conv_head``): stages of ``blocks`` (one
  resolution and width each; EfficientNet-Lite0 has 7); the suffix adds conv_head, bn2, pool.
- timm ViT family (ViT, DeiT, DINOv2, ``VisionTransformer`` subclasses): transformer blocks; the
  prefix is patch embedding + class/register tokens + position embedding + the first blocks, the
  suffix the last N blocks + the final norm + timm's own token pooling.
- timm ConvNeXt: the 4 stages; the prefix is the stem + the first stages, the suffix the last N
  stages + ``norm_pre`` + the pooling head.
- open_clip ViT image towers: residual attention blocks; the suffix ends in the tower's pooling,
  ``ln_post`` and projection.

Prefix and suffix share the trunk's modules (no copy) but each holds only its own parameters, so
a checkpoint of the suffix stores no frozen weights.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from langdml.errors import ModelError


def _clone(module: nn.Module) -> nn.Module:
    """A shallow copy with its own registries: replacing a child of the copy leaves the original
    whole, and the unchanged children stay shared."""
    clone = copy.copy(module)
    clone._modules = dict(module._modules)
    clone._parameters = dict(module._parameters)
    clone._buffers = dict(module._buffers)
    return clone


def _cut(units: int, trainable: int, what: str) -> int:
    if not 1 <= trainable <= units:
        raise ModelError(
            f"model.trainable_blocks must be 0, 1..{units} ({what}) or all, got {trainable}"
        )
    return units - trainable


class TimmViTPrefix(nn.Module):
    """Patch embedding, prefix tokens, position embedding and the first blocks of a timm ViT."""

    def __init__(self, vit: nn.Module, cut: int) -> None:
        super().__init__()
        vit = _clone(vit)
        vit.blocks = nn.Sequential(*list(vit.blocks)[:cut])
        for name in ("norm", "fc_norm", "head_drop", "head"):
            setattr(vit, name, nn.Identity())
        vit.attn_pool = None
        self.vit = vit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.vit
        return v.blocks(v.norm_pre(v.patch_drop(v._pos_embed(v.patch_embed(x)))))


class TimmViTSuffix(nn.Module):
    """The last blocks, the final norm and timm's own pooling (``forward_head``) of a timm ViT."""

    def __init__(self, vit: nn.Module, cut: int) -> None:
        super().__init__()
        vit = _clone(vit)
        vit.blocks = nn.Sequential(*list(vit.blocks)[cut:])
        for name in ("patch_embed", "norm_pre", "patch_drop", "pos_drop"):
            setattr(vit, name, nn.Identity())
        for name in ("cls_token", "reg_token", "pos_embed", "dist_token"):
            if name in vit._parameters:
                setattr(vit, name, None)
        self.vit = vit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.vit
        return v.forward_head(v.norm(v.blocks(x)))


class ClipViTPrefix(nn.Module):
    """Patch embedding, class token, position embedding, ln_pre and the first residual blocks of
    an open_clip ViT image tower."""

    def __init__(self, visual: nn.Module, cut: int) -> None:
        super().__init__()
        visual = _clone(visual)
        visual.transformer = _clone(visual.transformer)
        visual.transformer.resblocks = nn.ModuleList(list(visual.transformer.resblocks)[:cut])
        for name in ("ln_post", "attn_pool", "attn_pool_contrastive"):
            if name in visual._modules:
                setattr(visual, name, None)
        visual.proj = None
        self.visual = visual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.visual.transformer(self.visual._embeds(x))


class ClipViTSuffix(nn.Module):
    """The last residual blocks, pooling, ln_post and projection of an open_clip ViT tower."""

    def __init__(self, visual: nn.Module, cut: int) -> None:
        super().__init__()
        visual = _clone(visual)
        visual.transformer = _clone(visual.transformer)
        visual.transformer.resblocks = nn.ModuleList(list(visual.transformer.resblocks)[cut:])
        for name in ("conv1", "ln_pre", "patch_dropout"):
            setattr(visual, name, nn.Identity())
        for name in ("class_embedding", "positional_embedding"):
            setattr(visual, name, None)
        self.visual = visual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.visual
        pooled, _ = v._pool(v.transformer(x))
        return pooled if v.proj is None else pooled @ v.proj


def _efficientnet(model: nn.Module, trainable: int) -> tuple[nn.Module, nn.Module]:
    blocks = model.blocks
    cut = _cut(len(blocks), trainable, "stages of timm's blocks")
    prefix = nn.Sequential(model.conv_stem, model.bn1, *list(blocks)[:cut])
    suffix = nn.Sequential(*list(blocks)[cut:], model.conv_head, model.bn2, model.global_pool)
    return prefix, suffix


def _convnext(model: nn.Module, trainable: int) -> tuple[nn.Module, nn.Module]:
    stages = model.stages
    cut = _cut(len(stages), trainable, "ConvNeXt stages")
    prefix = nn.Sequential(model.stem, *list(stages)[:cut])
    suffix = nn.Sequential(*list(stages)[cut:], model.norm_pre, model.head)
    return prefix, suffix


def _timm_vit(model: nn.Module, trainable: int) -> tuple[nn.Module, nn.Module]:
    cut = _cut(len(model.blocks), trainable, "ViT blocks")
    return TimmViTPrefix(model, cut), TimmViTSuffix(model, cut)


def _clip_vit(model: nn.Module, trainable: int) -> tuple[nn.Module, nn.Module]:
    cut = _cut(len(model.transformer.resblocks), trainable, "open_clip ViT blocks")
    return ClipViTPrefix(model, cut), ClipViTSuffix(model, cut)


def trunk_family(model: nn.Module) -> str | None:
    """Which split applies to ``model``: efficientnet, vit, convnext, clip_vit or None."""
    from timm.models.convnext import ConvNeXt
    from timm.models.vision_transformer import VisionTransformer

    if isinstance(model, VisionTransformer):
        return "vit"
    if isinstance(model, ConvNeXt):
        return "convnext"
    if isinstance(getattr(model, "blocks", None), nn.Sequential) and hasattr(model, "conv_head"):
        return "efficientnet"
    if type(model).__module__ == "open_clip.transformer":  # no open_clip import for timm trunks
        from open_clip.transformer import VisionTransformer as ClipVisionTransformer

        if isinstance(model, ClipVisionTransformer):
            return "clip_vit"
    return None


_SPLITS = {
    "efficientnet": _efficientnet,
    "convnext": _convnext,
    "vit": _timm_vit,
    "clip_vit": _clip_vit,
}


def split_trunk(model: nn.Module, trainable_blocks: int) -> tuple[nn.Module, nn.Module]:
    """(frozen prefix, trainable suffix) of a trunk; ``trainable_blocks`` counts the units of the
    module docstring (stages or transformer blocks)."""
    family = trunk_family(model)
    if family is None:
        raise ModelError(
            f"model.trainable_blocks N needs an EfficientNet/MobileNet, ViT (timm or open_clip) "
            f"or ConvNeXt trunk, not {type(model).__name__}; use 0 or all"
        )
    return _SPLITS[family](model, trainable_blocks)
