"""Helpers shared by the loss tests that compare against pytorch-metric-learning."""

from __future__ import annotations

import torch

# Label layouts: m per class, some singletons, no positive pair at all, a single class.
LAYOUTS = {
    "m_per_class": lambda b, g: torch.arange(b) // 4,
    "singletons": lambda b, g: torch.cat(
        [torch.arange(b // 2) // 2, 1000 + torch.arange(b - b // 2)]
    ),
    "no_positive": lambda b, g: torch.randperm(b, generator=g),
    "one_class": lambda b, g: torch.zeros(b, dtype=torch.long),
    "random": lambda b, g: torch.randint(0, max(1, b // 3), (b,), generator=g),
    # many positives per anchor: TripletLoss switches from its per-slot loop to binary search
    "two_classes": lambda b, g: torch.arange(b) % 2,
}


def make_batch(batch: int, layout: str, dim: int = 24, seed: int = 0):
    """Seeded (embeddings, labels) of ``batch`` rows, labels laid out as ``LAYOUTS[layout]`` and
    shuffled."""
    g = torch.Generator().manual_seed(seed + 17 * batch)
    x = torch.randn(batch, dim, generator=g)
    y = LAYOUTS[layout](batch, g)
    perm = torch.randperm(batch, generator=g)
    return x, y[perm].contiguous()
