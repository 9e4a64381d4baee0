"""What a run trains and evaluates on: the class-disjoint split of its dataset (a validation
split or fold carved from the train classes when asked), the cached trunk features of
frozen-trunk runs, and the eval classes' group codes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from langdml.config import ExperimentConfig
from langdml.data import ClassSplits, ImageDataset, class_splits, load_dataset
from langdml.models import FeatureSpec

# Why a run without a validation split has no best epoch (metrics.json["best_unavailable"]).
NO_BEST = (
    "no validation split (data.validation_fraction and data.folds are 0): choosing the best "
    "epoch on the test classes would be model selection on test data; use the final epoch, or "
    "set data.validation_fraction > 0 (or data.folds K) to select on held-out training classes"
)


def has_validation(cfg: ExperimentConfig) -> bool:
    """Whether a run evaluates (and picks its best epoch) on held-out TRAIN classes."""
    return cfg.data.validation_fraction > 0 or cfg.data.folds > 0


@dataclass
class RunData:
    """What a run trains and evaluates on; frozen-trunk runs carry cached features, partial
    fine-tuning runs the cached activations of the frozen trunk prefix."""

    train: ImageDataset
    eval: ImageDataset
    eval_split: str  # "test" or "val"
    # (V, N_train, D) pooled features, or (V, N_train, C, H, W) prefix activations (partial)
    train_features: torch.Tensor | None = None
    eval_features: torch.Tensor | None = None  # (N_eval, ...)
    # (C_eval, D) group codes of the eval classes in eval.hierarchy (None: no hierarchy)
    group_codes: np.ndarray | None = None


def prepare_data(cfg: ExperimentConfig) -> RunData:
    """Class-disjoint split (optionally a validation split carved from train classes, or fold
    ``data.fold`` of ``data.folds`` class-disjoint folds of them) + features."""
    dataset = load_dataset(cfg.data.dataset, cache_dir=cfg.data.cache_dir)
    splits = run_class_splits(cfg, dataset)
    data = RunData(train=splits.train, eval=splits.eval, eval_split=splits.eval_split)
    data.group_codes = eval_group_codes(cfg, dataset.name, data.eval)
    if cfg.model.frozen_trunk or cfg.model.partial_blocks:
        _attach_features(cfg, dataset, data)
    return data


def run_class_splits(cfg: ExperimentConfig, dataset: ImageDataset) -> ClassSplits:
    """The class split of ``dataset`` under the run's ``data`` settings (``data.splits``)."""
    d = cfg.data
    return class_splits(dataset, d.train_fraction, d.validation_fraction, d.folds, d.fold)


def eval_group_codes(
    cfg: ExperimentConfig, dataset_name: str, held_out: ImageDataset
) -> np.ndarray | None:
    """The eval classes' group codes in the run's class hierarchy (``langdml.data.hierarchy``),
    checked before training so a bad file fails in the first second, not after the last epoch."""
    from langdml.data.hierarchy import class_group_codes, resolve_hierarchy

    hierarchy = resolve_hierarchy(cfg.eval.hierarchy, dataset_name)
    return None if hierarchy is None else class_group_codes(held_out.class_names, hierarchy)


def _attach_features(cfg: ExperimentConfig, dataset: ImageDataset, data: RunData) -> None:
    from langdml.models import extract_features

    spec = feature_spec(cfg, cfg.model.augment_views, cfg.model.partial_blocks)
    feats = extract_features(
        dataset,
        spec,
        cache_dir=cfg.data.cache_dir,
        device=cfg.train.device,
        progress=cfg.train.progress,
    )
    # Map split members back to rows of the full dataset by their image items.
    row = {item: i for i, item in enumerate(dataset.images.items)}
    tr = torch.as_tensor([row[i] for i in data.train.images.items])
    ev = torch.as_tensor([row[i] for i in data.eval.images.items])
    data.train_features = feats.features[:, tr]
    data.eval_features = feats.features[0, ev]


def feature_spec(cfg: ExperimentConfig, augment_views: int = 0, prefix: int = 0) -> FeatureSpec:
    """The feature-cache spec of a frozen (or frozen-prefix) trunk under ``cfg``."""
    m = cfg.model
    return FeatureSpec(
        m.backbone,
        m.weights,
        m.image_size,
        augment_views,
        m.crop_pct,
        prefix_blocks=prefix,
        pooling=m.pooling,
        crop_scale=tuple(m.crop_scale),
        interpolation=m.interpolation,
    )
