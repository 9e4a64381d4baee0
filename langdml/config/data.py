"""The data section of an experiment config: which dataset, and how its classes split."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from langdml.config.base import _Strict

if TYPE_CHECKING:
    from langdml.config.model import ModelConfig


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
    validation_fraction: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="> 0: carve a validation split from the TRAIN classes (this fraction of them, "
        "the last in class order) and evaluate on it instead of the test classes, which picks "
        "best.pt; the way to tune without seeing test classes.",
    )
    folds: int = Field(
        0,
        ge=0,
        description="K >= 2: split the train classes into K class-disjoint folds (contiguous "
        "by class id); fold data.fold validates, the others train (MLRC's cross-validation); an "
        "ablation runs every fold. 0: off.",
    )
    fold: int = Field(0, ge=0, description="The validation fold when data.folds >= 2.")
    split_file: str | None = Field(
        None,
        description="A CSV/TSV of path,label[,split,is_query,is_gallery,category] (paths "
        "relative to the dataset root): only the images it lists take part; its split column "
        "(train/val/test) replaces the class split, its is_query/is_gallery roles drive the "
        "evaluation (queries search the gallery only), its category column gives each class's "
        "parent. `langdml data split SPEC -o FILE` writes one. null: no file.",
    )
    class_order: Literal["natural", "seeded"] = Field(
        "natural",
        description="Class order the split cuts when no split file gives the split: natural "
        "(class id order, the DML protocol) or seeded (a permutation seeded by "
        "data.split_seed; ignores a dataset's official split).",
    )
    split_seed: int = Field(
        0,
        description="Seed of data.class_order: seeded (the same seed as `langdml data split "
        "--seed` gives the same classes).",
    )
    cache_dir: str | None = Field(
        None,
        description="Cache folder (datasets, features, text embeddings); null: $LANGDML_CACHE, the "
        "checkout's cache/ or the platform cache dir.",
    )
    augment: list[dict[str, Any]] | None = Field(
        None,
        description="Fine-tuning augmentation: torchvision transforms in order, each "
        "{name: CLASS, ...arguments}, e.g. [{name: RandomResizedCrop, size: 128, scale: [0.5, 1]}, "
        "{name: RandomHorizontalFlip}]; ToTensor and the backbone's Normalize follow; null: "
        "RandomResizedCrop(model.image_size, model.crop_scale) + horizontal flip.",
    )
    timm_augment: dict[str, Any] | None = Field(
        None,
        description="Fine-tuning augmentation by timm's create_transform options instead, e.g. "
        "{auto_augment: rand-m9-mstd0.5, re_prob: 0.25, scale: [0.08, 1]}; image size, "
        "normalisation and interpolation come from the run.",
    )

    @model_validator(mode="after")
    def _one_augment(self) -> DataConfig:
        if self.augment is not None and self.timm_augment is not None:
            raise ValueError("set data.augment or data.timm_augment, not both")
        return self

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


def check_augment(data: DataConfig, model: ModelConfig) -> None:
    """data.augment / data.timm_augment: built and run on a blank image now (a bad name or
    argument is one line before any work); refused where no image is augmented per batch."""
    if data.augment is None and data.timm_augment is None:
        return
    key = "data.augment" if data.augment is not None else "data.timm_augment"
    if model.trainable_blocks != "all":
        raise ValueError(
            f"{key} augments the images of full fine-tuning (model.trainable_blocks all); a "
            "frozen or partly frozen trunk trains on cached views (model.augment_views, "
            "model.crop_scale)"
        )
    from langdml.models.augment import augment_transform, check_output, timm_transform

    mean, std, size = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), model.image_size
    if data.augment is not None:
        transform = augment_transform(data.augment, mean, std)
    else:
        transform = timm_transform(data.timm_augment, size, mean, std, model.interpolation)
    check_output(transform, size, key)
