"""The model section of an experiment config: trunk, which of its stages train, and the head."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from langdml.config.base import MAX_EMBEDDING_DIM, MAX_IMAGE_SIZE, _Strict


class ModelConfig(_Strict):
    backbone: str = Field(
        "tf_efficientnet_lite0",
        description="Trunk: a timm architecture (e.g. vit_small_patch14_dinov2, convnext_tiny, "
        "deit_small_patch16_224) or an open_clip image tower: open_clip:ARCH/PRETRAINED, "
        "open_clip:ARCH@CHECKPOINT, open_clip:DIR, or open_clip:ARCH with weights a file or none.",
    )
    backbone_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="More timm.create_model arguments for a timm trunk (e.g. {drop_path_rate: "
        "0.1}, or a small depth/embed_dim for tests).",
    )
    weights: str = Field(
        "packaged",
        description="Trunk weights: packaged (EfficientNet-Lite0, the offline extra), hub (timm's "
        "default pretrained), torchvision (torchvision's original ImageNet weights, timm's "
        "ARCH.tv_in1k; ResNets, DenseNet-121, Inception-v3), none (random) or a .pth / "
        ".safetensors path; hub and torchvision need hub access.",
    )
    pooling: Literal["avg", "max", "avgmax"] = Field(
        "avg",
        description="Global pooling of a CNN trunk: avg (the trunk's own), max, or avgmax "
        "(global average + global max, summed).",
    )
    frozen_trunk: bool = Field(
        True,
        description="Freeze the trunk and train the head on its cached features (the same as "
        "trainable_blocks 0; false is trainable_blocks all).",
    )
    trainable_blocks: int | Literal["all"] | None = Field(
        None,
        description="Trunk stages trained with the head: 0 (frozen trunk, cached features), N "
        "(the last N stages of an EfficientNet/MobileNetV2 or ConvNeXt, or the last N "
        "transformer blocks of a ViT/DeiT/DINOv2 or open_clip ViT tower, on cached prefix "
        "activations) or all (full fine-tuning); null: from frozen_trunk.",
    )
    preprocessing: Literal["config", "pretrained"] = Field(
        "config",
        description="pretrained: image_size, crop_pct and interpolation not given here come "
        "from the backbone's pretrained config (timm's, or the open_clip tower's); config: "
        "their defaults. Mean and std always come from the pretrained config.",
    )
    image_size: int | Literal["pretrained"] = Field(
        128,
        description=f"Side of the square input in pixels (16 to {MAX_IMAGE_SIZE}), or pretrained.",
    )
    augment_views: int = Field(
        0, ge=0, description="Frozen trunk: extra augmented views cached per training image."
    )
    crop_pct: float | Literal["pretrained"] | None = Field(
        None,
        description="Eval resize: short side to image_size / crop_pct, then a center crop; null "
        "resizes straight to image_size x image_size; pretrained: the backbone's.",
    )
    crop_scale: tuple[float, float] = Field(
        (0.35, 1.0),
        description="Training augmentation: area range of the random resized crop "
        "(torchvision's default is [0.08, 1]).",
    )
    interpolation: Literal["bicubic", "bilinear", "nearest", "pretrained"] = Field(
        "bicubic",
        description="Resampling of every resize, training and evaluation; pretrained: the "
        "backbone's.",
    )
    embedding_dim: int = Field(
        128, ge=2, le=MAX_EMBEDDING_DIM, description="Size of the embedding."
    )
    head: Literal["linear", "mlp", "identity"] = Field(
        "linear",
        description="Embedding head on the trunk features (identity needs embedding_dim = the "
        "trunk's feature size).",
    )
    frozen_bn: bool = Field(
        True, description="Fine-tuning: keep the trunk's BatchNorm statistics and affine fixed."
    )

    @field_validator("trainable_blocks", mode="before")
    @classmethod
    def _blocks(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().isdigit():
            return int(value)
        return value

    @field_validator("image_size")
    @classmethod
    def _size(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 16 <= value <= MAX_IMAGE_SIZE:
            raise ValueError(
                f"image_size must be in [16, {MAX_IMAGE_SIZE}] pixels or pretrained, got {value}"
            )
        return value

    @model_validator(mode="after")
    def _pretrained_preprocessing(self) -> ModelConfig:
        # The shorthand writes "pretrained" into the fields it fills, so a saved config reloads
        # to the same preprocessing whatever it set explicitly.
        if self.preprocessing == "pretrained":
            for name in ("image_size", "crop_pct", "interpolation"):
                if name not in self.model_fields_set:
                    self.__dict__[name] = "pretrained"
        return self

    @field_validator("crop_scale")
    @classmethod
    def _scale(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 < value[0] <= value[1] <= 1:
            raise ValueError(f"crop_scale must be [low, high], 0 < low <= high <= 1, got {value}")
        return value

    @model_validator(mode="after")
    def _trunk(self) -> ModelConfig:
        blocks = self.trainable_blocks
        if isinstance(blocks, int) and blocks < 0:
            raise ValueError(f"model.trainable_blocks must be >= 0 or 'all', got {blocks}")
        if blocks is None:
            blocks = 0 if self.frozen_trunk else "all"
        elif "frozen_trunk" in self.model_fields_set and self.frozen_trunk != (blocks == 0):
            raise ValueError(
                f"model.frozen_trunk {str(self.frozen_trunk).lower()} conflicts with "
                f"model.trainable_blocks {blocks}; set only trainable_blocks"
            )
        # Bypass validate_assignment (it would rerun this validator).
        self.__dict__["trainable_blocks"] = blocks
        self.__dict__["frozen_trunk"] = blocks == 0
        return self

    @property
    def partial_blocks(self) -> int:
        """N of a partial fine-tuning run (the last N trunk stages train), else 0."""
        b = self.trainable_blocks
        return b if isinstance(b, int) else 0
