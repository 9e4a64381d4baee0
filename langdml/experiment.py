"""The assembly layer: an experiment config → data split (+ frozen features), text embeddings,
model and loss; and :func:`open_run`, the one way to reopen a finished run.

Every stage that needs these pieces — the trainer (``langdml.train``), ``evaluate``, ``xmodal``,
the ablation runner — asks here, so they all see the same images, classes, text and weights.
This module imports the library layers (data, text, models, losses) and nothing above them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from langdml.config import ExperimentConfig, load_yaml, migrate_config, validate_config
from langdml.data import ImageDataset, class_disjoint_split, class_fold_split, load_dataset
from langdml.data.records import query_gallery
from langdml.errors import ConfigError, LangDMLError
from langdml.eval.collapse import warn_if_collapsed
from langdml.io import text_cache_dir
from langdml.losses.vocab import TEXT_PROXY_BASES
from langdml.models import EmbeddingHead, EmbeddingModel, FeatureSpec, create_backbone
from langdml.models.preprocess import Preprocessing, resolve_preprocessing
from langdml.run_files import CHECKPOINT, CHECKPOINTS, CONFIG, PREVIOUS, open_checkpoint

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


# ---------------------------------------------------------------------------------------------
# config → pieces


def prepare_data(cfg: ExperimentConfig) -> RunData:
    """Class-disjoint split (optionally a validation split carved from train classes, or fold
    ``data.fold`` of ``data.folds`` class-disjoint folds of them) + features."""
    dataset = load_dataset(cfg.data.dataset, cache_dir=cfg.data.cache_dir)
    split = class_disjoint_split(dataset, cfg.data.train_fraction)
    train, held_out, name = split.train, split.test, "test"
    if cfg.data.validation_fraction > 0:
        inner = class_disjoint_split(train, 1.0 - cfg.data.validation_fraction)
        train, held_out, name = inner.train, inner.test, "val"
    elif cfg.data.folds:
        inner = class_fold_split(train, cfg.data.folds, cfg.data.fold)
        train, held_out, name = inner.train, inner.test, "val"
    data = RunData(train=train, eval=held_out, eval_split=name)
    data.group_codes = eval_group_codes(cfg, dataset.name, held_out)
    if cfg.model.frozen_trunk or cfg.model.partial_blocks:
        _attach_features(cfg, dataset, data)
    return data


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
        dataset, spec, cache_dir=cfg.data.cache_dir, device=cfg.train.device,
        progress=cfg.train.progress,
    )  # fmt: skip
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
        m.backbone, m.weights, pre.image_size, augment_views, pre.crop_pct, prefix_blocks=prefix,
        pooling=m.pooling, crop_scale=tuple(m.crop_scale), interpolation=pre.interpolation,
        backbone_kwargs=tuple(sorted(m.backbone_kwargs.items())), floor_scale=pre.floor_scale,
    )  # fmt: skip


def run_preprocessing(cfg: ExperimentConfig) -> Preprocessing:
    """The run's image preprocessing (``langdml.models.preprocess``)."""
    m = cfg.model
    return resolve_preprocessing(
        m.backbone, m.image_size, m.crop_pct, m.interpolation, m.weights, m.backbone_kwargs
    )


def trunk(cfg: ExperimentConfig, **options: Any):
    """The run's configured trunk and its ``BackboneInfo`` (``models.create_backbone``)."""
    m = cfg.model
    return create_backbone(
        m.backbone, m.weights, pooling=m.pooling, kwargs=m.backbone_kwargs,
        image_size=run_preprocessing(cfg).image_size, **options,
    )  # fmt: skip


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
            train, k=t.top_k, allow_duplicates=train.shares_names,
            image_size=t.pseudo_label_image_size, classifier=t.pseudo_label_model,
            crop_pct=t.pseudo_label_crop_pct, **kwargs,
        )  # fmt: skip
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


