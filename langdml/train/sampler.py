"""Batch samplers (m-per-class, class-balanced, hierarchical), deterministic per (seed, epoch)
so resumed runs replay exactly. Each has ``len()`` (batches per epoch) and ``epoch(e)`` (the
epoch's batches, arrays of training-row indices)."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from langdml.config import ExperimentConfig
from langdml.data import ImageDataset
from langdml.errors import ConfigError
from langdml.train.categories import class_categories


class BatchSampler(Protocol):
    def __len__(self) -> int: ...

    def epoch(self, epoch: int) -> list[np.ndarray]: ...


class MPerClassSampler:
    """Batches of ``batch_size // m`` distinct classes with ``m`` images each.

    Epoch length: ``iterations_per_epoch`` batches, default ``len(labels) // batch_size`` (so an
    epoch shows about as many images as the dataset holds). Classes are visited in a shuffled
    round-robin, so every class appears about equally often. A class with fewer than ``m`` images
    is sampled WITH replacement (its images repeat within the batch); ``m`` larger than every
    class is an error, since then no batch would hold ``m`` distinct images of any class.
    """

    def __init__(
        self,
        labels: np.ndarray,
        batch_size: int,
        m: int,
        seed: int = 0,
        iterations_per_epoch: int | None = None,
    ) -> None:
        labels = np.asarray(labels)
        if batch_size % m:
            raise ConfigError(f"batch_size {batch_size} is not divisible by m_per_class {m}")
        self.classes, inverse = np.unique(labels, return_inverse=True)
        self.per_class = [np.flatnonzero(inverse == k) for k in range(len(self.classes))]
        self.classes_per_batch = batch_size // m
        largest = max(len(ix) for ix in self.per_class)
        if m > largest:
            raise ConfigError(
                f"m_per_class={m} exceeds the size of every class (the largest has {largest} "
                f"images); use m_per_class <= {largest}"
            )
        if self.classes_per_batch > len(self.classes):
            raise ConfigError(
                f"batch_size {batch_size} with m_per_class {m} needs {self.classes_per_batch} "
                f"classes per batch, but the training set has only {len(self.classes)}"
            )
        self.batch_size, self.m, self.seed = batch_size, m, seed
        self.iterations = iterations_per_epoch or max(1, len(labels) // batch_size)

    def __len__(self) -> int:
        return self.iterations

    def epoch(self, epoch: int) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch])
        order: list[int] = []
        batches = []
        for _ in range(self.iterations):
            if len(order) < self.classes_per_batch:
                # Refill with a fresh permutation that avoids classes still queued (no duplicates).
                queued = set(order)
                order += [int(c) for c in rng.permutation(len(self.classes)) if c not in queued]
            chosen, order = order[: self.classes_per_batch], order[self.classes_per_batch :]
            batch = [
                rng.choice(self.per_class[c], self.m, replace=len(self.per_class[c]) < self.m)
                for c in chosen
            ]
            batches.append(np.concatenate(batch))
        return batches


class ClassBalancedSampler(MPerClassSampler):
    """Batches of ``n_classes`` distinct classes x ``n_per_class`` images, an epoch visiting
    every class: ``ceil(C / n_classes)`` batches by default (``iterations_per_epoch`` overrides
    it), against m-per-class's ``images / batch_size``. Classes come from the same shuffled
    round-robin as :class:`MPerClassSampler` (the last batch of an epoch is topped up from the
    next round), so with ``iterations_per_epoch`` given it draws exactly the batches of
    m-per-class with ``m = n_per_class``; a class with fewer than ``n_per_class`` images repeats
    images within a batch."""

    def __init__(
        self,
        labels: np.ndarray,
        n_classes: int,
        n_per_class: int,
        seed: int = 0,
        iterations_per_epoch: int | None = None,
    ) -> None:
        super().__init__(labels, n_classes * n_per_class, n_per_class, seed, iterations_per_epoch)
        if iterations_per_epoch is None:
            self.iterations = -(-len(self.classes) // n_classes)


class _RoundRobin:
    """A shuffled round-robin over ``n`` items: ``take(k)`` gives ``k`` distinct items; a refill
    appends a fresh permutation without the items still queued."""

    def __init__(self, n: int, rng: np.random.Generator) -> None:
        self.n, self.rng, self.order = n, rng, []

    def take(self, k: int) -> list[int]:
        if len(self.order) < k:
            queued = set(self.order)
            self.order += [int(c) for c in self.rng.permutation(self.n) if c not in queued]
        chosen, self.order = self.order[:k], self.order[k:]
        return chosen


class HierarchicalSampler:
    """Two-level batches: ``n_categories`` distinct categories, ``n_classes`` distinct classes of
    each, ``n_per_class`` images of each class (batch = their product, laid out category by
    category, class by class), so every batch holds negatives from the same category.

    ``categories[c]`` is the category of class ``c`` (the training labels' classes). Categories
    and, within each category, its classes are visited in shuffled round-robins (the first
    ``ceil(n / k)`` draws of ``k`` out of ``n`` cover all ``n``); every category
    needs at least ``n_classes`` classes (else no batch could hold that many of it). Epoch
    length: ``iterations_per_epoch``, default ``len(labels) // batch_size``; randomness derives
    from ``(seed, epoch)``."""

    def __init__(
        self,
        labels: np.ndarray,
        categories: np.ndarray,
        n_categories: int,
        n_classes: int,
        n_per_class: int,
        seed: int = 0,
        iterations_per_epoch: int | None = None,
    ) -> None:
        labels, categories = np.asarray(labels), np.asarray(categories)
        self.classes, inverse = np.unique(labels, return_inverse=True)
        self.per_class = [np.flatnonzero(inverse == k) for k in range(len(self.classes))]
        cats, cat_of = np.unique(categories[self.classes], return_inverse=True)
        self.members = [np.flatnonzero(cat_of == g) for g in range(len(cats))]
        small = [g for g, m in enumerate(self.members) if len(m) < n_classes]
        if small:
            raise ConfigError(
                f"train.sampler hierarchical: {len(small)} of {len(cats)} categories have fewer "
                f"than n_classes={n_classes} training classes (the smallest has "
                f"{min(len(self.members[g]) for g in small)}); lower train.n_classes or use a "
                "coarser train.category_level"
            )
        if n_categories > len(cats):
            raise ConfigError(
                f"train.n_categories={n_categories} exceeds the {len(cats)} categories of the "
                "training classes; lower train.n_categories"
            )
        self.n_categories, self.n_classes, self.n_per_class = n_categories, n_classes, n_per_class
        self.batch_size = n_categories * n_classes * n_per_class
        self.seed = seed
        self.iterations = iterations_per_epoch or max(1, len(labels) // self.batch_size)

    def __len__(self) -> int:
        return self.iterations

    def epoch(self, epoch: int) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch])
        cats = _RoundRobin(len(self.members), rng)
        within = [_RoundRobin(len(m), rng) for m in self.members]
        batches = []
        for _ in range(self.iterations):
            parts = []
            for g in cats.take(self.n_categories):
                for c in self.members[g][within[g].take(self.n_classes)]:
                    imgs = self.per_class[c]
                    k = self.n_per_class
                    parts.append(rng.choice(imgs, k, replace=len(imgs) < k))
            batches.append(np.concatenate(parts))
        return batches


def build_sampler(cfg: ExperimentConfig, train: ImageDataset) -> BatchSampler:
    """The batch sampler ``train.sampler`` names, over the training rows."""
    t = cfg.train
    if t.sampler == "class_balanced":
        return ClassBalancedSampler(
            train.labels, t.n_classes, t.n_per_class, cfg.seed, t.iterations_per_epoch
        )
    if t.sampler == "hierarchical":
        return HierarchicalSampler(
            train.labels,
            class_categories(cfg, train),
            t.n_categories,
            t.n_classes,
            t.n_per_class,
            cfg.seed,
            t.iterations_per_epoch,
        )
    return MPerClassSampler(
        train.labels,
        t.batch_size,
        t.m_per_class,
        seed=cfg.seed,
        iterations_per_epoch=t.iterations_per_epoch,
    )
