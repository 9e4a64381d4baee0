"""The text section of an experiment config: the text model, prompts and pseudo-labels."""

from __future__ import annotations

from pydantic import Field

from langdml.config.base import _Strict


class TextConfig(_Strict):
    """The text side, shared by language guidance, text-proxy losses and xmodal."""

    text_model: str = Field(
        "minilm",
        description="Text model of the class names: minilm, mpnet, hf:..., st:..., clip:... or "
        "file:PATH.",
    )
    prompts: list[str] = Field(
        default_factory=lambda: ["a photo of a {}"],
        description="Prompt templates ({} is the class name); a class's embedding is the mean "
        "over its prompts.",
    )
    pseudo_labels: bool = False  # PLG: top-k ImageNet names per class instead of class names
    top_k: int = Field(5, ge=1, description="PLG: ImageNet pseudo-labels per class.")
    pseudo_label_model: str = Field(
        "packaged",
        description="PLG classifier: packaged (EfficientNet-Lite0's ImageNet head, offline) or "
        "ARCH:WEIGHTS, a timm ImageNet classifier with model.weights' choices (e.g. "
        "resnet50:torchvision).",
    )
    pseudo_label_image_size: int = Field(224, ge=16, description="PLG: classifier input side.")
    pseudo_label_crop_pct: float | None = Field(
        None,
        gt=0,
        description="PLG: resize the short side to image_size / crop_pct, then center-crop (> 1 "
        "zero-pads); null resizes to image_size x image_size.",
    )


TEXT_KEYS = tuple(TextConfig.model_fields)
