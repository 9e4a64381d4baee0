"""The text section of an experiment config: the text model, prompts and pseudo-labels."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from langdml.config.base import MAX_IMAGE_SIZE, _Strict


class TextConfig(_Strict):
    """The text side, shared by language guidance, text-proxy losses and xmodal."""

    text_model: str = Field(
        "minilm",
        description="Text model of the class names: minilm, mpnet, hf:..., st:..., clip:... "
        "(or open_clip:...; the spec of an open_clip model.backbone uses that model's text "
        "tower, loaded once) or file:PATH.",
    )
    prompts: list[str] = Field(
        default_factory=lambda: ["a photo of a {}"],
        description="Prompt templates ({} is the class name); a class's embedding is the mean "
        "over its prompts.",
    )
    pseudo_labels: bool = Field(
        False,
        description="PLG: the top_k ImageNet class names an ImageNet classifier gives each "
        "class's images, as the class's language target (text.target pseudo_labels).",
    )
    top_k: int = Field(5, ge=1, description="PLG: ImageNet pseudo-labels per class.")
    pseudo_label_model: str = Field(
        "packaged",
        description="PLG classifier: packaged (EfficientNet-Lite0's ImageNet head, offline) or "
        "ARCH:WEIGHTS, a timm ImageNet classifier with model.weights' choices (e.g. "
        "resnet50:torchvision).",
    )
    pseudo_label_image_size: int = Field(
        224, ge=16, le=MAX_IMAGE_SIZE, description="PLG: classifier input side."
    )
    pseudo_label_crop_pct: float | None = Field(
        None,
        gt=0,
        description="PLG: resize the short side to image_size / crop_pct, then center-crop (> 1 "
        "zero-pads); null resizes to image_size x image_size.",
    )

    descriptions: str | None = Field(
        None,
        description="Class descriptions as language targets: a CSV/TSV file with a header and "
        "columns class,text (one or more rows per class; a class's description embedding is the "
        "renormalised mean of its rows' unit embeddings, embedded as written), or a packaged "
        "file: packaged:emoji_cldr (alias emoji: the Unicode CLDR keywords of the emoji "
        "benchmark's classes). Classes are matched after the default name cleaning, ignoring "
        "case.",
    )
    target: list[str] | None = Field(
        None,
        description="What a class's language target is made of, one or more of names, "
        "descriptions, pseudo_labels (a list, or joined with +: names+descriptions); each "
        "source is a view and language guidance averages the per-view cosine (text-proxy "
        "losses the renormalised mean of the views). With names, a class without descriptions "
        "uses its name as its description view. null: [pseudo_labels] if text.pseudo_labels, "
        "else [descriptions] if text.descriptions is set, else [names].",
    )

    @field_validator("target", mode="before")
    @classmethod
    def _split_target(cls, value: Any) -> Any:
        return value.split("+") if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_target(self) -> TextConfig:
        from langdml.text.targets import check_target

        if self.target is None:
            return self
        check_target(self.target)
        if ("descriptions" in self.target) != (self.descriptions is not None):
            raise ValueError(
                f"text.target {'+'.join(self.target)} and text.descriptions "
                f"{self.descriptions!r} disagree: descriptions in the target need a "
                "text.descriptions file, and a text.descriptions file needs descriptions in the "
                "target"
            )
        if ("pseudo_labels" in self.target) != self.pseudo_labels:
            raise ValueError(
                f"text.target {'+'.join(self.target)} and text.pseudo_labels "
                f"{self.pseudo_labels} disagree: set text.pseudo_labels: true exactly when the "
                "target has pseudo_labels"
            )
        return self

    @property
    def sources(self) -> list[str]:
        """The resolved ``target``: what a class's language target is made of, in order."""
        if self.target is not None:
            return list(self.target)
        if self.pseudo_labels:
            return ["pseudo_labels"]
        return ["descriptions"] if self.descriptions is not None else ["names"]


TEXT_KEYS = tuple(TextConfig.model_fields)
