"""The text side of a run: whether it uses text, and the train classes' text embeddings (class
names or pseudo-labels, optionally shuffled as a control)."""

from __future__ import annotations

import torch

from langdml.config import ExperimentConfig
from langdml.data import ImageDataset
from langdml.io import text_cache_dir
from langdml.losses.registry import TEXT_PROXY_BASES


def uses_text_proxies(cfg: ExperimentConfig) -> bool:
    """Base losses whose proxies are projected class-name embeddings (language as proxies)."""
    return cfg.loss.base.name in TEXT_PROXY_BASES


def needs_text(cfg: ExperimentConfig) -> bool:
    return "language" in cfg.loss.regularizers or uses_text_proxies(cfg)


def class_text_embeddings(cfg: ExperimentConfig, train: ImageDataset) -> torch.Tensor | None:
    """(C, d) class-name or (C, k, d) pseudo-label embeddings of the TRAIN classes, cached under
    ``<data.cache_dir>/text`` — the file ``langdml precompute --dataset`` writes."""
    if not needs_text(cfg):
        return None
    from langdml import text
    from langdml.text.precompute import distinct_name_embeddings

    t = cfg.text
    kwargs = dict(
        model=t.text_model,
        prompts=t.prompts,
        cache_dir=text_cache_dir(cfg.data.cache_dir),
        device=cfg.train.device,
    )
    if t.pseudo_labels:
        found = text.pseudo_label_embeddings(
            train,
            k=t.top_k,
            allow_duplicates=train.shares_names,
            image_size=t.pseudo_label_image_size,
            classifier=t.pseudo_label_model,
            crop_pct=t.pseudo_label_crop_pct,
            **kwargs,
        )
        emb = found.embeddings.float()
    else:
        found, rows = distinct_name_embeddings(train.class_names, **kwargs)
        emb = found.embeddings.float()[torch.as_tensor(rows)]
    if cfg.loss.language.shuffled_names:
        emb = emb[shuffled_classes(emb.shape[0], cfg.seed)]
    return emb


def shuffled_classes(num_classes: int, seed: int) -> torch.Tensor:
    """The shuffled-names control's permutation: class c gets the text embedding of class
    perm[c]. Seeded by the run seed, so seeds average over permutations; the stream is separate
    from training's."""
    generator = torch.Generator().manual_seed(1_000_003 + seed)
    return torch.randperm(num_classes, generator=generator)
