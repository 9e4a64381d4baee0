"""Frozen-trunk feature cache: extract once, train heads in seconds.

A cache entry is keyed by backbone + weights + image size + dataset fingerprint + augmentation, and
stored as safetensors (``features``: (V, N, D) float32, view 0 the clean eval transform, views
1..V-1 augmented; partial fine-tuning caches the frozen prefix's activations, (V, N, C, H, W),
the same way) plus JSON metadata. Extraction writes one part file per chunk, so an interrupted
extraction resumes where it stopped.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from langdml.data.records import ImageDataset
from langdml.io import atomic_write, atomic_write_json, cache_root, stable_hash


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
    # see backbones.split_trunk) instead of pooled features: (V, N_images, C, H, W).
    prefix_blocks: int = 0

    def key(self, dataset: ImageDataset) -> str:
        weights_id = self.weights
        if Path(self.weights).is_file():  # a local file: key on its content, not its path
            import hashlib

            weights_id = hashlib.sha256(Path(self.weights).read_bytes()).hexdigest()[:16]
        parts = [
            self.backbone,
            weights_id,
            self.image_size,
            self.augment_views,
            self.crop_pct,
            self.seed,
            dataset.fingerprint,
        ]
        if self.prefix_blocks:  # pooled-feature keys stay what they were
            parts.append(f"prefix-{self.prefix_blocks}")
        return stable_hash(parts)


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
    from safetensors.torch import load_file, save_file

    from langdml.models.backbones import create_backbone
    from langdml.models.transforms import image_transform

    spec = spec or FeatureSpec()
    root = cache_root(cache_dir) / "features"
    key = spec.key(dataset)
    path = root / f"{dataset.name.replace(':', '_').replace('/', '_')}-{key}.safetensors"
    meta_path = path.with_suffix(".json")
    if path.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("class_names") == dataset.class_names and meta.get("num_images") == len(
            dataset
        ):
            feats = load_file(str(path))["features"]
            return FeatureSet(feats, dataset.labels.copy(), list(dataset.class_names), path, meta)

    model, info = create_backbone(spec.backbone, spec.weights)
    if spec.prefix_blocks:
        from langdml.models.backbones import split_trunk

        model = split_trunk(model, spec.prefix_blocks)[0]
    model = model.eval().to(device).to(memory_format=torch.channels_last)
    torch.manual_seed(spec.seed)
    transforms = [image_transform(spec.image_size, info.mean, info.std, crop_pct=spec.crop_pct)]
    transforms += [
        image_transform(spec.image_size, info.mean, info.std, train=True)
    ] * spec.augment_views
    parts_dir = path.with_suffix(".parts")
    parts_dir.mkdir(parents=True, exist_ok=True)
    n = len(dataset)
    starts = list(range(0, n, chunk_size))
    bar = _progress(len(starts), f"features {dataset.name}", progress)
    parts = []
    for k, start in enumerate(starts):
        part = parts_dir / f"part_{k:06d}.safetensors"
        if not part.is_file():
            # Seed per chunk so a resumed extraction draws the same augmentations.
            torch.manual_seed(spec.seed * 1_000_003 + k)
            chunk = _extract_chunk(
                model, dataset, range(start, min(n, start + chunk_size)), transforms, device
            )
            atomic_write(part, lambda p, c=chunk: save_file({"f": c.contiguous()}, str(p)))
        parts.append(part)
        bar(k + 1)
    feats = torch.cat([load_file(str(p))["f"] for p in parts], dim=1)
    meta = {
        "backbone": spec.backbone,
        "weights": spec.weights,
        "image_size": spec.image_size,
        "augment_views": spec.augment_views,
        "prefix_blocks": spec.prefix_blocks,
        "crop_pct": spec.crop_pct,
        "seed": spec.seed,
        "dataset": dataset.name,
        "dataset_fingerprint": dataset.fingerprint,
        "num_images": n,
        "feature_dim": int(feats.shape[2]),
        "shape": list(feats.shape[2:]),
        "class_names": dataset.class_names,
    }
    atomic_write(path, lambda p: save_file({"features": feats.contiguous()}, str(p)))
    atomic_write_json(meta_path, meta)
    shutil.rmtree(parts_dir, ignore_errors=True)
    return FeatureSet(feats, dataset.labels.copy(), list(dataset.class_names), path, meta)


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
