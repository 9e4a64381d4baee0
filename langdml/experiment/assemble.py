"""Config → model and loss: the embedding model of a run, its loss (base + regularizers, S2SD),
and the text-proxy loss rebuilt from a checkpoint's state."""

from __future__ import annotations

from typing import Any

import torch

from langdml.config import ExperimentConfig
from langdml.errors import ConfigError, LangDMLError
from langdml.experiment.preprocessing import run_preprocessing
from langdml.experiment.run_data import RunData
from langdml.models import BackboneInfo, EmbeddingHead, EmbeddingModel, create_backbone


def trunk(cfg: ExperimentConfig, **options: Any) -> tuple[torch.nn.Module, BackboneInfo]:
    """The run's configured trunk and its ``BackboneInfo`` (``models.create_backbone``);
    ``options`` go to ``create_backbone`` (e.g. ``frozen_bn``)."""
    m = cfg.model
    return create_backbone(
        m.backbone,
        m.weights,
        pooling=m.pooling,
        kwargs=m.backbone_kwargs,
        image_size=run_preprocessing(cfg).image_size,
        **options,
    )


def build_model(
    cfg: ExperimentConfig, data: RunData | None = None, in_dim: int | None = None
) -> EmbeddingModel:
    """The run's embedding model; a frozen-trunk model reads features of size ``in_dim``
    (default: the cached training features' size in ``data``)."""
    backbone = None
    if cfg.model.frozen_trunk:
        in_dim = int(data.train_features.shape[-1]) if in_dim is None else in_dim
    elif cfg.model.partial_blocks:
        # Partial fine-tuning: the inputs are the cached prefix activations; the model is the
        # trainable suffix (models.trunk_split) + head.
        from langdml.models import freeze_batchnorm
        from langdml.models.trunk_split import split_trunk

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
    """The training loss of a run (base + regularizers, S2SD heads when configured), on the CPU."""
    from langdml.losses import build_loss

    try:
        return build_loss(
            cfg.loss,
            num_classes=data.train.num_classes,
            embedding_size=cfg.model.embedding_dim,
            class_text_embeddings=text_embeddings,
        )
    except TypeError as exc:
        raise ConfigError(f"loss config: {exc}") from None


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
