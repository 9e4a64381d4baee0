"""Loaders for datasets on disk: CUB-200-2011, Cars196, Stanford Online Products, a folder per
class, and HF ``datasets``.

Every loader returns one :class:`~langdml.data.records.ImageDataset`:

- ``labels`` are ``0..C-1`` in the dataset's own class-id order (CUB ids 1..200 → 0..199, Cars
  1..196 → 0..195, SOP 1..22634 → 0..22633), so :func:`~langdml.data.records.class_disjoint_split`
  (first half of classes train, the rest test) is the DML protocol split. Classes without any
  image are dropped (the order of the rest is kept): an empty class cannot be sampled or queried.
- images load lazily: ``ImageSource`` items are file paths opened by
  :func:`~langdml.data.records.open_rgb` (an unreadable file is a ``DataError`` naming the file
  when it is loaded), or row indices for ``hf:``. Loaders check that every file an index lists
  exists and report the count of missing files with the first one.
- ``fingerprint`` hashes the index content (paths relative to the dataset root, labels, class
  names), so caches key on content and survive moving the dataset folder.
- the ``cache_dir`` argument is accepted for the common loader signature; these formats are read
  in place and nothing is cached.

Specs (``langdml.data.load_dataset``): ``cub200:PATH``, ``cars196:PATH``, ``sop:PATH``,
``imagefolder:PATH``, ``hf:NAME_OR_PATH[?split=S&image=COL&label=COL]`` — see each loader.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from langdml._extras import require
from langdml.data.records import DatasetSplit, ImageDataset, ImageSource, open_rgb
from langdml.errors import DataError
from langdml.io import stable_hash

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif")

_ID_PREFIX = re.compile(r"^\s*\d+\.(?=\D)")  # "001.Black_footed_Albatross"; not "3.5 inch"
_WS = re.compile(r"\s+")


# ----------------------------------------------------------------------------- shared helpers


def clean_class_name(name: str) -> str:
    """A class folder name as words for a language model.

    ``"001.Black_footed_Albatross"`` → ``"black footed albatross"``: drop a leading ``NNN.`` class
    id, underscores → spaces, collapse whitespace, lower-case. A name that would become empty is
    returned stripped instead.
    """
    text = _ID_PREFIX.sub("", name)
    text = _WS.sub(" ", text.replace("_", " ")).strip().lower()
    return text or name.strip()


def collapse_whitespace(name: str) -> str:
    """Strip and collapse whitespace: ``" AM  General Hummer "`` → ``"AM General Hummer"``."""
    return _WS.sub(" ", name).strip()


def natural_key(name: str) -> tuple:
    """Sort key comparing digit runs as numbers, so ``"2.b"`` < ``"10.a"``; ties broken by name."""
    parts = re.split(r"(\d+)", name)
    # re.split with a group alternates text/digits, so equal positions always hold equal types.
    return (tuple(int(p) if i % 2 else p for i, p in enumerate(parts)), name)


def _existing_path(arg: str | os.PathLike | None, kind: str) -> Path:
    if arg is None or not str(arg).strip():
        raise DataError(f"{kind}: no path given; expected {kind}:PATH")
    path = Path(str(arg).strip()).expanduser()
    if not path.exists():
        raise DataError(f"{kind}: path {path} does not exist")
    return path.resolve()  # image paths must not depend on the working directory later


def _require_dir(path: Path, kind: str) -> Path:
    if not path.is_dir():
        raise DataError(f"{kind}: {path} is not a folder")
    return path


def _find_root(path: Path, marker: str, official_dir: str, kind: str, expected: str) -> Path:
    """``path`` itself or its ``official_dir`` child, whichever holds ``marker``."""
    _require_dir(path, kind)
    for root in (path, path / official_dir):
        if (root / marker).is_file():
            return root
    raise DataError(
        f"{kind}: {marker} not found in {path} (nor in {path / official_dir}); expected {expected}"
    )


def _read_table(file: Path, kind: str, columns: Sequence[str], header: bool = False) -> list[list]:
    """Whitespace-separated rows; columns named ``*id`` are integers, the last may hold spaces."""
    if not file.is_file():
        raise DataError(f"{kind}: missing {file.name} in {file.parent}")
    try:
        lines = file.read_text(encoding="utf-8-sig").splitlines()  # tolerate a BOM
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{kind}: cannot read {file}: {exc}") from None
    rows = []
    expected = " ".join(f"<{c}>" for c in columns)
    header_pending = header
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if header_pending:
            header_pending = False
            if line.split() != list(columns):
                raise DataError(
                    f"{kind}: {file.name} line {lineno}: expected the header "
                    f"{' '.join(columns)!r}, got {line.strip()!r}"
                )
            continue
        fields = line.split(maxsplit=len(columns) - 1)
        try:
            if len(fields) != len(columns):
                raise ValueError
            row = [
                int(f) if c.endswith("id") else f.strip()
                for f, c in zip(fields, columns, strict=True)
            ]
        except ValueError:
            raise DataError(
                f"{kind}: {file.name} line {lineno}: expected {expected!r}, got {line.strip()!r}"
            ) from None
        rows.append(row)
    if not rows:
        raise DataError(f"{kind}: {file} has no entries")
    return rows


def _id_map(rows: Iterable[list], file: Path, kind: str) -> dict[int, Any]:
    out: dict[int, Any] = {}
    for row in rows:
        if row[0] in out:
            raise DataError(f"{kind}: {file.name} lists id {row[0]} twice")
        out[row[0]] = row[1]
    return out


def _check_files(root: Path, rel_paths: Sequence[str], kind: str, index: str) -> list[str]:
    # Plain strings: pathlib objects cost ~10 µs each, noticeable over SOP's 120k images.
    base = str(root)
    paths = [os.path.join(base, p) for p in rel_paths]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise DataError(
            f"{kind}: {len(missing)} of {len(paths)} images listed in {index} are missing, "
            f"first: {missing[0]}"
        )
    return paths


def _compact(raw_ids: Sequence[Any], class_order: Sequence[Any]) -> tuple[np.ndarray, list[int]]:
    """Labels 0..K-1 over the classes of ``class_order`` that occur in ``raw_ids``, order kept.

    Returns ``(labels, kept)`` with ``kept[k]`` the position in ``class_order`` of label ``k``.
    """
    position = {cid: i for i, cid in enumerate(class_order)}
    raw_pos = np.fromiter((position[c] for c in raw_ids), dtype=np.int64, count=len(raw_ids))
    present = np.zeros(len(class_order), dtype=bool)
    present[raw_pos] = True
    kept = np.flatnonzero(present)
    remap = np.full(len(class_order), -1, dtype=np.int64)
    remap[kept] = np.arange(len(kept))
    return remap[raw_pos], kept.tolist()


def _file_dataset(
    name: str,
    kind: str,
    paths: Sequence[str | Path],
    rel_paths: Sequence[str],
    labels: np.ndarray,
    class_names: list[str],
    extras: dict[str, list] | None = None,
) -> ImageDataset:
    fingerprint = stable_hash(
        [kind, list(rel_paths), np.asarray(labels).tolist(), class_names, extras or {}]
    )
    return ImageDataset(
        name=name,
        images=ImageSource([str(p) for p in paths], open_rgb),
        labels=labels,
        class_names=class_names,
        extras=extras or {},
        fingerprint=fingerprint,
    )


# ----------------------------------------------------------------------------- CUB-200-2011


def load_cub200(
    path: str | os.PathLike | None, cache_dir: str | Path | None = None
) -> ImageDataset:
    """CUB-200-2011 from its official files.

    ``PATH`` is the ``CUB_200_2011`` folder (or its parent) holding ``images.txt`` (``<image_id>
    <relative path>``), ``classes.txt`` (``<class_id> <folder name>``), ``image_class_labels.txt``
    (``<image_id> <class_id>``) and ``images/``. Images are ordered by image id, labels by class id
    (1..200 → 0..199, so the class-disjoint split is the usual 100/100), class names cleaned with
    :func:`clean_class_name` ("001.Black_footed_Albatross" → "black footed albatross").
    """
    kind = "cub200"
    root = _find_root(
        _existing_path(path, kind),
        "images.txt",
        "CUB_200_2011",
        kind,
        "the CUB_200_2011 folder with images.txt, classes.txt, image_class_labels.txt and images/",
    )
    images = _id_map(
        _read_table(root / "images.txt", kind, ["image_id", "path"]), root / "images.txt", kind
    )
    classes = _id_map(
        _read_table(root / "classes.txt", kind, ["class_id", "name"]), root / "classes.txt", kind
    )
    label_file = root / "image_class_labels.txt"
    image_labels = _id_map(
        _read_table(label_file, kind, ["image_id", "class_id"]), label_file, kind
    )

    unknown_images = sorted(set(image_labels) - set(images))
    if unknown_images:
        raise DataError(
            f"{kind}: image_class_labels.txt labels {len(unknown_images)} image id(s) not in "
            f"images.txt, first: {unknown_images[0]}"
        )
    image_ids = sorted(images)
    unlabelled = [i for i in image_ids if i not in image_labels]
    if unlabelled:
        raise DataError(
            f"{kind}: {len(unlabelled)} image(s) of images.txt have no label in "
            f"image_class_labels.txt, first: image id {unlabelled[0]}"
        )
    unknown = sorted({c for c in image_labels.values() if c not in classes})
    if unknown:
        raise DataError(
            f"{kind}: image_class_labels.txt uses class id(s) {unknown[:5]} not in classes.txt "
            f"(known ids {min(classes)}..{max(classes)})"
        )
    class_ids = sorted(classes)
    raw = [image_labels[i] for i in image_ids]
    labels, kept = _compact(raw, class_ids)
    rel = [f"images/{images[i]}" for i in image_ids]
    paths = _check_files(root, rel, kind, "images.txt")
    names = [clean_class_name(classes[class_ids[k]]) for k in kept]
    return _file_dataset("cub200", kind, paths, rel, labels, names)


# ----------------------------------------------------------------------------- Cars196


def load_cars196(
    path: str | os.PathLike | None, cache_dir: str | Path | None = None
) -> ImageDataset:
    """Stanford Cars (196 classes) from ``cars_annos.mat`` or from one folder per class.

    - ``cars_annos.mat`` (``PATH`` is the file or its folder): struct array ``annotations`` with
      fields ``relative_im_path`` (e.g. ``car_ims/000001.jpg``, relative to the .mat's folder) and
      ``class`` (1..196), and the cell array ``class_names``. Images keep the file's order;
      labels follow class ids (1..196 → 0..195, so the class-disjoint split is the usual 98/98).
    - per-class folders: ``PATH/<class name>/<image>``, or ``PATH/train/<class name>/`` and
      ``PATH/test/<class name>/`` merged by class name. Classes are ordered by
      :func:`natural_key` of the folder name. This groups classes by make like the official ids
      but need not match their order within a make, so the 98/98 split can differ from the
      official one by a few classes: use ``cars_annos.mat`` for the exact protocol.

    Class names are kept as given, with whitespace stripped and collapsed.
    """
    kind = "cars196"
    target = _existing_path(path, kind)
    mat = target if target.is_file() else target / "cars_annos.mat"
    if mat.is_file():
        return _cars_from_mat(mat, kind)
    layout_root = target
    subdirs = _class_dirs(target)
    if subdirs and all(d.name.lower() in ("train", "test") for d in subdirs):
        folders = [c for d in subdirs for c in _class_dirs(d)]
    else:
        folders = subdirs
    if not folders:
        raise DataError(
            f"{kind}: {target} has no cars_annos.mat and no class folders; expected "
            "cars_annos.mat with car_ims/, or one folder per class (PATH/<class name>/<image>)"
        )
    return _folder_dataset(
        "cars196",
        kind,
        layout_root,
        folders,
        collapse_whitespace,
        hint="expected cars_annos.mat with car_ims/, or one folder per class",
    )


def _mat_scalar(value: Any) -> Any:
    """Unwrap MATLAB's nested 1×1 arrays (``array([[3]])``, ``array(['name'])``) to a scalar."""
    arr = np.asarray(value)
    while arr.dtype == object and arr.size == 1:
        arr = np.asarray(arr.reshape(-1)[0])
    if arr.size != 1:
        raise ValueError(f"expected one value, got an array of shape {arr.shape}")
    value = arr.reshape(-1)[0]
    return value.item() if isinstance(value, np.generic) else value


def _cars_from_mat(mat: Path, kind: str) -> ImageDataset:
    from scipy.io import loadmat

    try:
        data = loadmat(str(mat))
    except Exception as exc:  # scipy raises several unrelated types for non-.mat files
        raise DataError(f"{kind}: cannot read {mat} as a MATLAB file: {exc}") from None
    ann = data.get("annotations")
    names_cell = data.get("class_names")
    fields = getattr(getattr(ann, "dtype", None), "names", None) or ()
    if ann is None or names_cell is None or not {"relative_im_path", "class"} <= set(fields):
        raise DataError(
            f"{kind}: {mat.name} must hold a struct array 'annotations' with fields "
            "relative_im_path and class, and a cell array 'class_names'"
        )
    try:
        class_names = [collapse_whitespace(str(_mat_scalar(n))) for n in names_cell.reshape(-1)]
        records = ann.reshape(-1)
        rel = [str(_mat_scalar(r["relative_im_path"])).replace("\\", "/") for r in records]
        raw = [int(_mat_scalar(r["class"])) for r in records]
    except (ValueError, TypeError) as exc:
        raise DataError(f"{kind}: malformed entry in {mat.name}: {exc}") from None
    if not rel:
        raise DataError(f"{kind}: {mat.name} has no annotations")
    class_ids = list(range(1, len(class_names) + 1))
    unknown = sorted({c for c in raw if not 1 <= c <= len(class_names)})
    if unknown:
        raise DataError(
            f"{kind}: {mat.name} uses class id(s) {unknown[:5]} outside 1..{len(class_names)} "
            "(the number of class_names)"
        )
    labels, kept = _compact(raw, class_ids)
    paths = _check_files(mat.parent, rel, kind, mat.name)
    return _file_dataset("cars196", kind, paths, rel, labels, [class_names[k] for k in kept])


# ----------------------------------------------------------------------------- SOP


def load_sop(path: str | os.PathLike | None, cache_dir: str | Path | None = None) -> ImageDataset:
    """Stanford Online Products from ``Ebay_train.txt`` and ``Ebay_test.txt``.

    ``PATH`` is the ``Stanford_Online_Products`` folder (or its parent). Each file has the header
    ``image_id class_id super_class_id path`` and rows like
    ``1 1 1 bicycle_final/111085122871_0.JPG``.
    Labels follow class ids; the official split has train classes 1..11318 and test classes
    11319..22634, so train classes come first. The first-half rule of ``class_disjoint_split``
    on all 22634 classes puts 11317 classes in train, i.e. it moves ONE class (id 11318) from the
    official train side to test; :func:`official_split` gives the exact official split.

    The class name is the super-class name from the folder (``bicycle_final`` → ``bicycle``), as
    language-guided DML used for SOP: 12 names over 22634 classes, so ``class_names`` are NOT
    unique here. Per-image extras: ``super_class`` (that name), ``super_class_id`` and
    ``official_split`` (``"train"``/``"test"``, the file the image came from).
    """
    kind = "sop"
    root = _find_root(
        _existing_path(path, kind),
        "Ebay_train.txt",
        "Stanford_Online_Products",
        kind,
        "the Stanford_Online_Products folder with Ebay_train.txt and Ebay_test.txt",
    )
    columns = ["image_id", "class_id", "super_class_id", "path"]
    rows: list[tuple[str, list]] = []
    for split in ("train", "test"):
        file = root / f"Ebay_{split}.txt"
        rows += [(split, r) for r in _read_table(file, kind, columns, header=True)]

    class_split: dict[int, str] = {}
    class_super: dict[int, str] = {}
    for split, (_, class_id, _, rel) in rows:
        if class_split.setdefault(class_id, split) != split:
            raise DataError(
                f"{kind}: class id {class_id} appears in both Ebay_train.txt and Ebay_test.txt"
            )
        if class_id not in class_super:
            class_super[class_id] = _sop_super_class(rel)
    rel = [r[3].replace("\\", "/") for _, r in rows]
    paths = _check_files(root, rel, kind, "Ebay_train.txt/Ebay_test.txt")
    class_ids = sorted(class_split)
    labels, kept = _compact([r[1] for _, r in rows], class_ids)
    names = [class_super[class_ids[k]] for k in kept]
    extras = {
        "super_class": [class_super[r[1]] for _, r in rows],
        "super_class_id": [int(r[2]) for _, r in rows],
        "official_split": [split for split, _ in rows],
    }
    return _file_dataset("sop", kind, paths, rel, labels, names, extras)


def _sop_super_class(rel_path: str) -> str:
    folder = rel_path.replace("\\", "/").split("/", 1)[0]
    return clean_class_name(re.sub(r"_final$", "", folder))


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


# ----------------------------------------------------------------------------- folder per class


def load_imagefolder(
    path: str | os.PathLike | None, cache_dir: str | Path | None = None
) -> ImageDataset:
    """One folder per class: ``PATH/<class name>/<image>``.

    The class name is the folder name, unchanged (the text stage's default cleaner later drops a
    ``NNN.`` prefix and underscores). Classes are ordered by :func:`natural_key` of the folder
    name (digit runs compare as numbers, so ``2.x`` precedes ``10.x``; zero-padded names sort as
    usual), which is the class order the class-disjoint split uses. Images are files with
    extensions jpg/jpeg/png/bmp/webp/gif (any case) anywhere below the class folder, nested folders
    included (as torchvision's ImageFolder does); hidden files/folders and other files are ignored,
    as are files directly in ``PATH``. Class folders without images are skipped.
    """
    kind = "imagefolder"
    root = _require_dir(_existing_path(path, kind), kind)
    folders = _class_dirs(root)
    if not folders:
        loose = [p.name for p in root.iterdir() if _is_image(p.name)]
        detail = f" ({len(loose)} images lie directly in it)" if loose else ""
        raise DataError(
            f"{kind}: {root} has no class folders{detail}; expected PATH/<class name>/<image>"
        )
    return _folder_dataset(
        f"imagefolder:{root.name}",
        kind,
        root,
        folders,
        lambda n: n,
        hint="expected PATH/<class name>/<image>",
    )


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def _class_dirs(root: Path) -> list[Path]:
    try:
        found = [
            Path(e.path) for e in os.scandir(root) if e.is_dir() and not e.name.startswith(".")
        ]
    except OSError as exc:
        raise DataError(f"cannot list folder {root}: {exc}") from None
    return sorted(found)  # scandir order is arbitrary; image order must be reproducible


def _images_below(folder: Path, root: Path) -> list[str]:
    """Image files below ``folder`` as paths relative to ``root`` (posix), in natural order."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel_dir = os.path.relpath(dirpath, root).replace(os.sep, "/")
        found += [f"{rel_dir}/{f}" for f in filenames if _is_image(f)]
    return sorted(found, key=natural_key)


def _folder_dataset(
    name: str, kind: str, root: Path, folders: Sequence[Path], to_name: Any, hint: str
) -> ImageDataset:
    """Images grouped by class folder; folders sharing a name (train/ and test/) are one class."""
    by_name: dict[str, list[Path]] = {}
    for folder in folders:
        by_name.setdefault(to_name(folder.name), []).append(folder)
    rel: list[str] = []
    labels: list[int] = []
    class_names: list[str] = []
    for cname in sorted(by_name, key=natural_key):
        files = [f for folder in by_name[cname] for f in _images_below(folder, root)]
        if not files:
            continue
        labels += [len(class_names)] * len(files)
        class_names.append(cname)
        rel += files
    if not rel:
        raise DataError(
            f"{kind}: no images ({'/'.join(e[1:] for e in IMAGE_EXTENSIONS)}) in the class folders "
            f"under {root}; {hint}"
        )
    paths = [os.path.join(root, r) for r in rel]
    return _file_dataset(name, kind, paths, rel, np.asarray(labels), class_names)


# ----------------------------------------------------------------------------- HF datasets

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
        return img.convert("RGB")


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
                f"hf: cannot read {path} as a HF dataset ({_first_line(exc)}); expected a folder "
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
                f"hf: cannot load {target!r} from the hub ({_first_line(exc)}); offline, run "
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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


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
        labels, kept = _compact(raw.tolist(), list(range(feat.num_classes)))
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
    labels, kept = _compact(values, order)
    return labels, [str(order[k]) for k in kept]
