"""Experiment configs: declarative YAML validated with pydantic.

An unknown or misspelled key is an error naming the key and the nearest valid one; dotted
overrides (``loss.language.weight=5``) apply on top of the YAML before validation.
"""

from __future__ import annotations

import copy
import difflib
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from langdml.config_sections import DataConfig, TextConfig, _Strict
from langdml.config_tree import (  # noqa: F401  (re-exported: langdml.config's public names)
    _format_error,
    _section,
    apply_overrides,
    deprecated,
    load_yaml,
    parse_value,
    set_dotted,
)
from langdml.errors import ConfigError
from langdml.losses.vocab import REGULARIZERS


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
        128, description="Side of the square input in pixels, or pretrained."
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
    embedding_dim: int = Field(128, ge=2, description="Size of the embedding.")
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
        if isinstance(value, int) and value < 16:
            raise ValueError(f"image_size must be >= 16 or pretrained, got {value}")
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


TEXT_KEYS = tuple(TextConfig.model_fields)


class LanguageConfig(_Strict):
    weight: float = Field(1.0, ge=0, description="Weight of the language-guidance term.")
    temperature: float = Field(
        1.0, gt=0, description="Softmax temperature of the image and language similarities."
    )
    shift: float = Field(
        1.0,
        description="Added to the language similarities; same-class entries are 1 + shift on "
        "both sides.",
    )
    direction: Literal["backward", "forward"] = Field(
        "backward",
        description="KL direction: backward KL(P_img || P_lang) (the authors' code default) "
        "or forward KL(P_lang || P_img).",
    )
    mode: Literal["batch", "proxy"] = Field(
        "batch",
        description="batch: KL over the batch's sample similarities; proxy: over the proxies' "
        "similarities (proxy-based base losses).",
    )
    # Control: each train class gets the text embedding of another train class (a permutation
    # seeded by the run's seed), so the target keeps its similarity spectrum but loses meaning.
    shuffled_names: bool = False


class DirectionConfig(_Strict):
    # integrated: DR-Triplet / DR-ProxyNCA / DR-MS, weight = γ inside the base loss (the public
    # reproductions use γ ≈ 0.3-0.49); orthogonal: the project's own additive penalty.
    weight: float = Field(0.3, ge=0)
    form: Literal["integrated", "orthogonal"] = Field(
        "integrated",
        description="integrated: DR inside a triplet / proxy_nca / multi_similarity base; "
        "orthogonal: an additive penalty for any base.",
    )
    model_config = ConfigDict(extra="allow", validate_assignment=True)  # form-specific options

    @field_validator("form", mode="before")
    @classmethod
    def _removed_form(cls, value: Any) -> Any:
        if value == "reproduction":
            raise ValueError(
                "form 'reproduction' was removed: it was an additive -mean cos term, not the "
                "reproductions' form; use 'integrated' (DR inside triplet / proxy_nca / "
                "multi_similarity) or 'orthogonal' (the project's own penalty)"
            )
        return value


class BaseLossConfig(BaseModel):
    # Extra keys are the loss's constructor arguments, checked against its signature at build time.
    model_config = ConfigDict(extra="allow", validate_assignment=True)
    name: str = Field(
        "multi_similarity",
        description="Base loss: a langdml.losses name (multi_similarity, proxy_anchor, triplet, "
        "arcface, ...) or pml:ClassName (the pml extra).",
    )


class S2SDConfig(_Strict):
    """S2SD (Roth et al., ICML 2021; langdml.losses.S2SDLoss): auxiliary MLP heads of these
    sizes are trained with the base loss and distilled into the target embedding; empty = off.
    Defaults of the authors' code: T = 1, weight 50, feature weight 50 after 1000 steps."""

    dims: list[int] = Field(
        default_factory=list, description="Auxiliary head sizes, e.g. [512, 1024]; [] = off."
    )
    temperature: float = Field(1.0, gt=0, description="Softmax temperature of the distillation.")
    weight: float = Field(50.0, ge=0, description="Weight of the head-to-target distillation.")
    feature_weight: float = Field(
        50.0, ge=0, description="Weight of the feature-to-target distillation."
    )
    feature_delay: int = Field(
        1000, ge=0, description="Training steps before feature distillation starts."
    )

    @field_validator("dims")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(d < 2 for d in value):
            raise ValueError(f"every S2SD head size must be >= 2, got {value}")
        return value


class LossConfig(_Strict):
    base: BaseLossConfig = Field(default_factory=BaseLossConfig)
    regularizers: list[str] = Field(
        default_factory=list,
        description="Terms added to the base loss: none, language, direction or "
        "language+direction (a list works too).",
    )
    language: LanguageConfig = Field(default_factory=LanguageConfig)
    direction: DirectionConfig = Field(default_factory=DirectionConfig)
    s2sd: S2SDConfig = Field(default_factory=S2SDConfig)

    @field_validator("regularizers", mode="before")
    @classmethod
    def _parse_regularizers(cls, value: Any) -> list[str]:
        """Accept a list, ``"none"``, or ``"language+direction"`` (the ablation grid's spelling)."""
        if value is None:
            return []
        if isinstance(value, str):
            value = [] if value.strip().lower() in ("", "none") else value.split("+")
        names = [str(v).strip() for v in value]
        for n in names:
            if n not in REGULARIZERS:
                raise ValueError(f"unknown regularizer {n!r}; expected {' / '.join(REGULARIZERS)}")
        return names

    @property
    def regularizer_label(self) -> str:
        return "+".join(self.regularizers) if self.regularizers else "none"


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


