"""Positive-control targets for language guidance: class embeddings that are informative about the
held-out classes *by construction*, written as user-supplied class embeddings (``file:`` text model)
so the unchanged trainer and ablation runner use them exactly like class-name embeddings.

Teachers (trained here on the cached frozen-trunk features, multi-similarity loss; by default the
student's own architecture, a linear 128-d head, so the target is one the student can realise):
- ``oracle``: a head trained on ALL classes of the dataset, the held-out ones included. It knows
  how to separate the test classes, so its train-class similarities carry test-relevant metric
  information. It is a control of the mechanism (can the LG term transfer an informative target
  into the student?), never a method: it has seen the test classes.
- ``teacher``: the same head trained on the TRAIN classes only (a differently trained visual model
  of the same train classes; no test information).

The target of class c is the normalised mean teacher embedding of its train images. Each teacher's
own R@1 / MAP@R on the test classes is printed (the oracle's is the ceiling of the transfer).

    python scripts/studies/positive_control.py --out cache/controls  # oracle/teacher.safetensors
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from langdml.data import class_disjoint_split, load_dataset
from langdml.eval import retrieval_metrics
from langdml.losses import MultiSimilarityLoss
from langdml.models import EmbeddingHead, FeatureSpec, extract_features
from langdml.train.sampler import MPerClassSampler


def train_teacher(
    features: torch.Tensor, labels: np.ndarray, dim: int, epochs: int, seed: int, kind: str
) -> EmbeddingHead:
    """A head trained with multi-similarity on (N, D) features; AdamW 1e-3, batch 64, m=2."""
    torch.manual_seed(seed)
    head = EmbeddingHead(features.shape[1], dim, kind)
    loss_fn = MultiSimilarityLoss()
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=1e-4)
    sampler = MPerClassSampler(labels, 64, 2, seed=seed)
    y = torch.as_tensor(labels)
    for epoch in range(epochs):
        for batch in sampler.epoch(epoch):
            idx = torch.as_tensor(batch)
            loss = loss_fn(head(features[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return head.eval()


def class_centroids(head: EmbeddingHead, features: torch.Tensor, labels: np.ndarray, n: int):
    with torch.no_grad():
        z = head(features)
    cent = torch.zeros(n, z.shape[1]).index_add_(0, torch.as_tensor(labels), z)
    return torch.nn.functional.normalize(cent, dim=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="emoji")
    ap.add_argument("--out", default="cache/controls")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--head", default="linear", choices=["linear", "mlp"])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from safetensors.torch import save_file

    dataset = load_dataset(args.dataset)
    feats = extract_features(dataset, FeatureSpec(), progress=False).clean
    split = class_disjoint_split(dataset, 0.5)
    row = {item: i for i, item in enumerate(dataset.images.items)}
    tr = torch.as_tensor([row[i] for i in split.train.images.items])
    train_labels = np.asarray(split.train.labels)
    te = torch.as_tensor([row[i] for i in split.test.images.items])
    test_labels = np.asarray(split.test.labels)
    names = list(split.train.class_names)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    teachers = {
        "oracle": (feats, np.asarray(dataset.labels)),
        "teacher": (feats[tr], train_labels),
    }
    for name, (x, y) in teachers.items():
        head = train_teacher(x, y, args.dim, args.epochs, args.seed, args.head)
        target = class_centroids(head, feats[tr], train_labels, len(names))
        with torch.no_grad():
            m = retrieval_metrics(head(feats[te]), test_labels, include=("recall", "map_r"))
        print(
            f"{name} teacher on the test classes: R@1 {100 * m['recall@1']:.2f}, "
            f"MAP@R {100 * m['map@r']:.2f}"
        )
        path = out / f"{name}.safetensors"
        meta = {"names": json.dumps(names)}
        save_file({"embeddings": target.contiguous()}, str(path), metadata=meta)
        print(f"{name}: {tuple(target.shape)} -> {path}")


if __name__ == "__main__":
    main()
