"""Every experiment-config key carries a description: the config reference is generated from
them, so a key without one would appear there unexplained."""

from __future__ import annotations

from pydantic import BaseModel

from langdml.config import ExperimentConfig


def _undescribed(model: type[BaseModel], prefix: str = "") -> list[str]:
    missing = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            missing += _undescribed(ann, f"{prefix}{name}.")
        elif not (field.description or "").strip():
            missing.append(prefix + name)
    return missing


def test_every_config_key_has_a_description():
    assert _undescribed(ExperimentConfig) == []
