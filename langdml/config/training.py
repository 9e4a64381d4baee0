"""The optimizer and train sections of an experiment config: learning rates and parameter
groups, schedules, the batch sampler and the experiment trackers. Every key added after the
first release defaults to the behaviour from before it existed."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, PrivateAttr, field_serializer, field_validator, model_validator

from langdml.config.base import _Strict
from langdml.devices import DEVICE_PATTERN, resolve_auto_device

SAMPLERS = ("m_per_class", "class_balanced", "hierarchical")
LOGGERS = ("tensorboard", "csv", "mlflow", "wandb")
# Keys that only say where a run reports, never what it computes.
TRACKING_KEYS = (
    "loggers",
    "mlflow_uri",
    "wandb_project",
    "wandb_mode",
    "tracking_experiment",
    "tracking_run_name",
    "tracking_tags",
)

class OptimizerConfig(_Strict):
    name: Literal["adam", "adamw", "sgd"] = Field("adamw", description="Optimizer.")
    lr: float = Field(1e-3, gt=0, description="Learning rate of the model.")
    weight_decay: float = Field(1e-4, ge=0, description="Weight decay.")
    # Proxy losses need a much larger learning rate on their proxies (Proxy Anchor: x100).
    proxy_lr_multiplier: float = Field(
        100.0,
        gt=0,
        description="The proxies' learning rate: head_lr (else lr) times this factor.",
    )
    momentum: float = Field(0.9, description="Momentum (sgd only).")
    # Per-group learning rates and weight decays are absolute values; null inherits lr /
    # weight_decay. With all four null the model's parameters form one group, as before these
    # keys existed (so old checkpoints resume).
    trunk_lr: float | None = Field(
        None,
        gt=0,
        description="Learning rate of the trunk's trained parameters (fine-tuning: "
        "model.trainable_blocks N or all); null: optimizer.lr.",
    )
    head_lr: float | None = Field(
        None,
        gt=0,
        description="Learning rate of the embedding head (S2SD's auxiliary heads too) and of "
        "the loss's own parameters; proxies get head_lr x proxy_lr_multiplier; null: "
        "optimizer.lr.",
    )
    trunk_weight_decay: float | None = Field(
        None, ge=0, description="Weight decay of the trunk group; null: optimizer.weight_decay."
    )
    head_weight_decay: float | None = Field(
        None,
        ge=0,
        description="Weight decay of the head group and of the loss's parameters (proxies "
        "included); null: optimizer.weight_decay.",
    )

    @property
    def split_groups(self) -> bool:
        """Whether trunk and head train as separate parameter groups."""
        keys = ("trunk_lr", "head_lr", "trunk_weight_decay", "head_weight_decay")
        return any(getattr(self, k) is not None for k in keys)


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
    step_milestones: list[int] | None = Field(
        None,
        description="scheduler step: the epochs after which the learning rate is multiplied by "
        "step_gamma, e.g. [10, 20]; null: after each third of training.",
    )
    min_lr_ratio: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="scheduler cosine: the final learning rate as a fraction of the initial one.",
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
        description="cpu, cuda, cuda:N, mps or auto (cuda when the machine that runs it has a "
        "CUDA GPU, else cpu; a saved config keeps auto).",
    )
    # device says auto: the field holds the device chosen on this machine, the dump says auto,
    # so a config sent to another machine (a Slurm or Ray worker) chooses again there
    _auto_device: bool = PrivateAttr(False)
    amp: bool = Field(False, description="Mixed precision (autocast) on CUDA.")
    amp_dtype: Literal["bfloat16", "float16"] = Field(
        "bfloat16",
        description="train.amp's dtype: bfloat16 needs no loss scaling; float16 (GPUs without "
        "bf16) runs with a GradScaler.",
    )
    channels_last: bool = Field(
        False,
        description="Train a trunk that trains (trainable_blocks > 0) in the channels-last memory "
        "layout: on the CPU a fine-tuning step of EfficientNet-Lite0 took 0.56x the time of the "
        "default layout (depthwise convolutions); the last digits of results differ from it.",
    )
    keep_cpu_heap: bool = Field(
        True,
        description="A trunk that trains on the CPU under glibc (Linux): freed memory stays in "
        "the process heap for the next step until the last epoch ends (mallopt), instead of "
        "faulting its pages in again every step (a full fine-tuning epoch of EfficientNet-Lite0: "
        "3.8M page faults, 1.5x the time); peak memory can grow by a few hundred MB. false: "
        "glibc's own settings.",
    )
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes.")
    grad_clip: float | None = Field(
        None, description="Clip the gradient norm to this value; null: no clipping."
    )
    progress: bool = Field(True, description="Show progress bars.")
    sampler: Literal["m_per_class", "class_balanced", "hierarchical"] = Field(
        "m_per_class",
        description="Batch sampler: m_per_class (batch_size / m_per_class classes x m_per_class "
        "images, an epoch = training images / batch_size batches), class_balanced (n_classes x "
        "n_per_class, every class once per epoch) or hierarchical (n_categories x n_classes x "
        "n_per_class: a batch's classes come from a few categories of the class hierarchy).",
    )
    n_classes: int | None = Field(
        None,
        ge=1,
        description="class_balanced: classes per batch; hierarchical: classes per category; "
        "null: from batch_size.",
    )
    n_per_class: int | None = Field(
        None,
        ge=1,
        description="class_balanced / hierarchical: images per class; null: m_per_class.",
    )
    n_categories: int | None = Field(
        None, ge=1, description="hierarchical: categories per batch (required there)."
    )
    category_level: int = Field(
        0,
        ge=0,
        description="hierarchical: the level of the class hierarchy whose groups are the "
        "categories (0 is the coarsest); the categories come from eval.hierarchy when it names a "
        "file, else the data's category column (a split file's; one level), else the "
        "dataset's own hierarchy.",
    )
    loggers: list[Literal["tensorboard", "csv", "mlflow", "wandb"]] = Field(
        default_factory=lambda: ["tensorboard", "csv"],
        description="Experiment trackers of the per-epoch log and the final metrics (log.jsonl "
        "is always written): tensorboard (tb/), csv (log.csv), mlflow (the mlflow extra) and "
        "wandb (the wandb extra).",
    )
    mlflow_uri: str | None = Field(
        None,
        description="loggers mlflow: the tracking URI; null: $MLFLOW_TRACKING_URI, else a local "
        "SQLite store, mlflow.db in the working directory.",
    )
    wandb_project: str | None = Field(
        None,
        description="loggers wandb: the W&B project; null: the experiment (an ablation's name "
        "for its cells, else the run name).",
    )
    wandb_mode: Literal["offline", "online"] = Field(
        "offline",
        description="loggers wandb: offline writes the run under RUN_DIR/wandb (wandb sync "
        "uploads it later); online streams it (needs wandb login).",
    )
    tracking_experiment: str | None = Field(
        None,
        description="loggers mlflow / wandb: the MLflow experiment and W&B group; null: the part "
        "of name before its last '/', else name. An ablation sets it to its own name.",
    )
    tracking_run_name: str | None = Field(
        None,
        description="loggers mlflow / wandb: the run's name there; null: the part of name after "
        "its last '/'. An ablation sets it to the cell's key and seed, e.g. 'regularizers="
        "language, seed 0'.",
    )
    tracking_tags: dict[str, str] = Field(
        default_factory=dict,
        description="loggers mlflow / wandb: extra tags of the run (MLflow tags, W&B tags as "
        "KEY=VALUE); an ablation sets ablation, cell, run_id, seed and each grid key's value.",
    )

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        value = value.strip().lower()
        if value != "auto" and not re.fullmatch(DEVICE_PATTERN, value):
            raise ValueError(f"train.device must be cpu, cuda, cuda:N, mps or auto, got {value!r}")
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
        if self.sampler == "m_per_class" and self.batch_size % self.m_per_class:
            raise ValueError(
                f"batch_size {self.batch_size} is not divisible by m_per_class {self.m_per_class}"
            )
        return self

    @field_validator("loggers")
    @classmethod
    def _distinct_loggers(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))

    @field_validator("step_milestones")
    @classmethod
    def _milestones(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and (any(m < 1 for m in value) or value != sorted(set(value))):
            raise ValueError(f"step_milestones must be increasing positive epochs, got {value}")
        return value

    @model_validator(mode="after")
    def _sampler_sizes(self) -> TrainConfig:
        sizes = sampler_sizes(self)
        # Bypass validate_assignment (it would rerun this validator): the resolved sizes are
        # stored, so the saved config.yaml states the batch it ran with.
        self.__dict__.update(sizes)
        return self


def check_trunk_groups(trainable_blocks: int | str, opt: OptimizerConfig) -> None:
    """Trunk-group settings on a frozen trunk would be silently ignored: refuse them."""
    if trainable_blocks == 0 and (opt.trunk_lr is not None or opt.trunk_weight_decay is not None):
        raise ValueError(
            "optimizer.trunk_lr / trunk_weight_decay need a trained trunk (model.trainable_blocks "
            "N or all); a frozen trunk has no trunk parameters"
        )


def sampler_sizes(train: Any) -> dict[str, int]:
    """The batch composition of ``train.sampler``: resolved n_classes / n_per_class (and the
    batch size they give), or {} for m_per_class. A missing size is derived from batch_size;
    an explicit batch_size that disagrees with the product is an error."""
    grouped = ("n_classes", "n_per_class", "n_categories")
    if train.sampler == "m_per_class":
        given = [k for k in grouped if getattr(train, k) is not None]
        if given:
            raise ValueError(
                f"train.{given[0]} applies to train.sampler class_balanced / hierarchical, not "
                "m_per_class (whose batch is batch_size / m_per_class classes x m_per_class)"
            )
        return {}
    per_class = train.n_per_class or train.m_per_class
    categories = 1
    if train.sampler == "hierarchical":
        if train.n_categories is None:
            raise ValueError("train.sampler hierarchical needs train.n_categories (e.g. 2)")
        categories = train.n_categories
    elif train.n_categories is not None:
        raise ValueError("train.n_categories applies to train.sampler hierarchical only")
    explicit = "batch_size" in train.model_fields_set
    classes = train.n_classes
    if classes is None:
        if train.batch_size % (categories * per_class):
            raise ValueError(
                f"batch_size {train.batch_size} is not divisible by "
                f"{'n_categories x ' if categories > 1 else ''}n_per_class "
                f"({categories * per_class}); set train.n_classes"
            )
        classes = train.batch_size // (categories * per_class)
    batch = categories * classes * per_class
    if explicit and batch != train.batch_size:
        raise ValueError(
            f"batch_size {train.batch_size} disagrees with the {train.sampler} batch "
            f"({'n_categories x ' if categories > 1 else ''}n_classes x n_per_class = {batch}); "
            "leave batch_size unset or make them agree"
        )
    if batch < 2:
        raise ValueError(f"the {train.sampler} batch has {batch} image; it needs at least 2")
    return {"n_classes": classes, "n_per_class": per_class, "batch_size": batch}
