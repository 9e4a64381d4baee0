"""The shapes benchmark: procedurally rendered classes named by what they look like.

Each class is one (colour, fill pattern, shape) combination, named by those attributes ("red
striped star", "blue dotted hexagon"): 8 colours × 6 fills × 8 shapes = 384 classes, so by
construction a class name's words describe its appearance (the premise of language guidance that
the emoji benchmark lacks). Each class has ``IMAGES_PER_CLASS`` renderings that vary position,
scale, rotation, background, stroke width and render style (``langdml.data.shape_render``); the
pixels are a pure function of the render seed, and a build takes seconds offline.

Two specs read the same build, with different class orders (the split is always the first half of
the class ids for training, the rest for testing):

- ``shapes``: a seeded permutation of the combinations, so the test classes are unseen
  *combinations* of colours, fills and shapes that all occur in training;
- ``shapes:holdout``: every class of one colour (``HOLDOUT_COLOUR``) is a test class, so the test
  classes also hold an attribute value never seen in training (the rest of the test half are
  unseen combinations of the other colours).

Both orders are pinned: ``shapes_benchmark.tsv`` beside this module lists every class (id, name,
attributes, split, holdout id, holdout split) and its SHA-256 is checked on every build and load.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from langdml._extras import require
from langdml.data.records import ImageDataset, ImageSource
from langdml.data.saved import META, save, verify_built
from langdml.data.shape_render import COLOURS, FILLS, SHAPES, render
from langdml.errors import DataError
from langdml.io import cache_root

IMAGE_SIZE = 128
IMAGES_PER_CLASS = 6
HOLDOUT_COLOUR = "purple"
CLASS_ORDER_SEED = 0
PIN_FILE = Path(__file__).with_name("shapes_benchmark.tsv")
PIN_SHA256 = "7e6cfff2759266a4add3062196f6d294335af4913d927b98ba86d57f7d875038"
VARIANTS = ("holdout",)
NUISANCE = ("background", "render_style", "stroke")  # per-image columns the render draws
_HEADER = ("id", "name", "colour", "fill", "shape", "split", "holdout_id", "holdout_split")


@dataclass(frozen=True)
class ShapeClass:
    """One class of the benchmark: its attributes, its id in each order and its split."""

    id: int
    colour: str
    fill: str
    shape: str
    holdout_id: int

    @property
    def name(self) -> str:
        return f"{self.colour} {self.fill} {self.shape}"

    @property
    def key(self) -> tuple[int, int, int]:
        """Attribute indices: what seeds the class's renderings (the same in both orders)."""
        return (list(COLOURS).index(self.colour), FILLS.index(self.fill), SHAPES.index(self.shape))


def class_table(seed: int = CLASS_ORDER_SEED) -> list[ShapeClass]:
    """The class list, derived: a seeded permutation of all combinations (the ``shapes`` order);
    the ``shapes:holdout`` order puts the first half of the other colours' classes (in that
    order) first and then every remaining class, the held-out colour's included, in that order."""
    combos = list(itertools.product(COLOURS, FILLS, SHAPES))
    perm = np.random.default_rng(seed).permutation(len(combos))
    ordered = [combos[i] for i in perm]
    n_train = len(ordered) // 2
    seen = [i for i, (colour, _, _) in enumerate(ordered) if colour != HOLDOUT_COLOUR][:n_train]
    rest = [i for i in range(len(ordered)) if i not in set(seen)]
    holdout_id = {old: new for new, old in enumerate(seen + rest)}
    return [
        ShapeClass(i, colour, fill, shape, holdout_id[i])
        for i, (colour, fill, shape) in enumerate(ordered)
    ]