def loss_spec(cfg: ExperimentConfig) -> dict[str, Any]:
    """The loss library's plain-dict spec from the typed config."""
    regs = []
    for name in cfg.loss.regularizers:
        if name == "language":
            lang = cfg.loss.language
            regs.append(
                {
                    "name": "language",
                    "weight": lang.weight,
                    "temperature": lang.temperature,
                    "shift": lang.shift,
                    "direction": lang.direction,
                    "mode": lang.mode,
                }
            )
        else:
            regs.append({"name": "direction", **cfg.loss.direction.model_dump()})
    return {"base": cfg.loss.base.model_dump(), "regularizers": regs}


def build_model(cfg: ExperimentConfig, data: RunData) -> EmbeddingModel:
    backbone = None
    if cfg.model.frozen_trunk:
        in_dim = int(data.train_features.shape[-1])
    elif cfg.model.partial_blocks:
        # Partial fine-tuning: the inputs are the cached prefix activations; the model is the
        # trainable suffix (models.trunk_split) + head.
        from langdml.models import freeze_batchnorm
        from langdml.models.backbones import split_trunk

        full, info = trunk(cfg)
        backbone = split_trunk(full, cfg.model.partial_blocks)[1]
        if cfg.model.frozen_bn:
            freeze_batchnorm(backbone)
        in_dim = info.feature_dim
    else:
        backbone, info = trunk(cfg, frozen_bn=cfg.model.frozen_bn)
        in_dim = info.feature_dim
    head = EmbeddingHead(in_dim, cfg.model.embedding_dim, cfg.model.head)
    # S2SD's auxiliary heads: Linear(f, d)-ReLU-Linear(d, d) on the pooled features, as its paper.
    aux = [EmbeddingHead(in_dim, d, "mlp", hidden_dim=d) for d in cfg.loss.s2sd.dims]
    return EmbeddingModel(head, backbone, aux or None)


def build_run_loss(
    cfg: ExperimentConfig, data: RunData, text_embeddings: torch.Tensor | None
) -> torch.nn.Module:
    """The CombinedLoss of a run (base + regularizers), on the CPU."""
    from langdml.losses import S2SDLoss, build_loss
    from langdml.losses.combined import build_base

    num_classes = data.train.num_classes
    try:
        loss = build_loss(
            loss_spec(cfg),
            num_classes=num_classes,
            embedding_size=cfg.model.embedding_dim,
            class_text_embeddings=text_embeddings,
        )
        s2sd = cfg.loss.s2sd
        if not s2sd.dims:
            return loss
        # S2SD: the full loss (base + regularizers) on the target embedding, the base loss alone
        # on each auxiliary head.
        base = cfg.loss.base.model_dump()
        heads = [build_base(base, num_classes, d, text_embeddings) for d in s2sd.dims]
        return S2SDLoss(
            loss,
            heads,
            temperature=s2sd.temperature,
            weight=s2sd.weight,
            feature_weight=s2sd.feature_weight,
            feature_delay=s2sd.feature_delay,
        )
    except TypeError as exc:
        raise ConfigError(f"loss config: {exc}") from None


# ---------------------------------------------------------------------------------------------
# embedding and metrics


class _ImageBatches(torch.utils.data.Dataset):
    def __init__(self, dataset: ImageDataset, transform) -> None:
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        return self.transform(self.dataset.image(int(i))), int(self.dataset.labels[int(i)])


def image_loader(cfg: ExperimentConfig, dataset: ImageDataset, batches, train: bool):
    """A DataLoader of (image tensor, label) batches over ``batches`` (lists of row indices)."""
    tf = run_transform(cfg, train)
    return torch.utils.data.DataLoader(
        _ImageBatches(dataset, tf), batch_sampler=batches, num_workers=cfg.train.num_workers
    )


def run_transform(cfg: ExperimentConfig, train: bool):
    """The image transform of a fine-tuning run (train: augmented) or of its evaluation."""
    return run_preprocessing(cfg).transform(train=train, crop_scale=cfg.model.crop_scale)



