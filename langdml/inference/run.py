"""A trained run as a model: embed images (the run's preprocessing), embed class names (runs with
a text side), search a gallery. Reopening is :meth:`langdml.experiment.Run.open` (the training
data is never loaded here unless asked)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from langdml.data import ImageDataset
from langdml.errors import LangDMLError
from langdml.experiment import (
    Run,
    feature_spec,
    run_class_splits,
    run_preprocessing,
    run_transform,
    trunk,
)


class ImageTower(nn.Module):
    """Image (B, 3, S, S), normalised as :meth:`LoadedRun.preprocessing` says → embedding (B, d).

    For frozen-trunk runs the trunk is the configured timm backbone with its configured weights
    (the one the cached features came from) and the head is the trained one."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def open_image(item: Any):
    """A path or PIL image → RGB PIL image by the one opener (:func:`langdml.data.images.open_rgb`);
    anything else is one LangDMLError line."""
    from langdml.data.images import open_rgb

    return open_rgb(item)


@dataclass(eq=False)
class LoadedRun(Run):
    """A finished run ready for inference (the :class:`~langdml.experiment.Run` record, with
    the image tower and embedding methods); build it with :func:`load_run`."""

    image_tower: ImageTower | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.model.eval()

    @property
    def device(self) -> str:
        return self.config.train.device

    def preprocessing(self) -> dict[str, Any]:
        """The eval transform: RGB, resize, [0, 1], normalise with mean/std; NCHW float32."""
        return run_preprocessing(self.config).describe()

    def transform(self):
        return run_transform(self.config, train=False)

    def tower(self) -> ImageTower:
        """The image tower (trunk + trained head) in eval mode on the run's device."""
        if self.image_tower is None:
            backbone = self.model.backbone
            if backbone is None:  # frozen trunk: the configured backbone the features came from
                backbone, _ = trunk(self.config)
            elif self.config.model.partial_blocks:  # partial: frozen prefix + trained suffix
                from langdml.models.trunk_split import split_trunk

                prefix = split_trunk(trunk(self.config)[0], self.config.model.partial_blocks)[0]
                backbone = nn.Sequential(prefix, backbone)
            self.image_tower = ImageTower(backbone, self.model.head).to(self.device).eval()
        return self.image_tower

    @torch.no_grad()
    def embed(
        self, images: Sequence[Any], batch_size: int = 64, progress: bool = False
    ) -> torch.Tensor:
        """(N, d) float32 embeddings of images given as paths or PIL images (the eval view)."""
        from langdml.models.transforms import transform_batch

        tower, tf = self.tower(), self.transform()
        out = []
        for start in _batches(len(images), batch_size, progress, "embed"):
            batch = [open_image(x) for x in images[start : start + batch_size]]
            x = transform_batch(tf, batch).to(self.device)
            out.append(tower(x.contiguous(memory_format=torch.channels_last)).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, self.embedding_dim)

    @torch.no_grad()
    def embed_dataset(
        self, dataset: ImageDataset, batch_size: int = 64, progress: bool = False
    ) -> torch.Tensor:
        """(N, d) embeddings of a loaded dataset; a frozen-trunk run reuses the feature cache."""
        if self.model.backbone is None:
            from langdml.models import extract_features

            spec = feature_spec(self.config)
            feats = extract_features(
                dataset,
                spec,
                cache_dir=self.config.data.cache_dir,
                device=self.device,
                progress=progress,
            ).clean
            chunks = [
                self.model(feats[i : i + 4096].to(self.device)).float().cpu()
                for i in range(0, len(feats), 4096)
            ]
            return torch.cat(chunks) if chunks else torch.zeros(0, self.embedding_dim)
        images = _LazyImages(dataset)
        return self.embed(images, batch_size=batch_size, progress=progress)

    @torch.no_grad()
    def embed_text(self, names: Sequence[str]) -> torch.Tensor:
        """(n, d) unit embeddings of class names: the run's text model, prompts and learned
        projection (runs trained with a text-proxy loss); else one LangDMLError line."""
        if not self.has_text:
            raise LangDMLError(
                f"run {str(self.run_dir)!r} has no text side: its base loss "
                f"{self.config.loss.base.name!r} learns no text projection (search by class "
                "name needs a run trained with text_proxy_anchor or text_proxy_nca)"
            )
        from langdml.io import text_cache_dir
        from langdml.text.precompute import distinct_name_embeddings

        t = self.config.text
        found, rows = distinct_name_embeddings(
            list(names),
            model=t.text_model,
            prompts=t.prompts,
            cache_dir=text_cache_dir(self.config.data.cache_dir),
            device=self.device,
        )
        text = found.embeddings.float()[torch.as_tensor(rows)]
        projection = self.text_projection().cpu()
        return F.normalize(projection(text), dim=-1)

    def search(self, queries: torch.Tensor, index, k: int = 10):
        """Top-k gallery rows per query: ``index`` is a :class:`~langdml.inference.GalleryIndex`
        or an (N, d) tensor of gallery embeddings. Returns (scores, rows), each (Q, k')."""
        from langdml.inference.index import GalleryIndex

        if not isinstance(index, GalleryIndex):
            index = GalleryIndex.build(torch.as_tensor(index), metric=self.config.eval.metric)
        return index.search(queries, k)


