"""Config sections that stand on their own (data, text); :mod:`langdml.config` assembles them
into the experiment config and re-exports them."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Strict):
    dataset: str = Field(
        "emoji",
        description="Dataset spec: emoji, cub200:PATH, cars196:PATH, sop:PATH, inshop:PATH, "
        "imagefolder:PATH or hf:NAME_OR_PATH.",
    )
    train_fraction: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="Share of the classes that train (the first ones); the rest are the held-out "
        "test classes (class-disjoint split).",
    )
    # > 0 carves a validation split from the TRAIN classes (the last fraction of them) and
    # evaluates on it instead of the test classes: the way to tune without seeing test classes.
    validation_fraction: float = Field(0.0, ge=0, lt=1)
    folds: int = Field(
        0,
        ge=0,
        description="K >= 2: split the train classes into K class-disjoint folds (contiguous "
        "by class id); fold data.fold validates, the others train (MLRC's cross-validation); an "
        "ablation runs every fold. 0: off.",
    )
    fold: int = Field(0, ge=0, description="The validation fold when data.folds >= 2.")
    cache_dir: str | None = Field(
        None,
        description="Cache folder (datasets, features, text embeddings); null: $LANGDML_CACHE, the "
        "checkout's cache/ or the platform cache dir.",
    )

    @model_validator(mode="after")
    def _folds(self) -> DataConfig:
        if self.folds == 1 or self.fold >= max(self.folds, 1):
            raise ValueError(
                f"data.folds must be 0 (off) or >= 2 and data.fold in [0, folds), got folds "
                f"{self.folds}, fold {self.fold}"
            )
        if self.folds and self.validation_fraction:
            raise ValueError("set data.folds or data.validation_fraction, not both")
        return self


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
