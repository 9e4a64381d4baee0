"""The text side of a run: whether it uses text, and the train classes' language target (class
names, descriptions, pseudo-labels or several of them, optionally shuffled as a control)."""

from __future__ import annotations

import torch

from langdml.config import ExperimentConfig
from langdml.data import ImageDataset
from langdml.io import text_cache_dir
from langdml.losses.registry import TEXT_PROXY_BASES
from langdml.losses.registry import needs_text as regularizers_need_text
from langdml.text.descriptions import ClassDescriptions


def uses_text_proxies(cfg: ExperimentConfig) -> bool:
    """Base losses whose proxies are projected class-name embeddings (language as proxies)."""
    return cfg.loss.base.name in TEXT_PROXY_BASES


def needs_text(cfg: ExperimentConfig) -> bool:
    return regularizers_need_text(cfg.loss.regularizers) or uses_text_proxies(cfg)


def class_text_embeddings(cfg: ExperimentConfig, train: ImageDataset) -> torch.Tensor | None:
    """The TRAIN classes' language target under ``text.target`` (:mod:`langdml.text.targets`):
    (C, d) for one view (class names, descriptions), (C, k, d) for pseudo-labels, (C, V, d) for
    several sources, cached under ``<data.cache_dir>/text`` — the files ``langdml precompute
    --dataset`` writes."""
    if not needs_text(cfg):
        return None
    from langdml.text.targets import class_text_target

    t = cfg.text
    emb = class_text_target(
        train,
        t.sources,
        descriptions=run_descriptions(cfg),
        pseudo_labels=dict(
            k=t.top_k,
            image_size=t.pseudo_label_image_size,
            classifier=t.pseudo_label_model,
            crop_pct=t.pseudo_label_crop_pct,
        ),
        model=t.text_model,
        prompts=t.prompts,
        cache_dir=text_cache_dir(cfg.data.cache_dir),
        device=cfg.train.device,
    )
    if cfg.loss.language.shuffled_names:
        emb = emb[shuffled_classes(emb.shape[0], cfg.seed)]
    return emb


def run_descriptions(cfg: ExperimentConfig) -> ClassDescriptions | None:
    """The parsed ``text.descriptions`` of a run (None when it has none)."""
    from langdml.text.descriptions import load_descriptions

    spec = cfg.text.descriptions
    return None if spec is None else load_descriptions(spec)


def check_run_descriptions(
    cfg: ExperimentConfig, dataset: ImageDataset, train: ImageDataset
) -> None:
    """Fail before any work on a bad ``text.descriptions``: a class the dataset does not have,
    or (descriptions without names in the target) a train class without a description."""
    if not needs_text(cfg) or cfg.text.descriptions is None:
        return
    found = run_descriptions(cfg)
    found.check_classes(dataset.class_names)
    found.for_classes(train.class_names, required="names" not in cfg.text.sources)


def shuffled_classes(num_classes: int, seed: int) -> torch.Tensor:
    """The shuffled-names control's permutation: class c gets the text embedding of class
    perm[c]. Seeded by the run seed, so seeds average over permutations; the stream is separate
    from training's."""
    generator = torch.Generator().manual_seed(1_000_003 + seed)
    return torch.randperm(num_classes, generator=generator)
