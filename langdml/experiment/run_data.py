"""What a run trains and evaluates on: the class-disjoint split of its dataset (a split
file's, or a validation split or fold carved from the train classes when asked), the cached
trunk features of frozen-trunk runs, and the eval classes' group codes; a bad class hierarchy or
descriptions file fails here, before any work."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from langdml.config import ExperimentConfig
from langdml.data import ClassSplits, ImageDataset, class_splits, load_dataset
from langdml.errors import ConfigError
from langdml.experiment.class_text import check_run_descriptions
from langdml.experiment.preprocessing import run_preprocessing
from langdml.models import FeatureSpec

# Why a run without a validation split has no best epoch (metrics.json["best_unavailable"]).
NO_BEST = (
    "no validation split (data.validation_fraction and data.folds are 0, no val rows in a split "
    "file): choosing the best "
    "epoch on the test classes would be model selection on test data; use the final epoch, or "
    "set data.validation_fraction > 0 (or data.folds K) to select on held-out training classes"
)


def has_validation(cfg: ExperimentConfig) -> bool:
    """Whether a run evaluates (and picks its best epoch) on held-out TRAIN classes: a
    validation fraction, folds, or a split file with val rows."""
    from langdml.data.split_file import split_file_parts

    d = cfg.data
    if d.validation_fraction > 0 or d.folds > 0:
        return True
    return d.split_file is not None and "val" in split_file_parts(d.split_file)


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


def prepare_data(cfg: ExperimentConfig, split: str | None = None) -> RunData:
    """Class-disjoint split (a split file's, or a validation split carved from train classes,
    or fold ``data.fold`` of ``data.folds`` class-disjoint folds of them) + features; the run
    evaluates on ``split`` ("val" or "test"; None: val when the split has one, else test)."""
    dataset = load_dataset(cfg.data.dataset, cache_dir=cfg.data.cache_dir)
    splits = run_class_splits(cfg, dataset)
    eval_split = splits.eval_split if split is None else split
    data = RunData(train=splits.train, eval=splits.part(eval_split), eval_split=eval_split)
    data.group_codes = eval_group_codes(cfg, dataset.name, data.eval)
    _check_roles_searchable(cfg, data.eval)
    check_run_descriptions(cfg, dataset, data.train)
    if cfg.model.frozen_trunk or cfg.model.partial_blocks:
        _attach_features(cfg, dataset, data)
    return data


def _check_roles_searchable(cfg: ExperimentConfig, held_out: ImageDataset) -> None:
    """A re-ranked search cannot leave a query out of a gallery that holds it: refused before
    training, not at its first evaluation."""
    from langdml.data.roles import eval_roles

    roles = eval_roles(held_out)
    if cfg.eval.rerank != "none" and roles is not None and (roles.self_index >= 0).any():
        raise ConfigError(
            f"eval.rerank {cfg.eval.rerank!r} cannot search a gallery that holds the queries "
            "(split file rows that are both is_query and is_gallery); set eval.rerank: none or "
            "make queries and gallery disjoint"
        )


def run_class_splits(cfg: ExperimentConfig, dataset: ImageDataset) -> ClassSplits:
    """The class split of ``dataset`` under the run's ``data`` settings (``data.splits``)."""
    d = cfg.data
    return class_splits(
        dataset,
        d.train_fraction,
        d.validation_fraction,
        d.folds,
        d.fold,
        split_file=d.split_file,
        class_order=d.class_order,
        split_seed=d.split_seed,
    )


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
    m, pre = cfg.model, run_preprocessing(cfg)
    return FeatureSpec(
        m.backbone,
        m.weights,
        pre.image_size,
        augment_views,
        pre.crop_pct,
        prefix_blocks=prefix,
        pooling=m.pooling,
        crop_scale=tuple(m.crop_scale),
        interpolation=pre.interpolation,
        backbone_kwargs=tuple(sorted(m.backbone_kwargs.items())),
        floor_scale=pre.floor_scale,
    )
