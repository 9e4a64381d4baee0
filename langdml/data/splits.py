"""The class split of a run, computed in one place.

Training, ``langdml precompute``, ``langdml diagnose``, cross-modal evaluation, inference and
``langdml data split`` all ask :func:`class_splits` which classes train, which validate and
which are the held-out test classes, so a run's settings (``data.split_file``,
``data.class_order`` / ``data.split_seed``, ``data.train_fraction``,
``data.validation_fraction``, ``data.folds`` / ``data.fold``) mean the same classes everywhere.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from langdml.data.records import (
    DatasetSplit,
    ImageDataset,
    class_disjoint_split,
    class_fold_split,
)
from langdml.data.split_file import FILE_SPLIT, apply_split_file
from langdml.errors import DataError

PARTS = ("train", "val", "test")
CLASS_ORDERS = ("natural", "seeded")


@dataclass(frozen=True)
class ClassSplits:
    """The classes of a dataset by role. ``train``: the classes training sees (the first
    ``train_fraction`` of the classes, minus the validation ones); ``val``: validation classes
    carved from those (None without a validation split); ``test``: the held-out rest."""

    train: ImageDataset
    test: ImageDataset
    val: ImageDataset | None = None

    @property
    def eval_split(self) -> str:
        """Which part a run evaluates (and picks its best epoch) on: "val" when it has one."""
        return "test" if self.val is None else "val"

    @property
    def eval(self) -> ImageDataset:
        return self.test if self.val is None else self.val

    def part(self, name: str) -> ImageDataset:
        """The part called ``name`` ("train", "val" or "test"); a DataError without it."""
        if name not in PARTS:
            raise DataError(f"class split part must be one of {', '.join(PARTS)}, got {name!r}")
        found = getattr(self, name)
        if found is None:
            raise DataError(
                "there is no validation split (validation_fraction and folds are 0); "
                "use train or test"
            )
        return found


def class_splits(
    dataset: ImageDataset,
    train_fraction: float = 0.5,
    validation_fraction: float = 0.0,
    folds: int = 0,
    fold: int = 0,
    *,
    split_file: str | os.PathLike | None = None,
    class_order: str = "natural",
    split_seed: int = 0,
) -> ClassSplits:
    """The class-disjoint split of ``dataset``. The arguments are the ``data`` config's.

    ``split_file`` (``langdml.data.split_file``): only the images it lists take part, and its
    ``split`` column, when it has one, gives the train / val / test classes (a validation split
    is then carved from its train classes only when it names no val rows). Otherwise the first
    ``train_fraction`` of the classes train and the rest test (``class_disjoint_split``), in
    class-id order (``class_order="natural"``) or in a permutation seeded by ``split_seed``
    (``"seeded"``, which ignores a dataset's official split); a validation split is carved from
    the train classes: their last ``validation_fraction``, or fold ``fold`` of ``folds``
    contiguous class folds (``class_fold_split``)."""
    if not 0.0 <= validation_fraction < 1.0:
        raise DataError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    if folds and validation_fraction:
        raise DataError("set folds or validation_fraction, not both")
    if class_order not in CLASS_ORDERS:
        raise DataError(f"class_order must be natural or seeded, got {class_order!r}")
    if split_file is not None:
        dataset = apply_split_file(dataset, split_file)
    if FILE_SPLIT in dataset.extras:
        return _file_splits(dataset, validation_fraction, folds, fold)
    if class_order == "seeded":
        dataset = seeded_class_order(dataset, split_seed)
    split = class_disjoint_split(dataset, train_fraction, official=class_order == "natural")
    return _carve_validation(split, validation_fraction, folds, fold)


def seeded_class_order(dataset: ImageDataset, seed: int) -> ImageDataset:
    """``dataset`` with its classes relabelled in a permutation seeded by ``seed`` (the same
    seed, the same order, on any machine: numpy's PCG64)."""
    order = np.random.default_rng([int(seed), 0xC1A55]).permutation(dataset.num_classes)
    return dataset.subset_classes(order.tolist(), f":seed{int(seed)}")


def _carve_validation(
    split: DatasetSplit, validation_fraction: float, folds: int, fold: int
) -> ClassSplits:
    if validation_fraction > 0:
        inner = class_disjoint_split(split.train, 1.0 - validation_fraction, official=False)
    elif folds:
        inner = class_fold_split(split.train, folds, fold)
    else:
        return ClassSplits(train=split.train, test=split.test)
    return ClassSplits(train=inner.train, test=split.test, val=inner.test)


def _file_splits(
    dataset: ImageDataset, validation_fraction: float, folds: int, fold: int
) -> ClassSplits:
    """The parts a split file's ``split`` column names (class ids ascending in each part)."""
    marks = np.asarray(dataset.extras[FILE_SPLIT])
    part_classes = {p: np.unique(dataset.labels[marks == p]).tolist() for p in PARTS}
    parts = {p: dataset.subset_classes(c, f":{p}") for p, c in part_classes.items() if c}
    if "val" not in parts:
        split = DatasetSplit(train=parts["train"], test=parts["test"])
        return _carve_validation(split, validation_fraction, folds, fold)
    if validation_fraction or folds:
        raise DataError(
            "the split file names val rows; set data.validation_fraction and data.folds to 0 "
            "(or drop the val rows to carve a validation split from its train classes)"
        )
    return ClassSplits(train=parts["train"], test=parts["test"], val=parts["val"])
