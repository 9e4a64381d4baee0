"""The experiment config (every section together) and loading it: YAML, dotted overrides,
validation with one-line errors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from langdml.config.base import _Strict
from langdml.config.data import DataConfig, check_augment
from langdml.config.evaluation import EvalConfig
from langdml.config.migrate import migrate_config
from langdml.config.model import ModelConfig
from langdml.config.text import TextConfig
from langdml.config.training import OptimizerConfig, TrainConfig, check_trunk_groups
from langdml.config.tree import _format_error, apply_overrides, load_yaml
from langdml.errors import ConfigError
from langdml.losses.spec import LossConfig


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

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        # the run folder is runs/NAME when output_dir is unset: NAME stays inside runs/
        from langdml.paths import escape_outside

        why = escape_outside(value)
        if why is not None:
            raise ValueError(
                f"{value!r} is refused: {why}; expected a name such as my_run (or a relative "
                "sub/path) that keeps the run folder inside runs/"
            )
        return value

    @model_validator(mode="after")
    def _training_options(self) -> ExperimentConfig:
        check_trunk_groups(self.model.trainable_blocks, self.optimizer)
        check_augment(self.data, self.model)
        return self

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
