"""m-per-class batch sampling, deterministic per (seed, epoch) so resumed runs replay exactly."""

from __future__ import annotations

import numpy as np

from langdml.errors import ConfigError


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
