"""The one dataset record every loader returns, and the class-disjoint split of the DML protocol."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from langdml.data.names import distinct_names
from langdml.errors import DataError
from langdml.io import stable_hash


@dataclass(frozen=True)
class ImageSource:
    """Lazy images: ``items[i]`` (a path, PIL image or row index) turned into RGB by ``load``."""

    items: Sequence[Any]
    load: Callable[[Any], Image.Image]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Image.Image:
        return self.load(self.items[i])

    def select(self, indices: Sequence[int]) -> ImageSource:
        return ImageSource([self.items[int(i)] for i in indices], self.load)


@dataclass
class ImageDataset:
    """Images with integer labels in ``[0, len(class_names))``.

    ``extras`` holds optional per-image columns (e.g. ``style`` for the emoji benchmark).
    ``fingerprint`` identifies the content, so caches (features, text embeddings) key on it.
    ``image_root``: the folder the image paths of a file-based dataset are relative to (None when
    the images are rows of a table, as for emoji and hf datasets); split files name images by it.
    """

    name: str
    images: ImageSource
    labels: np.ndarray
    class_names: list[str]
    extras: dict[str, list] = field(default_factory=dict)
    fingerprint: str = ""
    image_root: str | None = None

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if len(self.labels) != len(self.images):
            raise DataError(
                f"dataset {self.name!r}: {len(self.images)} images but {len(self.labels)} labels"
            )
        if len(self.labels) and (
            self.labels.min() < 0 or self.labels.max() >= len(self.class_names)
        ):
            raise DataError(
                f"dataset {self.name!r}: labels must lie in [0, {len(self.class_names)}), "
                f"got range [{self.labels.min()}, {self.labels.max()}]"
            )
        for key, column in self.extras.items():
            if len(column) != len(self.labels):
                raise DataError(f"dataset {self.name!r}: extra column {key!r} has wrong length")
        if not self.fingerprint:
            self.fingerprint = stable_hash(
                [
                    self.name,
                    self.class_names,
                    self.labels.tolist(),
                    [str(x) for x in self.images.items],
                ]
            )

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def shares_names(self) -> bool:
        """Whether several classes share a name (SOP: 22634 classes, 12 super-class names)."""
        return len(set(self.class_names)) < len(self.class_names)

    def distinct_class_names(self) -> tuple[list[str], np.ndarray]:
        """(distinct names in first-appearance order, (C,) row of each class's name)."""
        return distinct_names(self.class_names)

    def image(self, i: int) -> Image.Image:
        return self.images[i]

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=self.num_classes)

    def subset_classes(self, classes: Sequence[int], name_suffix: str) -> ImageDataset:
        """Images of the given classes, relabelled 0..len(classes)-1 in the given order."""
        classes = [int(c) for c in classes]
        remap = np.full(self.num_classes, -1, dtype=np.int64)
        remap[classes] = np.arange(len(classes))
        keep = np.flatnonzero(remap[self.labels] >= 0)
        return ImageDataset(
            name=f"{self.name}{name_suffix}",
            images=self.images.select(keep),
            labels=remap[self.labels[keep]],
            class_names=[self.class_names[c] for c in classes],
            extras={k: [v[i] for i in keep] for k, v in self.extras.items()},
            fingerprint=stable_hash([self.fingerprint, name_suffix, classes]),
            image_root=self.image_root,
        )


@dataclass
class DatasetSplit:
    train: ImageDataset
    test: ImageDataset


def class_disjoint_split(
    dataset: ImageDataset, train_fraction: float = 0.5, official: bool = True
) -> DatasetSplit:
    """The DML protocol: the first classes by id train, the rest test (never seen in training).

    With ``train_fraction=0.5`` and an odd class count, the extra class goes to the test half.
    A dataset whose files define the split (``extras["official_split"]``, e.g. SOP's
    11,318 / 11,316 classes) uses that split at ``train_fraction=0.5`` instead, unless
    ``official`` is False (a seeded class order cuts its own order).
    Applied to a train split it carves a validation split from TRAIN classes for tuning.
    """
    if not 0.0 < train_fraction < 1.0:
        raise DataError(f"train_fraction must be in (0, 1), got {train_fraction}")
    marks = set(dataset.extras.get("official_split", ()))
    if official and train_fraction == 0.5 and "train" in marks and len(marks) > 1:
        return official_split(dataset)
    n_train = int(dataset.num_classes * train_fraction)
    if n_train < 1 or n_train >= dataset.num_classes:
        raise DataError(
            f"dataset {dataset.name!r} has {dataset.num_classes} classes: too few to split "
            f"with train_fraction={train_fraction}"
        )
    classes = list(range(dataset.num_classes))
    return DatasetSplit(
        train=dataset.subset_classes(classes[:n_train], ":train"),
        test=dataset.subset_classes(classes[n_train:], ":test"),
    )


def class_fold_split(dataset: ImageDataset, folds: int, fold: int) -> DatasetSplit:
    """K-fold class-disjoint cross-validation of ``dataset`` (the TRAIN classes): the classes in
    label order cut into ``folds`` contiguous parts (sizes differ by at most one); part ``fold``
    is the validation split (``test``), the others train."""
    if folds < 2 or not 0 <= fold < folds:
        raise DataError(f"need folds >= 2 and 0 <= fold < folds, got folds {folds}, fold {fold}")
    if dataset.num_classes < folds:
        raise DataError(
            f"dataset {dataset.name!r} has {dataset.num_classes} classes: too few for {folds} folds"
        )
    parts = np.array_split(np.arange(dataset.num_classes), folds)
    held = parts[fold].tolist()
    rest = [c for i, p in enumerate(parts) if i != fold for c in p.tolist()]
    return DatasetSplit(
        train=dataset.subset_classes(rest, f":fold{fold}of{folds}-train"),
        test=dataset.subset_classes(held, f":fold{fold}of{folds}-val"),
    )


def official_split(dataset: ImageDataset) -> DatasetSplit:
    """The split a dataset's own files define (``extras["official_split"]``, e.g. SOP's).

    Train classes are those whose images are marked ``"train"``; both halves keep label order.
    """
    marks = dataset.extras.get("official_split")
    if marks is None:
        raise DataError(
            f"dataset {dataset.name!r} has no official split (no 'official_split' column); "
            "use class_disjoint_split"
        )
    marks_arr = np.asarray(marks)
    train = set(np.unique(dataset.labels[marks_arr == "train"]).tolist())
    test = set(np.unique(dataset.labels[marks_arr != "train"]).tolist())
    if train & test:
        raise DataError(
            f"dataset {dataset.name!r}: {len(train & test)} class(es) have images on both sides "
            "of the official split"
        )
    return DatasetSplit(
        train=dataset.subset_classes(sorted(train), ":train"),
        test=dataset.subset_classes(sorted(test), ":test"),
    )