def table_text(classes: list[ShapeClass]) -> str:
    """The pin file's content for ``classes``."""
    n_train = len(classes) // 2
    lines = [
        "# The shapes benchmark's classes (langdml.data.shapes.class_table); pinned by SHA-256.",
        "\t".join(_HEADER),
    ]
    for c in classes:
        split = "train" if c.id < n_train else "test"
        held = "train" if c.holdout_id < n_train else "test"
        lines.append(
            f"{c.id}\t{c.name}\t{c.colour}\t{c.fill}\t{c.shape}\t{split}\t{c.holdout_id}\t{held}"
        )
    return "\n".join(lines) + "\n"


def pinned_classes() -> list[ShapeClass]:
    """The pinned class list (by ``shapes`` id); checks the file's SHA-256."""
    data = PIN_FILE.read_bytes()
    if hashlib.sha256(data).hexdigest() != PIN_SHA256:
        raise DataError(f"{PIN_FILE} does not match its pinned SHA-256 {PIN_SHA256[:16]}...")
    rows = [x.split("\t") for x in data.decode("utf-8").splitlines() if x and x[0] != "#"]
    if tuple(rows[0]) != _HEADER:
        raise DataError(f"{PIN_FILE}: expected the columns {', '.join(_HEADER)}")
    return [ShapeClass(int(r[0]), r[2], r[3], r[4], int(r[6])) for r in rows[1:]]


def parse_variant(arg: str | None) -> str | None:
    """None for ``shapes``, ``"holdout"`` for ``shapes:holdout``; anything else is an error."""
    if arg is None or not arg.strip():
        return None
    variant = arg.strip().lower()
    if variant not in VARIANTS:
        raise DataError(
            f"unknown shapes variant {arg!r}; expected 'shapes' or 'shapes:holdout' "
            f"(test classes of the colour {HOLDOUT_COLOUR!r}, never seen in training)"
        )
    return variant


def dataset_dir(seed: int = 0, cache_dir: str | Path | None = None) -> Path:
    """Where the build of render seed ``seed`` lives (``shapes``; ``shapes-seedN`` otherwise)."""
    return cache_root(cache_dir) / "datasets" / ("shapes" if seed == 0 else f"shapes-seed{seed}")


def _render_rows(
    classes: list[ShapeClass], seed: int, images_per_class: int, size: int
) -> dict[str, list]:
    """Every image of every class, in class-id order; image ``i`` of a class is drawn from
    ``default_rng([seed, colour, fill, shape, i])``, so it does not depend on the class order."""
    cols: dict[str, list] = {k: [] for k in ("image", "label", *NUISANCE)}
    for c in classes:
        for i in range(images_per_class):
            img, nuisance = render(
                c.colour, c.shape, c.fill, np.random.default_rng([seed, *c.key, i]), size
            )
            cols["image"].append(img)
            cols["label"].append(c.id)
            for k, v in nuisance.items():
                cols[k].append(v)
    return cols


def build_shapes(
    cache_dir: str | Path | None = None,
    seed: int = 0,
    force: bool = False,
    images_per_class: int | None = None,
    image_size: int | None = None,
) -> Path:
    """Render the benchmark into ``cache/datasets/shapes`` (an HF dataset saved to disk, as the
    emoji benchmark), or return the existing build when every file matches its checksum and it
    was built with the same ``images_per_class`` and ``image_size``. The benchmark is the
    default (``IMAGES_PER_CLASS`` images of ``IMAGE_SIZE`` px per class, read at call time);
    fewer, smaller images make a quick build of the same classes for tests (image ``i`` of a
    class is the same draw at any count)."""
    datasets = require("datasets", "data", "building the shapes benchmark")
    images_per_class = IMAGES_PER_CLASS if images_per_class is None else images_per_class
    image_size = IMAGE_SIZE if image_size is None else image_size
    if images_per_class < 2 or image_size < 16:
        raise DataError(
            f"shapes build: images_per_class {images_per_class} / image_size {image_size}; "
            "expected at least 2 images per class (a query needs a match) of at least 16 px"
        )
    out_dir = dataset_dir(seed, cache_dir)
    if (out_dir / META).is_file() and not force:
        damaged = verify_built(out_dir)
        if damaged is not None:
            warnings.warn(f"dataset cache {damaged}; rebuilding it", stacklevel=2)
        elif (other := _built_with(out_dir)) == (images_per_class, image_size):
            return out_dir
        else:
            warnings.warn(
                f"{out_dir} holds a build of {other[0]} images of {other[1]} px per class; "
                f"rebuilding it with {images_per_class} of {image_size} px",
                stacklevel=2,
            )
    classes = pinned_classes()
    cols = _render_rows(classes, seed, images_per_class, image_size)
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "label": datasets.ClassLabel(names=[c.name for c in classes]),
            **{k: datasets.Value("string") for k in NUISANCE},
        }
    )
    ds = datasets.Dataset.from_dict(cols, features=features)
    meta = {
        "benchmark": "shapes",
        "seed": seed,
        "num_classes": len(classes),
        "num_images": len(ds),
        "images_per_class": images_per_class,
        "image_size": image_size,
        "holdout_colour": HOLDOUT_COLOUR,
        "class_list_sha256": PIN_SHA256,
        "pillow": Image.__version__,
    }
    return save(ds, out_dir, meta)


