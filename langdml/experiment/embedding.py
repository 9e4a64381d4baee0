"""Images → embeddings: the image loader and transform of a run, and the embeddings of its
evaluation (or training) images."""

from __future__ import annotations

import numpy as np
import torch

from langdml.config import ExperimentConfig
from langdml.data import ImageDataset
from langdml.experiment.preprocessing import run_preprocessing
from langdml.experiment.run_data import RunData
from langdml.models import EmbeddingModel


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
    return run_preprocessing(cfg).transform(
        train=train,
        crop_scale=cfg.model.crop_scale,
        augment=cfg.data.augment,
        timm_augment=cfg.data.timm_augment,
    )


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
