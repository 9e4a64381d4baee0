"""The optimizer and train sections of an experiment config."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from langdml.config.base import _Strict


class OptimizerConfig(_Strict):
    name: Literal["adam", "adamw", "sgd"] = Field("adamw", description="Optimizer.")
    lr: float = Field(1e-3, gt=0, description="Learning rate of the model.")
    weight_decay: float = Field(1e-4, ge=0, description="Weight decay.")
    # Proxy losses need a much larger learning rate on their proxies (Proxy Anchor: x100).
    proxy_lr_multiplier: float = Field(100.0, gt=0)
    momentum: float = Field(0.9, description="Momentum (sgd only).")


class TrainConfig(_Strict):
    epochs: int = Field(30, ge=1, description="Training epochs.")
    batch_size: int = Field(64, ge=2, description="Batch size, a multiple of m_per_class.")
    m_per_class: int = Field(2, ge=1, description="Images per class in a batch.")
    iterations_per_epoch: int | None = Field(
        None, ge=1, description="Batches per epoch; null: training images // batch_size."
    )
    scheduler: Literal["none", "cosine", "step"] = Field(
        "cosine",
        description="Learning-rate schedule: cosine to 0, step (x step_gamma after each third) "
        "or none (constant).",
    )
    step_gamma: float = Field(
        0.1, gt=0, le=1, description="scheduler step: the factor of each cut."
    )
    warmup_epochs: int = Field(0, ge=0, description="Epochs of linear learning-rate warm-up.")
    frozen_trunk_epochs: int = Field(
        0,
        ge=0,
        description="Fine-tuning: the first N epochs train only the head and loss parameters "
        "(the trunk is frozen, its BatchNorm statistics still follow model.frozen_bn), then all.",
    )
    device: str = Field("cpu", description="cpu, cuda or cuda:N.")
    amp: bool = Field(False, description="Mixed precision (autocast) on CUDA.")
    # bfloat16 needs no loss scaling; float16 (GPUs without bf16) runs with a GradScaler.
    amp_dtype: Literal["bfloat16", "float16"] = "bfloat16"
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes.")
    grad_clip: float | None = Field(
        None, description="Clip the gradient norm to this value; null: no clipping."
    )
    progress: bool = Field(True, description="Show progress bars.")

    @model_validator(mode="after")
    def _divisible(self) -> TrainConfig:
        if self.batch_size % self.m_per_class:
            raise ValueError(
                f"batch_size {self.batch_size} is not divisible by m_per_class {self.m_per_class}"
            )
        return self
