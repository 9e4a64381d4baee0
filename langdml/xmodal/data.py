"""Inputs of the cross-modal methods: the class-disjoint split, frozen features, class-name text.

Everything goes through the same code the trainer uses (``prepare_data``, the feature cache, the
text-embedding cache), so a cross-modal number and an image-retrieval number of the same setting
are computed on the same images and classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from langdml.data import ImageDataset
from langdml.data.names import distinct_names
from langdml.errors import LangDMLError
from langdml.io import text_cache_dir


@dataclass
class SplitFeatures:
    """The train and test halves of a dataset with clean-view frozen-trunk features."""

    train: ImageDataset
    test: ImageDataset
    train_features: torch.Tensor  # (N_train, D)
    test_features: torch.Tensor  # (N_test, D)
    feature_spec: dict


def feature_config(
    dataset: str,
    image_size: int = 128,
    backbone: str = "tf_efficientnet_lite0",
    weights: str = "packaged",
    train_fraction: float = 0.5,
    cache_dir: str | Path | None = None,
    device: str = "cpu",
):
    """An ExperimentConfig describing a frozen-trunk setting (for ``prepare_data``)."""
    from langdml.config import load_config

    return load_config(
        overrides={
            "data.dataset": dataset,
            "data.train_fraction": train_fraction,
            "data.cache_dir": None if cache_dir is None else str(cache_dir),
            "model.frozen_trunk": True,
            "model.backbone": backbone,
            "model.weights": weights,
            "model.image_size": image_size,
            "train.device": device,
            "train.progress": False,
        }
    )


def split_features(dataset: str, image_size: int = 128, **setting: Any) -> SplitFeatures:
    """Class-disjoint split (first ``train_fraction`` of classes train, rest test) with cached
    frozen features of the clean (un-augmented) view of every image. ``setting``: the other
    arguments of :func:`feature_config` (backbone, weights, train_fraction, cache_dir, device)."""
    from langdml.experiment import prepare_data

    cfg = feature_config(dataset, image_size, **setting)
    data = prepare_data(cfg)
    return SplitFeatures(
        train=data.train,
        test=data.eval,
        train_features=data.train_features[0].float(),
        test_features=data.eval_features.float(),
        feature_spec={
            "backbone": cfg.model.backbone,
            "weights": cfg.model.weights,
            "image_size": image_size,
        },
    )


__all__ = ["ClassTexts", "class_texts", "split_features"]


@dataclass
class ClassTexts:
    """Distinct class-name texts of a split and the map from class id to text row.

    Classes that share a name (SOP's super-classes) share one text row, so cross-modal
    retrieval is at the level of distinct names: ``text_of_class[c]`` is class c's row.
    """

    names: list[str]  # distinct names, first-appearance order
    embeddings: torch.Tensor  # (len(names), d) unit rows
    text_of_class: np.ndarray  # (C,) int64

    def image_labels(self, class_labels: np.ndarray) -> np.ndarray:
        """Image class ids → text-row ids."""
        return self.text_of_class[np.asarray(class_labels, dtype=np.int64)]


def rows_for_names(
    table_names: Sequence[str], table: torch.Tensor, wanted: Sequence[str], source: str
) -> torch.Tensor:
    """Rows of ``table`` (one per ``table_names``) for ``wanted``; a missing name is an error."""
    index = {n: i for i, n in enumerate(table_names)}
    missing = [n for n in wanted if n not in index]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise LangDMLError(
            f"class names {missing[:3]!r}{more} are missing from {source} (it has "
            f"{len(table_names)} names); precompute embeddings for these classes, e.g. "
            "langdml precompute --dataset SPEC --split all"
        )
    return table[torch.as_tensor([index[n] for n in wanted], dtype=torch.long)]


def class_texts(
    class_names: Sequence[str],
    text_model: str = "minilm",
    prompts: str | Sequence[str] | None = None,
    dataset: str | None = None,
    cache_dir: str | Path | None = None,
    device: str = "cpu",
    text_embeddings: str | Path | None = None,
) -> ClassTexts:
    """Unit text embeddings of the distinct ``class_names``.

    From ``text_embeddings`` (a cache file written by ``langdml precompute``, which must contain
    every name) when given, else computed (and cached under ``<cache_dir>/text``) with
    ``text_model`` and ``prompts``, cleaning names the way the dataset kind wants.
    """
    names, text_of_class = distinct_names(class_names)
    if text_embeddings is None:
        from langdml.text.precompute import distinct_name_embeddings

        found, _ = distinct_name_embeddings(
            names,
            model=text_model,
            prompts=prompts,
            cache_dir=text_cache_dir(cache_dir),
            device=device,
        )
        emb = found.embeddings.float()
    else:
        from langdml.text import load_text_embeddings

        loaded = load_text_embeddings(text_embeddings)
        if loaded.embeddings.ndim != 2:
            raise LangDMLError(
                f"text-embedding file {str(text_embeddings)!r} holds pseudo-label embeddings "
                f"{tuple(loaded.embeddings.shape)}; cross-modal retrieval needs class-name "
                "embeddings (C, d)"
            )
        emb = rows_for_names(
            loaded.class_names,
            loaded.embeddings.float(),
            names,
            f"text-embedding file {str(text_embeddings)!r}",
        )
    return ClassTexts(names, torch.nn.functional.normalize(emb, dim=-1), text_of_class)
