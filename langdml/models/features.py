"""Frozen-trunk feature cache: extract once, train heads in seconds.

A cache entry is keyed by backbone + weights + image size + dataset fingerprint + augmentation +
a content fingerprint of the images, and stored as safetensors (``features``: (V, N, D) float32,
view 0 the clean eval transform, views 1..V-1 augmented; partial fine-tuning caches the frozen
prefix's activations, (V, N, C, H, W) or a ViT's tokens (V, N, T, D), the same way, keyed also by
the prefix) plus JSON metadata.
Extraction writes one part file per chunk, so an interrupted extraction resumes where it stopped.

Content fingerprint (``content_fingerprint``): for images that are files, the (path, size,
mtime_ns) of every file — the fast path, one ``stat`` per image, no reading — so overwriting
images under the same names (which changes their mtime) gives a new key and a fresh extraction;
images held in a built dataset file (emoji Arrow rows) are covered by that dataset's fingerprint.
The metadata stores the SHA-256 of the feature file; it is verified on every load, and a damaged
entry (truncated or bit-flipped features, unreadable metadata) is reported in one warning line
naming the file and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from langdml.data.records import ImageDataset
from langdml.io import atomic_write, atomic_write_json, cache_root, file_sha256, stable_hash
from langdml.models.clip_tower import clip_identity, is_open_clip


@dataclass
class FeatureSet:
    features: torch.Tensor  # (V, N, D) float32; view 0 is the un-augmented image
    labels: np.ndarray
    class_names: list[str]
    path: Path
    meta: dict

    @property
    def clean(self) -> torch.Tensor:
        return self.features[0]


@dataclass(frozen=True)
class FeatureSpec:
    backbone: str = "tf_efficientnet_lite0"
    weights: str = "packaged"
    image_size: int = 128
    augment_views: int = 0  # extra randomly augmented views per image (train-time variety)
    crop_pct: float | None = None
    seed: int = 0
    # > 0: the activations of the frozen PREFIX of partial fine-tuning (model.trainable_blocks N,
    # see trunk_split.split_trunk) instead of pooled features: (V, N_images, C, H, W).
    prefix_blocks: int = 0
    pooling: str = "avg"
    crop_scale: tuple[float, float] = (0.35, 1.0)  # augmented views' random-resized-crop area
    interpolation: str = "bicubic"
    # more timm.create_model arguments (model.backbone_kwargs), as sorted (name, value) pairs
    backbone_kwargs: tuple[tuple[str, Any], ...] = ()
    floor_scale: bool = False  # eval resize floor(S / crop_pct), timm's rule (models.preprocess)

    def __post_init__(self) -> None:
        from langdml.config.base import MAX_IMAGE_SIZE
        from langdml.errors import check_int

        # one line before any image is read (diagnose --image-size reaches here unvalidated)
        check_int(self.image_size, "image size", high=MAX_IMAGE_SIZE, meaning="pixels per side")

    def key(self, dataset: ImageDataset) -> str:
        weights_id = self.weights
        if Path(self.weights).is_file():  # a local file: key on its content, not its path
            weights_id = file_sha256(self.weights)[:16]
        if is_open_clip(self.backbone):  # the weights the spec names, by size and mtime
            weights_id = [weights_id, clip_identity(self.backbone, self.weights)]
        parts = [
            self.backbone,
            weights_id,
            self.image_size,
            self.augment_views,
            self.crop_pct,
            self.seed,
            dataset.fingerprint,
            content_fingerprint(dataset),
        ]
        if self.prefix_blocks:  # pooled-feature keys stay what they were
            parts.append(f"prefix-{self.prefix_blocks}")
        # Settings added later join the key only when not their default, so existing caches
        # keep their keys.
        if self.pooling != "avg":
            parts.append(f"pool-{self.pooling}")
        if self.interpolation != "bicubic":
            parts.append(f"interp-{self.interpolation}")
        if self.augment_views and tuple(self.crop_scale) != (0.35, 1.0):
            parts.append(f"scale-{list(self.crop_scale)}")
        if self.backbone_kwargs:
            parts.append(["kwargs", [list(kv) for kv in self.backbone_kwargs]])
        if self.floor_scale and self.crop_pct:
            parts.append("floor-scale")
        return stable_hash(parts)


def content_fingerprint(dataset: ImageDataset) -> str:
    """(path, size, mtime_ns) of every image file of ``dataset`` (one stat each), hashed; items
    that are not files (rows of a built dataset, in-memory images) add nothing."""
    digest = hashlib.sha256()
    for item in dataset.images.items:
        if isinstance(item, (str, os.PathLike)):
            try:
                st = os.stat(item)
            except OSError:
                continue  # reading the image reports it, naming the file
            digest.update(f"{os.fspath(item)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _report(message: str) -> None:
    warnings.warn(message, stacklevel=3)


def _load_cached(path: Path, meta_path: Path, dataset: ImageDataset) -> tuple | None:
    """(features, meta) of a verified cache entry; None when absent, stale or damaged (a damaged
    entry is reported in one warning line naming the file, and the caller rebuilds it)."""
    from safetensors.torch import load

    if not (path.is_file() and meta_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
    except (ValueError, OSError) as exc:
        _report(f"feature cache metadata {meta_path} is unreadable ({exc}); rebuilding it")
        return None
    if meta.get("class_names") != dataset.class_names or meta.get("num_images") != len(dataset):
        return None
    blob = path.read_bytes()  # read once: checksummed, then parsed from memory
    if meta.get("sha256") != hashlib.sha256(blob).hexdigest():
        _report(
            f"feature cache {path} does not match its checksum (truncated or corrupted); "
            "rebuilding it"
        )
        return None
    try:
        feats = load(blob)["features"]
    except Exception as exc:  # safetensors raises its own error type
        _report(f"feature cache {path} is unreadable ({exc}); rebuilding it")
        return None
    return feats, meta


def _extract_chunk(model, dataset, indices, transforms, device) -> torch.Tensor:
    from langdml.models.transforms import transform_batch

    images = [dataset.image(int(i)) for i in indices]
    out = []
    with torch.inference_mode():
        for transform in transforms:
            batch = transform_batch(transform, images).to(device)
            # channels_last: depthwise convolutions run ~2x faster on CPU in this layout.
            out.append(model(batch.contiguous(memory_format=torch.channels_last)).float().cpu())
    return torch.stack(out)  # (V, n, D)


def extract_features(
    dataset: ImageDataset,
    spec: FeatureSpec | None = None,
    cache_dir: str | Path | None = None,
    device: str = "cpu",
    chunk_size: int = 256,
    progress: bool = True,
) -> FeatureSet:
    """Features of every image of ``dataset`` under ``spec``, from the cache when present."""
    from safetensors.torch import save

    from langdml.models.backbones import create_backbone

    spec = spec or FeatureSpec()
    root = cache_root(cache_dir) / "features"
    key = spec.key(dataset)
    path = root / f"{dataset.name.replace(':', '_').replace('/', '_')}-{key}.safetensors"
    meta_path = path.with_suffix(".json")
    cached = _load_cached(path, meta_path, dataset)
    if cached is not None:
        feats, meta = cached
        return FeatureSet(feats, dataset.labels.copy(), list(dataset.class_names), path, meta)

    model, info = create_backbone(
        spec.backbone,
        spec.weights,
        pooling=spec.pooling,
        kwargs=dict(spec.backbone_kwargs),
        image_size=spec.image_size,
    )
    if spec.prefix_blocks:
        from langdml.models.trunk_split import split_trunk

        model = split_trunk(model, spec.prefix_blocks)[0]
    model = model.eval().to(device).to(memory_format=torch.channels_last)
    torch.manual_seed(spec.seed)
    transforms = _view_transforms(spec, info)
    parts_dir = path.with_suffix(".parts")
    parts_dir.mkdir(parents=True, exist_ok=True)
    n = len(dataset)
    starts = list(range(0, n, chunk_size))
    bar = _progress(len(starts), f"features {dataset.name}", progress)
    chunks = []
    for k, start in enumerate(starts):
        part = parts_dir / f"part_{k:06d}.safetensors"
        chunk = _load_part(part)
        if chunk is None:
            # Seed per chunk so a resumed extraction draws the same augmentations.
            torch.manual_seed(spec.seed * 1_000_003 + k)
            chunk = _extract_chunk(
                model, dataset, range(start, min(n, start + chunk_size)), transforms, device
            )
            _save_part(part, chunk)
        chunks.append(chunk)
        bar(k + 1)
    feats = torch.cat(chunks, dim=1)
    meta = _metadata(spec, dataset, feats)
    # checksum the bytes this process wrote, not the file (a concurrent writer of the same key
    # may have replaced it): a mixed pair then fails verification instead of passing
    blob = save({"features": feats.contiguous()})
    atomic_write(path, lambda p: p.write_bytes(blob))
    meta["sha256"] = hashlib.sha256(blob).hexdigest()
    atomic_write_json(meta_path, meta)
    shutil.rmtree(parts_dir, ignore_errors=True)
    return FeatureSet(feats, dataset.labels.copy(), list(dataset.class_names), path, meta)


def _metadata(spec: FeatureSpec, dataset: ImageDataset, feats: torch.Tensor) -> dict:
    """The cache entry's JSON metadata (the checksum joins it once the file is written)."""
    return {
        "backbone": spec.backbone,
        "weights": spec.weights,
        "image_size": spec.image_size,
        "augment_views": spec.augment_views,
        "prefix_blocks": spec.prefix_blocks,
        "crop_pct": spec.crop_pct,
        "pooling": spec.pooling,
        "crop_scale": list(spec.crop_scale),
        "interpolation": spec.interpolation,
        "backbone_kwargs": dict(spec.backbone_kwargs),
        "floor_scale": spec.floor_scale,
        "seed": spec.seed,
        "dataset": dataset.name,
        "dataset_fingerprint": dataset.fingerprint,
        "num_images": len(dataset),
        "feature_dim": int(feats.shape[2]),
        "shape": list(feats.shape[2:]),
        "class_names": dataset.class_names,
    }


