"""The class split of a run, computed in one place.

Training, ``langdml precompute``, ``langdml diagnose``, cross-modal evaluation and inference all
ask :func:`class_splits` which classes train, which validate and which are the held-out test
classes, so a run's settings (``data.train_fraction``, ``data.validation_fraction``,
``data.folds`` / ``data.fold``) mean the same classes everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from langdml.data.records import ImageDataset, class_disjoint_split, class_fold_split
from langdml.errors import DataError

PARTS = ("train", "val", "test")


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
) -> ClassSplits:
    """The class-disjoint split of ``dataset`` (``class_disjoint_split``: the first
    ``train_fraction`` of the classes by id train, the rest test), with a validation split carved
    from the train classes: their last ``validation_fraction``, or fold ``fold`` of ``folds``
    contiguous class folds (``class_fold_split``). The arguments are the ``data`` config's."""
    if not 0.0 <= validation_fraction < 1.0:
        raise DataError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    if folds and validation_fraction:
        raise DataError("set folds or validation_fraction, not both")
    split = class_disjoint_split(dataset, train_fraction)
    if validation_fraction > 0:
        inner = class_disjoint_split(split.train, 1.0 - validation_fraction)
    elif folds:
        inner = class_fold_split(split.train, folds, fold)
    else:
        return ClassSplits(train=split.train, test=split.test)
    return ClassSplits(train=inner.train, test=split.test, val=inner.test)