@torch.no_grad()
def embed(
    model: EmbeddingModel,
    cfg: ExperimentConfig,
    data: RunData,
    batch_size: int = 512,
    rows: np.ndarray | None = None,
) -> torch.Tensor:
    """Embeddings of the evaluation images (clean view); only ``rows`` of them if given."""
    model.eval()
    device = cfg.train.device
    rows = np.arange(len(data.eval)) if rows is None else np.asarray(rows)
    if data.eval_features is not None:
        feats = data.eval_features[torch.as_tensor(rows, dtype=torch.long)]
        chunks = [
            model(feats[i : i + batch_size].to(device)).float().cpu()
            for i in range(0, len(feats), batch_size)
        ]
        return torch.cat(chunks) if chunks else torch.zeros(0, cfg.model.embedding_dim)
    if len(rows) == 0:
        return torch.zeros(0, cfg.model.embedding_dim)
    loader = image_loader(
        cfg, data.eval, list(np.array_split(rows, max(1, len(rows) // 64))), False
    )
    return torch.cat([model(x.to(device)).float().cpu() for x, _ in loader])


def embed_train(model: EmbeddingModel, cfg: ExperimentConfig, data: RunData) -> torch.Tensor:
    """Embeddings of the TRAIN images (clean view)."""
    features = None if data.train_features is None else data.train_features[0]
    as_eval = RunData(train=data.train, eval=data.train, eval_split="train", eval_features=features)
    return embed(model, cfg, as_eval)


def evaluate_embeddings(
    cfg: ExperimentConfig,
    embeddings: torch.Tensor,
    labels: np.ndarray,
    split: tuple[np.ndarray, np.ndarray] | None = None,
    query_sample: int | None = None,
) -> dict:
    """The run's metrics: leave-one-out over all rows, or with ``split`` = (query, gallery rows)
    (``data.records.query_gallery``, In-Shop) queries search the gallery only; ``query_sample``:
    kNN metrics over that many seeded queries (``retrieval_metrics``)."""
    from langdml.eval import retrieval_metrics

    warn_if_collapsed(embeddings, cfg.eval.metric)
    extra = ("clustering", "f1") if cfg.eval.clustering else ()
    include = ("recall", "map_r", "map_1000", *extra)
    labels = np.asarray(labels)
    reference = reference_labels = None
    if split is not None:
        q, g = split
        reference, reference_labels = embeddings[g], labels[g]
        embeddings, labels = embeddings[q], labels[q]
    return retrieval_metrics(
        embeddings,
        labels,
        reference,
        reference_labels,
        recall_ks=tuple(cfg.eval.recall_at),
        metric=cfg.eval.metric,
        include=include,
        seed=cfg.seed,
        device=cfg.train.device,
        search=cfg.eval.search,
        search_params=cfg.eval.search_params,
        query_sample=query_sample,
    )


def final_details(
    cfg: ExperimentConfig, embeddings: torch.Tensor, data: RunData
) -> tuple[list[dict], dict[str, float]]:
    """Per-class rows (``per_class.csv``) and the mistake-severity metrics (empty without a
    hierarchy) of the eval embeddings (``langdml.eval.per_class``)."""
    from langdml.eval.per_class import per_class_rows, query_results, severity_metrics

    labels = data.eval.labels
    how = dict(metric=cfg.eval.metric, device=cfg.train.device)
    split = query_gallery(data.eval)
    if split is None:
        res = query_results(embeddings, labels, **how)
    else:
        q, g = split
        res = query_results(embeddings[q], labels[q], embeddings[g], labels[g], **how)
    rows = per_class_rows(res, data.eval.class_names)
    codes = data.group_codes
    return rows, ({} if codes is None else severity_metrics(res.labels, res.top1, codes))


# ---------------------------------------------------------------------------------------------
# reopening a finished run


def load_run_config(run_dir: str | Path) -> ExperimentConfig:
    """A run's resolved config; keys of older releases are migrated (one deprecation line)."""
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a run directory (no {CONFIG})")
    return validate_config(migrate_config(load_yaml(path), source=str(path)))


@dataclass
class OpenRun:
    """A finished run, reopened: its config, data split, model with the checkpoint's weights,
    and, for text-proxy runs, the base loss rebuilt from the checkpoint (its projection is the
    run's text side) with the training classes' text embeddings; None otherwise."""

    run_dir: Path
    config: ExperimentConfig
    data: RunData
    model: EmbeddingModel
    epoch: int
    checkpoint: str
    loss_state: dict[str, torch.Tensor]
    text_embeddings: torch.Tensor | None = None
    loss: torch.nn.Module | None = None
    checkpoint_file: Path | None = None  # the file loaded (checkpoint.prev.pt after a fallback)

    def training_text_embeddings(self) -> torch.Tensor | None:
        """The train classes' text embeddings the run trained with (from the text cache;
        None when it used no text)."""
        if self.text_embeddings is None and needs_text(self.config):
            self.text_embeddings = class_text_embeddings(self.config, self.data.train)
        return self.text_embeddings

    def text_projection(self) -> torch.nn.Module | None:
        """The text → proxy projection a text-proxy run learned, in eval mode; else None."""
        proj = None if self.loss is None else self.loss.text_projection()
        return None if proj is None else proj.eval()


def _check_open_args(run_dir: Path, cfg: ExperimentConfig, checkpoint: str, split) -> None:
    if checkpoint not in CHECKPOINTS:
        raise LangDMLError(f"checkpoint must be 'last' or 'best', got {checkpoint!r}")
    ckpt = run_dir / CHECKPOINTS[checkpoint]
    if checkpoint == "best" and not has_validation(cfg):
        raise LangDMLError(f"run {str(run_dir)!r} has no best checkpoint: {NO_BEST}")
    if not ckpt.is_file() and not (ckpt.name == CHECKPOINT and (run_dir / PREVIOUS).is_file()):
        raise LangDMLError(f"{run_dir} has no {ckpt.name}; train it first: langdml train {run_dir}")
    if split not in (None, "test", "val"):
        raise LangDMLError(f"split must be 'test' or 'val', got {split!r}")
    if split == "val" and not has_validation(cfg):
        raise LangDMLError(
            f"run {str(run_dir)!r} has no validation split (data.validation_fraction and "
            "data.folds are 0)"
        )


def open_run(
    run_dir: str | Path,
    checkpoint: str = "last",
    *,
    split: str | None = None,
    device: str | None = None,
) -> OpenRun:
    """Reopen a trained run: config, data, model (weights loaded with ``weights_only=True``).

    ``checkpoint``: "last" (alias "final") or "best"; "last" falls back to checkpoint.prev.pt,
    with one warning line, when checkpoint.pt is damaged or missing (``run_files``). ``split``:
    None = the run's own evaluation split, "test" = the test classes, "val" = its validation
    classes.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise LangDMLError(f"run directory {str(run_dir)!r} does not exist")
    cfg = load_run_config(run_dir)
    _check_open_args(run_dir, cfg, checkpoint, split)
    if split == "test":
        cfg.data.validation_fraction = 0.0
        cfg.data.fold = 0  # before folds: each assignment is validated
        cfg.data.folds = 0
    cfg.train.progress = False
    if device is not None:
        cfg.train.device = device
    data = prepare_data(cfg)
    path, state = open_checkpoint(run_dir, checkpoint)
    model = build_model(cfg, data)
    model.load_state_dict(state["model"])
    model.to(cfg.train.device)
    loss_state = dict(state.get("loss", {}))
    run = OpenRun(run_dir, cfg, data, model, int(state.get("epoch", 0)), checkpoint, loss_state)
    run.checkpoint_file = path
    if uses_text_proxies(cfg):
        run.loss = text_proxy_loss(cfg, loss_state)
        run.text_embeddings = run.loss.class_text_embeddings
    return run


def text_proxy_loss(cfg: ExperimentConfig, loss_state: dict[str, torch.Tensor]):
    """The text-proxy base loss of a run trained with one, rebuilt from its saved state (its
    projection is the run's text side); a LangDMLError when the state does not fit."""
    from langdml.losses import CombinedLoss
    from langdml.losses.text_proxies import TEXT_PROXY_LOSSES

    base = cfg.loss.base
    cls = TEXT_PROXY_LOSSES[base.name]
    try:
        return cls.from_state_dict(
            CombinedLoss.base_state_dict(loss_state),
            cfg.model.embedding_dim,
            **(base.model_extra or {}),
        )
    except (RuntimeError, KeyError) as exc:
        raise LangDMLError(
            f"run trained with {base.name!r} but its checkpoint holds no matching text "
            f"projection ({str(exc).splitlines()[0]})"
        ) from None
