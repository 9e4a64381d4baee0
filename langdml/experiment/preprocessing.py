"""A run's image preprocessing: the one :class:`~langdml.models.preprocess.Preprocessing` its
config resolves to (``model.preprocessing``, ``model.image_size`` / ``crop_pct`` /
``interpolation``, each possibly ``pretrained``). Training, evaluation, the feature cache,
``embed`` and export all ask here."""

from __future__ import annotations

from langdml.config import ExperimentConfig
from langdml.models.preprocess import Preprocessing, resolve_preprocessing


def run_preprocessing(cfg: ExperimentConfig) -> Preprocessing:
    """The run's image preprocessing (``langdml.models.preprocess``)."""
    m = cfg.model
    return resolve_preprocessing(
        m.backbone, m.image_size, m.crop_pct, m.interpolation, m.weights, m.backbone_kwargs
    )


def image_normalisation(cfg: ExperimentConfig) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of the backbone's pretrained config (timm's or the open_clip tower's),
    ImageNet's for a timm architecture without one."""
    pre = run_preprocessing(cfg)
    return pre.mean, pre.std
