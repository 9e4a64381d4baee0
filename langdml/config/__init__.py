"""Experiment configs: declarative YAML validated with pydantic.

An unknown or misspelled key is an error naming the key and the nearest valid one; dotted
overrides (``loss.language.weight=5``) apply on top of the YAML before validation. One module
per section (data, text, model, loss, training, evaluation), the experiment config that holds
them, the keys of older releases (``migrate``) and the YAML trees before validation (``tree``).
"""

from langdml.config.data import DataConfig
from langdml.config.evaluation import EvalConfig
from langdml.config.experiment import ExperimentConfig, dump_yaml, load_config, validate_config
from langdml.config.migrate import RENAMED_KEYS, migrate_config
from langdml.config.model import ModelConfig
from langdml.config.text import TEXT_KEYS, TextConfig
from langdml.config.training import OptimizerConfig, TrainConfig
from langdml.config.tree import (  # noqa: F401  (_format_error: xmodal's config reports alike)
    _format_error,
    apply_overrides,
    deprecated,
    load_yaml,
    parse_value,
    set_dotted,
)
from langdml.losses.direction_settings import DirectionConfig
from langdml.losses.language_settings import LanguageConfig
from langdml.losses.spec import (  # the loss section is the loss library's schema
    BaseLossConfig,
    LossConfig,
    S2SDConfig,
)

__all__ = [
    "RENAMED_KEYS",
    "TEXT_KEYS",
    "BaseLossConfig",
    "DataConfig",
    "DirectionConfig",
    "EvalConfig",
    "ExperimentConfig",
    "LanguageConfig",
    "LossConfig",
    "ModelConfig",
    "OptimizerConfig",
    "S2SDConfig",
    "TextConfig",
    "TrainConfig",
    "apply_overrides",
    "deprecated",
    "dump_yaml",
    "load_config",
    "load_yaml",
    "migrate_config",
    "parse_value",
    "set_dotted",
    "validate_config",
]
