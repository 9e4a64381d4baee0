"""Experiment configs: declarative YAML validated with pydantic.

An unknown or misspelled key is an error naming the key and the nearest valid one; dotted
overrides (``loss.language.weight=5``) apply on top of the YAML before validation.
"""

from __future__ import annotations

import copy
import difflib
import os
import sys
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from langdml.errors import ConfigError
from langdml.losses.vocab import REGULARIZERS


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Strict):
    dataset: str = "emoji"
    train_fraction: float = Field(0.5, gt=0, lt=1)
    # > 0 carves a validation split from the TRAIN classes (the last fraction of them) and
    # evaluates on it instead of the test classes: the way to tune without seeing test classes.
    validation_fraction: float = Field(0.0, ge=0, lt=1)
    cache_dir: str | None = None


class ModelConfig(_Strict):
    backbone: str = "tf_efficientnet_lite0"
    weights: str = "packaged"
    frozen_trunk: bool = True
    image_size: int = Field(128, ge=16)
    augment_views: int = Field(0, ge=0)
    crop_pct: float | None = None
    embedding_dim: int = Field(128, ge=2)
    head: Literal["linear", "mlp", "identity"] = "linear"
    frozen_bn: bool = True


class TextConfig(_Strict):
    """The text side, shared by language guidance, text-proxy losses and xmodal."""

    text_model: str = "minilm"
    prompts: list[str] = Field(default_factory=lambda: ["a photo of a {}"])
    pseudo_labels: bool = False  # PLG: top-k ImageNet names per class instead of class names
    top_k: int = Field(5, ge=1)


TEXT_KEYS = tuple(TextConfig.model_fields)


class LanguageConfig(_Strict):
    weight: float = Field(1.0, ge=0)
    temperature: float = Field(1.0, gt=0)
    shift: float = 1.0
    direction: Literal["backward", "forward"] = "backward"
    # batch: the batch's image similarities; proxy: the base loss's proxy-proxy similarities
    mode: Literal["batch", "proxy"] = "batch"
    # Control: each train class gets the text embedding of another train class (a permutation
    # seeded by the run's seed), so the target keeps its similarity spectrum but loses meaning.
    shuffled_names: bool = False


class DirectionConfig(_Strict):
    # integrated: DR-Triplet / DR-ProxyNCA / DR-MS, weight = γ inside the base loss (the public
    # reproductions use γ ≈ 0.3-0.49); orthogonal: the project's own additive penalty.
    weight: float = Field(0.3, ge=0)
    form: Literal["integrated", "orthogonal"] = "integrated"
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
    name: str = "multi_similarity"


class S2SDConfig(_Strict):
    """S2SD (Roth et al., ICML 2021; langdml.losses.S2SDLoss): auxiliary MLP heads of these
    sizes are trained with the base loss and distilled into the target embedding; empty = off.
    Defaults of the authors' code: T = 1, weight 50, feature weight 50 after 1000 steps."""

    dims: list[int] = Field(default_factory=list)
    temperature: float = Field(1.0, gt=0)
    weight: float = Field(50.0, ge=0)
    feature_weight: float = Field(50.0, ge=0)
    feature_delay: int = Field(1000, ge=0)

    @field_validator("dims")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(d < 2 for d in value):
            raise ValueError(f"every S2SD head size must be >= 2, got {value}")
        return value