class EvalConfig(_Strict):
    every: int = Field(5, ge=1, description="Evaluate every N epochs (and after the last).")
    best_metric: str = Field(
        "recall@1", description="Metric that picks best.pt: recall@K, map@r, r_precision, nmi, ami."
    )
    recall_at: list[int] = Field(
        default_factory=lambda: [1, 2, 4, 8],
        description="The k of recall@k (train, evaluate, ablate), e.g. [1, 10, 100, 1000] for SOP.",
    )
    clustering: bool = Field(
        True, description="Also compute NMI, AMI and the pairwise F1 (k-means)."
    )
    metric: Literal["cosine", "euclidean"] = Field(
        "cosine", description="Similarity of the kNN retrieval."
    )
    # After training, also measure image <-> class-name retrieval on the held-out classes
    # (langdml.xmodal.xmodal_for_run); the ablation table then gets cross-modal columns.
    xmodal: bool = False
    # kNN search of the metrics: exact (default) or an approximate faiss index for large eval
    # sets (langdml.eval.ann), e.g. search: ivf, search_params: {nprobe: 128}; approximate runs
    # also report neighbor_recall.
    search: Literal["exact", "ivf", "hnsw"] = "exact"
    search_params: dict[str, Any] = Field(
        default_factory=dict, description="Options of the approximate index (see search)."
    )
    hierarchy: str | None = Field(
        None,
        description="Class hierarchy of the mistake-severity metrics: a CSV/TSV file of "
        "class_name,group[/subgroup]; null: the dataset's own (emoji: Unicode group/subgroup); "
        "none: off.",
    )

    @field_validator("recall_at")
    @classmethod
    def _check_recall_at(cls, ks: list[int]) -> list[int]:
        if not ks or any(k < 1 for k in ks) or len(set(ks)) != len(ks):
            raise ValueError(f"recall_at must be distinct positive integers, got {ks}")
        return sorted(ks)

    @model_validator(mode="after")
    def _check_search(self) -> EvalConfig:
        from langdml.eval.ann import check_search

        check_search(self.search, self.search_params)
        k = self.best_metric[7:] if self.best_metric.startswith("recall@") else ""
        if k.isdigit() and int(k) not in self.recall_at:
            raise ValueError(
                f"eval.best_metric {self.best_metric!r} needs {k} in eval.recall_at "
                f"{self.recall_at}"
            )
        names = [f"recall@{k}" for k in self.recall_at] + ["map@r", "r_precision", "map@1000"]
        names += ["nmi", "ami", "f1"] if self.clustering else []
        if self.best_metric not in names:
            near = difflib.get_close_matches(self.best_metric, names, n=1)
            raise ValueError(
                f"best_metric {self.best_metric!r} is not a metric this evaluation computes; "
                + (f"did you mean {near[0]!r}? " if near else "")
                + f"expected one of {', '.join(names)}"
            )
        return self


class ExperimentConfig(_Strict):
    name: str = Field("experiment", description="Run name.")
    seed: int = Field(0, description="Random seed (sampling, initialisation, name shuffling).")
    output_dir: str | None = Field(
        None, description="Run directory; null: runs/NAME in the working directory."
    )
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    text: TextConfig = Field(default_factory=TextConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @model_validator(mode="before")
    @classmethod
    def _migrate(cls, tree: Any) -> Any:
        return migrate_config(tree) if isinstance(tree, dict) else tree

    @model_validator(mode="after")
    def _warm_up(self) -> ExperimentConfig:
        n = self.train.frozen_trunk_epochs
        if n and (self.model.trainable_blocks == 0 or n >= self.train.epochs):
            raise ValueError(
                f"train.frozen_trunk_epochs {n} needs a trained trunk (model.trainable_blocks "
                f"not 0) and fewer than train.epochs ({self.train.epochs})"
            )
        return self

    def run_dir(self) -> Path:
        return Path(self.output_dir or Path("runs") / self.name)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# ---------------------------------------------------------------------------------------------
# Keys of older releases


# Keys of the previous release → their place now (dotted). Old run directories keep loading.
RENAMED_KEYS: dict[str, str] = {
    **{f"loss.language.{k}": f"text.{k}" for k in TEXT_KEYS},
    "loss.language.level": "loss.language.mode",  # one vocabulary: the loss's ``mode``
}


def migrate_config(tree: dict, source: str = "config") -> dict:
    """Move the keys of the previous release (RENAMED_KEYS) to their new place, with a one-line
    deprecation message; a key given both ways with different values is an error."""
    found = [
        old for old in RENAMED_KEYS if old.rpartition(".")[2] in (_section(tree, old, False) or {})
    ]
    if not found:
        return tree
    tree = copy.deepcopy(tree)
    for old in found:
        new = RENAMED_KEYS[old]
        value = _section(tree, old, False).pop(old.rpartition(".")[2])
        target, key = _section(tree, new, True), new.rpartition(".")[2]
        if key in target and target[key] != value:
            raise ConfigError(
                f"{source}: {old} ({value!r}) and {new} ({target[key]!r}) disagree; keep {new}"
            )
        target[key] = value
    deprecated(
        f"{source}: {', '.join(found)} moved to {', '.join(RENAMED_KEYS[o] for o in found)}; "
        "the old keys work for one release"
    )
    return tree


# ---------------------------------------------------------------------------------------------
# Loading, overrides and error messages


def validate_config(tree: dict) -> ExperimentConfig:
    try:
        return ExperimentConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc.errors()[0], ExperimentConfig)) from None


def load_config(
    path: str | os.PathLike | None = None, overrides: list[str] | dict[str, Any] | None = None
) -> ExperimentConfig:
    """Load YAML (optional), apply dotted overrides, validate."""
    tree = load_yaml(path) if path is not None else {}
    return validate_config(apply_overrides(tree, overrides or []))


def dump_yaml(config: ExperimentConfig) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