def _view_transforms(spec: FeatureSpec, info) -> list:
    """View 0: the clean eval transform; views 1..V-1: the training augmentation."""
    from langdml.models.preprocess import Preprocessing

    pre = Preprocessing(
        spec.image_size, spec.crop_pct, spec.interpolation, info.mean, info.std, spec.floor_scale
    )
    augmented = pre.transform(train=True, crop_scale=spec.crop_scale)
    return [pre.transform()] + [augmented] * spec.augment_views


def _save_part(part: Path, chunk: torch.Tensor) -> None:
    """Keep a finished chunk for a resumed extraction."""
    from safetensors.torch import save

    blob = save({"f": chunk.contiguous()})  # written by Python: a full disk is an OSError
    try:
        atomic_write(part, lambda p: p.write_bytes(blob))
    except FileNotFoundError:
        pass  # a concurrent extraction of the same key finished and removed parts_dir


def _load_part(part: Path) -> torch.Tensor | None:
    """A finished chunk of an interrupted extraction; a damaged one is reported and redone."""
    from safetensors.torch import load_file

    if not part.is_file():
        return None
    try:
        return load_file(str(part))["f"]
    except Exception as exc:  # safetensors raises its own error type
        _report(f"feature chunk {part} is unreadable ({exc}); extracting it again")
        return None


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return lambda done: None
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="chunk", leave=False)

    def update(done: int) -> None:
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()

    return update