class LossConfig(_Strict):
    base: BaseLossConfig = Field(default_factory=BaseLossConfig)
    regularizers: list[str] = Field(default_factory=list)
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
    name: Literal["adam", "adamw", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    # Proxy losses need a much larger learning rate on their proxies (Proxy Anchor: x100).
    proxy_lr_multiplier: float = Field(100.0, gt=0)
    momentum: float = 0.9


class TrainConfig(_Strict):
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(64, ge=2)
    m_per_class: int = Field(2, ge=1)
    iterations_per_epoch: int | None = Field(None, ge=1)
    scheduler: Literal["none", "cosine", "step"] = "cosine"
    warmup_epochs: int = Field(0, ge=0)
    device: str = "cpu"
    amp: bool = False
    # bfloat16 needs no loss scaling; float16 (GPUs without bf16) runs with a GradScaler.
    amp_dtype: Literal["bfloat16", "float16"] = "bfloat16"
    num_workers: int = Field(0, ge=0)
    grad_clip: float | None = None
    progress: bool = True

    @model_validator(mode="after")
    def _divisible(self) -> TrainConfig:
        if self.batch_size % self.m_per_class:
            raise ValueError(
                f"batch_size {self.batch_size} is not divisible by m_per_class {self.m_per_class}"
            )
        return self


class EvalConfig(_Strict):
    every: int = Field(5, ge=1)
    best_metric: str = "recall@1"
    clustering: bool = True
    metric: Literal["cosine", "euclidean"] = "cosine"
    # After training, also measure image <-> class-name retrieval on the held-out classes
    # (langdml.xmodal.xmodal_for_run); the ablation table then gets cross-modal columns.
    xmodal: bool = False


class ExperimentConfig(_Strict):
    name: str = "experiment"
    seed: int = 0
    output_dir: str | None = None
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

    def run_dir(self) -> Path:
        return Path(self.output_dir or Path("runs") / self.name)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# ---------------------------------------------------------------------------------------------
# Keys of older releases


def deprecated(message: str) -> None:
    """A one-line deprecation message on stderr (once per message and process)."""
    if message not in _SAID:
        _SAID.add(message)
        print(f"langdml: deprecated: {message}", file=sys.stderr)


_SAID: set[str] = set()


# Keys of the previous release → their place now (dotted). Old run directories keep loading.
RENAMED_KEYS: dict[str, str] = {
    **{f"loss.language.{k}": f"text.{k}" for k in TEXT_KEYS},
    "loss.language.level": "loss.language.mode",  # one vocabulary: the loss's ``mode``
}


def _section(tree: dict, dotted: str, create: bool) -> dict | None:
    node = tree
    for key in dotted.split(".")[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            if not create:
                return None
            child = node[key] = {}
        node = child
    return node


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


def _field_names(model: type[BaseModel], loc: tuple) -> list[str]:
    """Valid keys at ``loc`` (a pydantic error location), for 'did you mean' hints."""
    for part in loc:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return list(model.model_fields)
        model = ann
    return list(model.model_fields)


def _format_error(err: dict, root: type[BaseModel]) -> str:
    loc = tuple(err["loc"])
    dotted = ".".join(str(p) for p in loc)
    if err["type"] == "extra_forbidden":
        valid = _field_names(root, loc[:-1])
        near = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.5)
        hint = f"; did you mean {'.'.join([*map(str, loc[:-1]), near[0]])!r}?" if near else ""
        return f"unknown config key {dotted!r}{hint} (valid here: {', '.join(valid)})"
    msg = err["msg"].removeprefix("Value error, ")
    value = err.get("input")
    shown = f" (got {value!r})" if not isinstance(value, dict | list) and dotted else ""
    return f"config key {dotted or '<root>'!r}: {msg}{shown}"


def parse_value(text: str) -> Any:
    """A CLI override value parsed as YAML: ``5`` → int, ``[a, b]`` → list."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def set_dotted(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        child = node.get(k)
        if child is None:
            child = node[k] = {}
        elif not isinstance(child, dict):
            raise ConfigError(f"cannot set {dotted!r}: {k!r} holds a value, not a section")
        node = child
    node[keys[-1]] = value


def apply_overrides(tree: dict, overrides: list[str] | dict[str, Any]) -> dict:
    items = (
        overrides.items()
        if isinstance(overrides, dict)
        else [_split_override(o) for o in overrides]
    )
    for key, value in items:
        set_dotted(tree, key, value)
    return tree


def _split_override(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} must look like dotted.key=value")
    return key.strip(), parse_value(value)


def validate_config(tree: dict) -> ExperimentConfig:
    try:
        return ExperimentConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc.errors()[0], ExperimentConfig)) from None


def load_yaml(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}".splitlines()[0]) from None
    if not isinstance(tree, dict):
        raise ConfigError(f"config file {path} must hold a mapping, got {type(tree).__name__}")
    return tree


def load_config(
    path: str | os.PathLike | None = None, overrides: list[str] | dict[str, Any] | None = None
) -> ExperimentConfig:
    """Load YAML (optional), apply dotted overrides, validate."""
    tree = load_yaml(path) if path is not None else {}
    return validate_config(apply_overrides(tree, overrides or []))


def dump_yaml(config: ExperimentConfig) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)
