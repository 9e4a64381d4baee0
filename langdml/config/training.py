"""The optimizer and train sections of an experiment config."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, PrivateAttr, field_serializer, field_validator, model_validator

from langdml.config.base import _Strict
from langdml.errors import ConfigError

_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def resolve_auto_device() -> str:
    """``train.device: auto``: cuda when torch sees a CUDA GPU, else cpu."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def usable_device(device: str, what: str = "--device") -> str:
    """``device`` (auto resolved) when this machine can run on it; a one-line ConfigError for a
    malformed value or for CUDA on a machine without a CUDA GPU."""
    import torch

    value = str(device).strip().lower()
    if not _DEVICE.fullmatch(value):
        raise ConfigError(f"{what} must be cpu, cuda, cuda:N or auto, got {device!r}")
    value = resolve_auto_device() if value == "auto" else value
    if value.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"{what} {value} but CUDA is not available on this machine; use cpu or auto"
        )
    return value


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
    device: str = Field(
        "cpu",
        description="cpu, cuda, cuda:N or auto (cuda when the machine that runs it has a CUDA "
        "GPU, else cpu; a saved config keeps auto).",
    )
    # device says auto: the field holds the device chosen on this machine, the dump says auto,
    # so a config sent to another machine (a Slurm or Ray worker) chooses again there
    _auto_device: bool = PrivateAttr(False)
    amp: bool = Field(False, description="Mixed precision (autocast) on CUDA.")
    # bfloat16 needs no loss scaling; float16 (GPUs without bf16) runs with a GradScaler.
    amp_dtype: Literal["bfloat16", "float16"] = "bfloat16"
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes.")
    grad_clip: float | None = Field(
        None, description="Clip the gradient norm to this value; null: no clipping."
    )
    progress: bool = Field(True, description="Show progress bars.")

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        value = value.strip().lower()
        if not _DEVICE.fullmatch(value):
            raise ValueError(f"train.device must be cpu, cuda, cuda:N or auto, got {value!r}")
        return value

    @model_validator(mode="after")
    def _choose_device(self) -> TrainConfig:
        self._auto_device = self.device == "auto"
        if self._auto_device:  # bypass validate_assignment (it would rerun this validator)
            self.__dict__["device"] = resolve_auto_device()
        return self

    @field_serializer("device")
    def _dump_device(self, value: str) -> str:
        return "auto" if self._auto_device else value

    @model_validator(mode="after")
    def _divisible(self) -> TrainConfig:
        if self.batch_size % self.m_per_class:
            raise ValueError(
                f"batch_size {self.batch_size} is not divisible by m_per_class {self.m_per_class}"
            )
        return self