def _built_with(out_dir: Path) -> tuple:
    """(images per class, image size) of a verified build."""
    meta = json.loads((out_dir / META).read_text(encoding="utf-8"))
    return (meta.get("images_per_class"), meta.get("image_size"))


def load_shapes(
    arg: str | None = None, cache_dir: str | Path | None = None, seed: int = 0
) -> ImageDataset:
    """Load the built benchmark: ``shapes`` or ``shapes:holdout`` (same images, the held-out
    colour's classes all in the test half)."""
    datasets = require("datasets", "data", "dataset 'shapes'")
    variant = parse_variant(arg)
    path = dataset_dir(seed, cache_dir)
    if not (path / META).is_file():
        raise DataError(f"shapes dataset not built at {path}; run: langdml data build shapes")
    damaged = verify_built(path)
    if damaged is not None:
        warnings.warn(f"dataset cache {damaged}; rebuilding it", stacklevel=3)
        try:
            meta = json.loads((path / META).read_text(encoding="utf-8"))
            sizes = {
                "images_per_class": int(meta["images_per_class"]),
                "image_size": int(meta["image_size"]),
            }
        except (OSError, ValueError, KeyError, TypeError):  # an unreadable metadata file
            sizes = {}
        build_shapes(cache_dir=cache_dir, seed=seed, force=True, **sizes)
    meta = json.loads((path / META).read_text())
    classes = pinned_classes()
    if meta.get("class_list_sha256") != PIN_SHA256:
        raise DataError(
            f"{path} was built from another class list; run: langdml data build shapes --force"
        )
    ds = datasets.load_from_disk(str(path))
    image_col = ds.cast_column("image", datasets.Image(decode=True))

    def load(i: int) -> Image.Image:
        return image_col[int(i)]["image"].convert("RGB")

    labels = np.asarray(ds["label"], dtype=np.int64)
    if variant == "holdout":
        order = sorted(classes, key=lambda c: c.holdout_id)
        labels = np.asarray([c.holdout_id for c in classes], dtype=np.int64)[labels]
    else:
        order = classes
    name = "shapes" if variant is None else f"shapes:{variant}"
    by_id = {c.id: c for c in classes}
    raw = np.asarray(ds["label"], dtype=np.int64)
    extras = {k: list(ds[k]) for k in NUISANCE}
    for attr in ("colour", "fill", "shape"):
        extras[attr] = [getattr(by_id[int(i)], attr) for i in raw]
    content = [name, meta["seed"], meta["image_size"], PIN_SHA256, meta["files"]]
    fingerprint = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]
    return ImageDataset(
        name=name,
        images=ImageSource(list(range(len(labels))), load),
        labels=labels,
        class_names=[c.name for c in order],
        extras=extras,
        fingerprint=fingerprint,
    )