class _LazyImages(Sequence):
    """A dataset's images as a sequence of PIL images, loaded on access."""

    def __init__(self, dataset: ImageDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self.dataset.image(j) for j in range(*i.indices(len(self)))]
        return self.dataset.image(int(i))


def _batches(n: int, size: int, progress: bool, desc: str) -> Iterable[int]:
    starts = range(0, n, size)
    if not progress:
        return starts
    from tqdm import tqdm

    return tqdm(starts, desc=desc, unit="batch")


def load_run(run_dir: str | Path, checkpoint: str = "last", device: str | None = None) -> LoadedRun:
    """Reopen a trained run for inference (``checkpoint``: "last" or "best")."""
    return LoadedRun.open(run_dir, checkpoint, split="test", device=device or "cpu")


def dataset_paths(dataset: ImageDataset, spec: str) -> list[str]:
    """A string per image: its file path, or ``SPEC#row`` for datasets stored in one file."""
    items = dataset.images.items
    return [str(x) if isinstance(x, str | Path) else f"{spec}#{i}" for i, x in enumerate(items)]


def trained_class_names(run: LoadedRun, why: str = "") -> list[str]:
    """The classes ``run`` trained on (validation classes included): the train part of its own
    dataset's class split, read from the dataset's listing (no features are extracted). When
    that dataset does not load here, one LangDMLError line says so, ending in ``why``."""
    from langdml.data import load_dataset
    from langdml.errors import first_line

    cfg = run.config
    try:
        own = load_dataset(cfg.data.dataset, cache_dir=cfg.data.cache_dir)
    except (LangDMLError, OSError) as exc:
        raise LangDMLError(
            f"the classes run {str(run.run_dir)!r} trained on are unknown here: its dataset "
            f"{cfg.data.dataset!r} does not load ({first_line(exc, with_type=False)}){why}"
        ) from None
    return list(run_class_splits(cfg, own).train.class_names)


def check_same_classes(run: LoadedRun, train_names: Sequence[str], name: str, split: str) -> None:
    """Refuse to label ``split`` rows of a dataset whose class split is not the run's own (another
    dataset re-split would call some of the run's training classes "test"), in one line naming
    the classes the run trained on; also when the run's own dataset is not here to compare."""
    unsure = (
        f"; so dataset {name!r} may not split as the run did: use --split all (labels by the "
        "dataset's own classes) or make the run's dataset available"
    )
    trained = trained_class_names(run, unsure)
    if list(train_names) == trained:
        return
    shown = ", ".join(repr(n) for n in trained[:4]) + (", …" if len(trained) > 4 else "")
    overlap = len(set(trained) & set(train_names))
    raise LangDMLError(
        f"dataset {name!r} is not the one run {str(run.run_dir)!r} trained on: the run trained on "
        f"{len(trained)} classes ({shown}), this dataset's train split has {len(train_names)} "
        f"({overlap} in common), so its --split {split} would not be the run's {split} classes; "
        f"use --split all (labels by the dataset's own classes) or the run's dataset "
        f"({run.config.data.dataset})"
    )


def select_split(
    run: LoadedRun, dataset: ImageDataset, split: str, spec: str | None = None
) -> tuple[ImageDataset, np.ndarray]:
    """``dataset`` restricted to the run's train or test classes ("all": unchanged); the run is
    opened on its test classes, so "train" is every class of the train split. ``spec``: the SPEC
    ``dataset`` was loaded from; a dataset other than the run's own is refused unless its train
    classes are the run's (:func:`check_same_classes`)."""
    if split == "all":
        return dataset, np.arange(len(dataset))
    if split not in ("train", "test"):
        raise LangDMLError(f"split must be test, train or all; got {split!r}")
    splits = run_class_splits(run.config, dataset)
    if spec != run.config.data.dataset:  # the run's own spec splits as the run did
        check_same_classes(run, splits.train.class_names, dataset.name, split)
    part = splits.part(split)
    row = {item: i for i, item in enumerate(dataset.images.items)}
    return part, np.asarray([row[i] for i in part.images.items])
