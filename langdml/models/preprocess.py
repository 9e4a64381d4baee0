"""A run's image preprocessing, resolved once: size, crop, interpolation, mean/std.

``model.image_size``, ``model.crop_pct`` and ``model.interpolation`` are either given or the
word ``pretrained``: then they come from the backbone's pretrained config — timm's
(``timm.data.resolve_data_config`` on the architecture's default pretrained cfg; ``img_size`` in
``model.backbone_kwargs`` is the model's input size) or, for open_clip towers, the tower's own
preprocess config. Mean and std always come from there (ImageNet's for a timm architecture
without a pretrained cfg). Training, evaluation, ``embed``, the feature cache and export all use
the one :class:`Preprocessing` this gives.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langdml.errors import ModelError
from langdml.models.clip_tower import FROM_SPEC, clip_preprocessing, is_open_clip
from langdml.models.eval_view import EvalView

PRETRAINED = "pretrained"
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@dataclass(frozen=True)
class Preprocessing:
    """Eval: resize (short side to ``image_size / crop_pct``, then center-crop; ``crop_pct``
    None: straight to S x S) with ``interpolation``, [0, 1], ``(x - mean) / std``."""

    image_size: int
    crop_pct: float | None
    interpolation: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    # timm's rule for a crop_pct of its pretrained config: short side floor(S / crop_pct)
    # (a crop_pct given in the config rounds, the project's rule before pretrained configs)
    floor_scale: bool = False

    @property
    def scale_size(self) -> int | None:
        """The short side before the center crop; None without a crop."""
        if not self.crop_pct:
            return None
        quotient = self.image_size / self.crop_pct
        return int(math.floor(quotient) if self.floor_scale else round(quotient))

    def transform(
        self,
        train: bool = False,
        crop_scale: Sequence[float] = (0.35, 1.0),
        augment: Sequence[dict] | None = None,
        timm_augment: dict | None = None,
    ) -> Callable:
        """The eval transform, or (``train``) the training augmentation: random-resized-crop +
        flip, or ``augment`` / ``timm_augment`` (:mod:`langdml.models.augment`)."""
        from langdml.models.transforms import image_transform

        return image_transform(
            self.image_size,
            self.mean,
            self.std,
            train=train,
            crop_pct=self.crop_pct,
            crop_scale=crop_scale,
            interpolation=self.interpolation,
            augment=augment,
            timm_augment=timm_augment,
            scale_size=self.scale_size,
        )

    def eval_view(self) -> EvalView:
        """The eval transform as the torch-free :class:`~langdml.models.eval_view.EvalView`."""
        return EvalView(
            self.image_size,
            tuple(self.mean),
            tuple(self.std),
            self.crop_pct,
            self.interpolation,
            self.scale_size,
        )

    def describe(self) -> dict[str, Any]:
        """The model card's preprocessing entry."""
        s, c, i = self.image_size, self.crop_pct, self.interpolation
        resize = (
            f"resize short side to {self.scale_size} ({'floor' if self.floor_scale else 'round'}"
            f"({s}/{c}), {i}), center-crop {s}x{s}"
            if c
            else f"resize to {s}x{s} ({i})"
        )
        return {
            "image_size": s,
            "crop_pct": c,
            "interpolation": i,
            "resize": resize,
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "input": "float32 (N, 3, H, W), RGB, scaled to [0, 1] then (x - mean) / std",
        }


def pretrained_preprocessing(
    backbone: str, weights: str = FROM_SPEC, backbone_kwargs: Mapping[str, Any] | None = None
) -> Preprocessing:
    """Everything from the backbone's pretrained config (module docstring)."""
    if is_open_clip(backbone):
        c = clip_preprocessing(backbone, weights)
        return Preprocessing(c.image_size, c.crop_pct, c.interpolation, c.mean, c.std)
    import timm
    from timm.data import resolve_data_config

    pcfg = timm.models.get_pretrained_cfg(backbone)
    if pcfg is None:
        return Preprocessing(224, 0.875, "bicubic", *_IMAGENET)
    data = resolve_data_config({}, pretrained_cfg=pcfg.to_dict())
    if data.get("crop_mode", "center") != "center":
        raise ModelError(
            f"backbone {backbone!r} crops with mode {data['crop_mode']!r}; langdml supports the "
            "center crop: set model.image_size, model.crop_pct and model.interpolation"
        )
    size = int(data["input_size"][-1])
    img_size = (backbone_kwargs or {}).get("img_size")
    if img_size is not None:
        size = int(img_size if isinstance(img_size, int) else img_size[-1])
    crop, interp = float(data["crop_pct"]), str(data["interpolation"])
    return Preprocessing(size, crop, interp, data["mean"], data["std"], floor_scale=True)


def resolve_preprocessing(
    backbone: str,
    image_size: int | str,
    crop_pct: float | str | None,
    interpolation: str,
    weights: str = FROM_SPEC,
    backbone_kwargs: Mapping[str, Any] | None = None,
) -> Preprocessing:
    """The given values, each ``pretrained`` one (and mean/std) from the pretrained config."""
    known = pretrained_preprocessing(backbone, weights, backbone_kwargs)
    return Preprocessing(
        image_size=known.image_size if image_size == PRETRAINED else int(image_size),
        crop_pct=known.crop_pct if crop_pct == PRETRAINED else crop_pct,
        interpolation=known.interpolation if interpolation == PRETRAINED else interpolation,
        mean=tuple(known.mean),
        std=tuple(known.std),
        floor_scale=known.floor_scale and crop_pct == PRETRAINED,
    )
