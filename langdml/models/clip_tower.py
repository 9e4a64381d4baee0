"""open_clip image towers as trunks: ``model.backbone: open_clip:ARCH/PRETRAINED``,
``open_clip:ARCH@CHECKPOINT``, ``open_clip:DIR`` or ``open_clip:ARCH`` with ``model.weights`` a
checkpoint file or none (random).

The spec is the text-model ``clip:`` spec (``langdml.text.spec``), so ``text.text_model`` with the
same spec uses the same model's text tower, loaded once (``langdml.text.clip_loader``). The trunk's
features are the tower's projected image embedding (``visual.output_dim``), unnormalised.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from torch import nn

from langdml.errors import ModelError

PREFIX = "open_clip:"
# model.weights of an open_clip backbone whose spec carries its weights: the config's default
FROM_SPEC = "packaged"


def is_open_clip(backbone: str) -> bool:
    """Whether a ``model.backbone`` value names an open_clip image tower."""
    return str(backbone).startswith(PREFIX)


def _target(backbone: str) -> tuple[str, bool]:
    """(what follows ``open_clip:``, whether it names weights: a tag, a checkpoint or a dir)."""
    from langdml.text.spec import looks_like_path

    target = backbone[len(PREFIX) :].strip()
    if not target:
        raise ModelError(f"model.backbone {backbone!r} names no open_clip architecture")
    if target.endswith(".json"):  # a model-config file: an architecture without weights
        return target, False
    return target, "@" in target or "/" in target or looks_like_path(target)


def clip_spec(backbone: str, weights: str = FROM_SPEC):
    """The ``clip:`` model spec (``TextModelSpec``) of a pretrained open_clip backbone."""
    from langdml.text.spec import looks_like_path, parse_text_model_spec

    target, carries = _target(backbone)
    # a pretrained tag (ARCH/TAG) comes from the hub, so model.weights hub says the same thing
    tag = carries and "@" not in target and not looks_like_path(target)
    if carries and weights != FROM_SPEC and not (tag and weights == "hub"):
        raise ModelError(
            f"model.backbone {backbone!r} names its weights; leave model.weights unset (got "
            f"{weights!r}), or write open_clip:ARCH with model.weights a checkpoint file"
        )
    if not carries:
        if weights == FROM_SPEC:
            raise ModelError(
                f"model.backbone {backbone!r} names no weights: write open_clip:ARCH/PRETRAINED "
                "(e.g. open_clip:ViT-B-32/openai), open_clip:ARCH@CHECKPOINT_FILE, or set "
                "model.weights to a checkpoint file or none"
            )
        target = f"{target}@{weights}"
    return parse_text_model_spec("clip:" + target)


@dataclass(frozen=True)
class ClipPreprocessing:
    """The tower's eval preprocessing, from its open_clip preprocess config."""

    image_size: int
    crop_pct: float | None  # 1.0: resize the short side, center-crop; None: squash to S x S
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def clip_identity(backbone: str, weights: str = FROM_SPEC) -> dict:
    """What identifies the tower's weights (paths with file sizes and mtimes, or the tag),
    without loading them: the feature cache keys on it."""
    from langdml.text.spec import model_identity

    target, carries = _target(backbone)
    if weights == "none" and not carries:
        return {"random": target}
    return model_identity(clip_spec(backbone, weights))


def load_tower_model(backbone: str, weights: str = FROM_SPEC):
    """The loaded open_clip model (``LoadedClip``) behind an open_clip backbone."""
    from langdml.text.clip_loader import load_clip, random_clip

    target, carries = _target(backbone)
    if weights == "none" and not carries:
        return random_clip(target)
    return load_clip(clip_spec(backbone, weights))


def clip_preprocessing(backbone: str, weights: str = FROM_SPEC) -> ClipPreprocessing:
    """Size, crop, interpolation and mean/std of the tower's own preprocessing."""
    cfg = dict(getattr(load_tower_model(backbone, weights).model.visual, "preprocess_cfg", {}))
    size = cfg.get("size", 224)
    size = int(size if isinstance(size, int) else size[0])
    mode = cfg.get("resize_mode", "shortest")
    if mode not in ("shortest", "squash"):
        raise ModelError(
            f"open_clip backbone {backbone!r} resizes with mode {mode!r}; langdml supports "
            "shortest (resize + center crop) and squash"
        )
    return ClipPreprocessing(
        image_size=size,
        crop_pct=1.0 if mode == "shortest" else None,
        interpolation=str(cfg.get("interpolation", "bicubic")),
        mean=tuple(float(v) for v in cfg.get("mean", (0.48145466, 0.4578275, 0.40821073))),
        std=tuple(float(v) for v in cfg.get("std", (0.26862954, 0.26130258, 0.27577711))),
    )


def create_clip_tower(backbone: str, weights: str = FROM_SPEC) -> tuple[nn.Module, int]:
    """(a copy of the image tower, its output size). The copy is what trains; the loaded model,
    shared with the text side, stays as loaded."""
    visual = copy.deepcopy(load_tower_model(backbone, weights).model.visual)
    if hasattr(visual, "output_tokens"):
        visual.output_tokens = False
    return visual.float(), int(visual.output_dim)
