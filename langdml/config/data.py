"""The data section of an experiment config: which dataset, and how its classes split."""

from __future__ import annotations

from pydantic import Field, model_validator

from langdml.config.base import _Strict


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
