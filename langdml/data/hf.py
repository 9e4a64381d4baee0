"""HF ``datasets`` (``hf:NAME_OR_PATH[?split=S&image=COL&label=COL]``)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from langdml._extras import require
from langdml.data._files import compact
from langdml.data.images import to_rgb
from langdml.data.records import ImageDataset, ImageSource
from langdml.errors import DataError, first_line
from langdml.io import stable_hash

_HF_OPTIONS = ("split", "image", "label")
_LABEL_COLUMN_GUESSES = ("label", "labels", "fine_label", "class", "target")


def split_spec_options(arg: str, kind: str, allowed: Sequence[str]) -> tuple[str, dict[str, str]]:
    """``"TARGET?key=value&key=value"`` → ``(TARGET, {key: value})``.

    A target that exists on disk as written is taken whole (a path may contain ``?``).
    """
    if "?" not in arg or Path(arg).expanduser().exists():
        return arg, {}
    target, _, query = arg.rpartition("?")
    options: dict[str, str] = {}
    for item in filter(None, query.split("&")):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not value.strip():
            raise DataError(f"{kind}: option {item!r} in {arg!r} must look like key=value")
        if key not in allowed:
            raise DataError(
                f"{kind}: unknown option {key!r} in {arg!r}; expected one of: {', '.join(allowed)}"
            )
        options[key] = value.strip()
    return target, options


def load_hf(arg: str | None, cache_dir: str | Path | None = None) -> ImageDataset:
    """A HF ``datasets`` dataset: ``hf:NAME_OR_PATH[?split=S&image=COL&label=COL]``.

    ``NAME_OR_PATH`` is a folder written by ``save_to_disk`` (a ``Dataset`` or ``DatasetDict``),
    another local folder ``datasets.load_dataset`` reads (parquet, csv, an imagefolder, ...), or a
    hub name (``load_dataset(NAME)``, which needs the hub or its local HF cache; offline, save it
    with ``save_to_disk`` on a connected machine and pass that folder). Options:

    - ``split``: a split name, several joined by ``+`` (``train+test``), or ``all`` (the default):
      DML splits by class, so all labelled images of all splits are used by default. Per-image
      extra ``split`` records where each image came from.
    - ``image``: the image column (default: the first ``datasets.Image`` column; a column of file
      paths is decoded as images too).
    - ``label``: the label column (default: the first ``ClassLabel`` column, else one named
      label/labels/fine_label/class/target).

    Labels: a ``ClassLabel`` keeps its id order and names; other values are sorted (numbers
    numerically) and named ``str(value)``. Rows labelled -1 (unlabelled) are an error: pick
    labelled splits with ``split=``.
    """
    kind = "hf"
    if arg is None or not str(arg).strip():
        raise DataError("hf: no dataset given; expected hf:NAME_OR_PATH")
    target, options = split_spec_options(str(arg).strip(), kind, _HF_OPTIONS)
    parts, source = _hf_open(target)
    parts = _hf_select_splits(parts, options.get("split"), source)
    import datasets

    first = parts[0][1]
    image_col = _hf_image_column(first, options.get("image"), source)
    label_col = _hf_label_column(first, options.get("label"), source)
    for split, ds in parts[1:]:
        missing = {image_col, label_col} - set(ds.column_names)
        if missing:
            raise DataError(f"hf: split {split!r} of {source} lacks column(s) {sorted(missing)}")
    try:
        table = (
            datasets.concatenate_datasets(
                [ds.select_columns([image_col, label_col]) for _, ds in parts]
            )
            if len(parts) > 1
            else first.select_columns([image_col, label_col])
        )
    except ValueError as exc:  # features differ between splits
        raise DataError(f"hf: splits of {source} cannot be combined: {exc}") from None
    if not isinstance(table.features[image_col], datasets.Image):
        table = table.cast_column(image_col, datasets.Image())
    elif not table.features[image_col].decode:
        table = table.cast_column(image_col, datasets.Image(decode=True))
    if len(table) == 0:
        raise DataError(f"hf: {source} has no rows in the selected split(s)")

    labels, class_names = _hf_labels(table, label_col, source)
    split_col = [s for s, ds in parts for _ in range(len(ds))]
    fingerprint = stable_hash(
        [
            kind,
            [(s, getattr(ds, "_fingerprint", None), len(ds)) for s, ds in parts],
            image_col,
            label_col,
            class_names,
            hashlib.sha256(labels.tobytes()).hexdigest(),
        ]
    )
    name = "hf:" + (
        Path(target).expanduser().resolve().name if Path(target).expanduser().exists() else target
    )
    return ImageDataset(
        name=name,
        images=ImageSource(
            list(range(len(table))), _HFImageLoader(table.select_columns([image_col]), image_col)
        ),
        labels=labels,
        class_names=class_names,
        extras={"split": split_col},
        fingerprint=fingerprint,
    )


class _HFImageLoader:
    """Row index → RGB image; a class, not a closure, so DataLoader workers can pickle it."""

    def __init__(self, table: Any, column: str) -> None:
        self.table = table
        self.column = column

    def __call__(self, row: Any) -> Image.Image:
        try:
            img = self.table[int(row)][self.column]
        except (OSError, ValueError) as exc:
            raise DataError(f"hf: cannot decode the image of row {row}: {exc}") from None
        if img is None:
            raise DataError(f"hf: row {row} has no image in column {self.column!r}")
        return to_rgb(img)


def _hf_open(target: str) -> tuple[list[tuple[str, Any]], str]:
    """[(split name, Dataset)] from a saved folder, another local folder, or the hub."""
    datasets = require("datasets", "data", f"dataset 'hf:{target}'")

    path = Path(target).expanduser()
    if path.exists():
        source = str(path)
        saved = path.is_dir() and any(
            (path / f).is_file() for f in ("dataset_dict.json", "state.json")
        )
        try:
            obj = datasets.load_from_disk(source) if saved else datasets.load_dataset(source)
        except Exception as exc:  # datasets raises many types for unreadable folders
            raise DataError(
                f"hf: cannot read {path} as a HF dataset ({first_line(exc)}); expected a folder "
                "written by save_to_disk or data files datasets.load_dataset reads"
            ) from None
    elif target.startswith((".", "/", "~")):
        raise DataError(f"hf: path {target} does not exist")
    else:
        source = repr(target)
        try:
            obj = datasets.load_dataset(target)
        except Exception as exc:
            raise DataError(
                f"hf: cannot load {target!r} from the hub ({first_line(exc)}); offline, run "
                f"datasets.load_dataset({target!r}).save_to_disk(DIR) on a connected machine, "
                "copy DIR here and use hf:DIR"
            ) from None
    if isinstance(obj, datasets.DatasetDict):
        parts = list(obj.items())
    elif isinstance(obj, datasets.Dataset):
        parts = [(str(obj.split) if obj.split is not None else "data", obj)]
    else:
        raise DataError(f"hf: {source} is a streaming/iterable dataset; save it with save_to_disk")
    if not parts:
        raise DataError(f"hf: {source} has no splits")
    return parts, source


def _hf_select_splits(parts: list[tuple[str, Any]], wanted: str | None, source: str) -> list:
    if wanted is None or wanted == "all":
        return parts
    available = dict(parts)
    names = [s.strip() for s in wanted.split("+") if s.strip()]
    unknown = [s for s in names if s not in available]
    if len(parts) == 1 and names == [parts[0][0]]:
        return parts
    if unknown or not names:
        raise DataError(
            f"hf: split {wanted!r} not in {source}; available: {', '.join(available)} (or all)"
        )
    return [(s, available[s]) for s in names]


def _hf_image_column(ds: Any, wanted: str | None, source: str) -> str:
    import datasets

    feats = ds.features
    if wanted is not None:
        if wanted not in feats:
            raise DataError(
                f"hf: image column {wanted!r} not in {source}; columns: {', '.join(feats)}"
            )
        feat = feats[wanted]
        is_path = isinstance(feat, datasets.Value) and feat.dtype in ("string", "large_string")
        if not (isinstance(feat, datasets.Image) or is_path):
            raise DataError(
                f"hf: column {wanted!r} of {source} holds {feat!r}, not images or image paths"
            )
        return wanted
    for col, feat in feats.items():
        if isinstance(feat, datasets.Image):
            return col
    raise DataError(
        f"hf: {source} has no Image column; name one with ?image=COL (columns: {', '.join(feats)})"
    )


def _hf_label_column(ds: Any, wanted: str | None, source: str) -> str:
    import datasets

    feats = ds.features
    if wanted is not None:
        if wanted not in feats:
            raise DataError(
                f"hf: label column {wanted!r} not in {source}; columns: {', '.join(feats)}"
            )
        _check_label_feature(wanted, feats[wanted], feats, source)
        return wanted
    for col, feat in feats.items():
        if isinstance(feat, datasets.ClassLabel):
            return col
    for col in _LABEL_COLUMN_GUESSES:
        if col in feats:
            return col
    raise DataError(
        f"hf: {source} has no ClassLabel column; name the label column with ?label=COL "
        f"(columns: {', '.join(feats)})"
    )


def _check_label_feature(col: str, feat: Any, feats: Any, source: str) -> None:
    """A ``?label=`` column must hold one class (a ClassLabel, an integer or a string) per row."""
    import datasets

    if isinstance(feat, datasets.ClassLabel):
        return
    dtype = str(getattr(feat, "dtype", ""))
    class_like = dtype.startswith(("int", "uint")) or dtype in ("string", "large_string", "bool")
    if isinstance(feat, datasets.Value) and class_like:
        return
    labels = [c for c, f in feats.items() if isinstance(f, datasets.ClassLabel)]
    hint = f"; its ClassLabel column is {labels[0]!r}" if labels else ""
    raise DataError(
        f"hf: ?label={col} names a column of {type(feat).__name__} "
        f"{'(' + dtype + ') ' if dtype else ''}values in {source}, not a label column; expected a "
        f"ClassLabel, integer or string column{hint}"
    )


def _hf_labels(table: Any, label_col: str, source: str) -> tuple[np.ndarray, list[str]]:
    import datasets

    feat = table.features[label_col]
    values = table[label_col][:]  # one column only: no image is decoded
    if isinstance(feat, datasets.ClassLabel):
        raw = np.asarray(values, dtype=np.int64)
        bad = int(np.sum((raw < 0) | (raw >= feat.num_classes)))
        if bad:
            raise DataError(
                f"hf: {bad} row(s) of {source} have no class in {label_col!r} (label -1 or out of "
                f"range); choose labelled splits with ?split="
            )
        labels, kept = compact(raw.tolist(), list(range(feat.num_classes)))
        return labels, [str(feat.names[k]) for k in kept]
    if not isinstance(feat, datasets.Value):
        raise DataError(
            f"hf: label column {label_col!r} of {source} holds {feat!r}; expected one class per row"
        )
    if any(v is None for v in values):
        raise DataError(f"hf: label column {label_col!r} of {source} has empty values")
    try:
        order = sorted(set(values))
    except TypeError:
        raise DataError(f"hf: label column {label_col!r} of {source} mixes value types") from None
    labels, kept = compact(values, order)
    return labels, [str(order[k]) for k in kept]
