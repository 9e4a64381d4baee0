"""`langdml data build emoji|shapes`, `langdml data info SPEC` and `langdml data split SPEC -o
FILE`."""

from __future__ import annotations

import argparse
import json

import numpy as np

from langdml.errors import DataError

CACHE_HELP = "cache root, as in every command (default $LANGDML_CACHE or cache)"


def add_commands(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="build and inspect datasets")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    build = dsub.add_parser("build", help="build an embedded benchmark (emoji or shapes)")
    build.add_argument("name", choices=["emoji", "shapes"])
    build.add_argument(
        "--styles",
        default=None,
        help="comma-separated font styles (default: all four: openmoji,noto_color,"
        "noto_mono,symbola); a non-default set builds a differently named variant (emoji only)",
    )
    build.add_argument("--cache-dir", default=None, help=CACHE_HELP)
    build.add_argument("--force", action="store_true", help="rebuild even if present")
    build.set_defaults(func=_build)

    info = dsub.add_parser("info", help="class count, images per class, a few names")
    info.add_argument("spec")
    info.add_argument("--cache-dir", default=None, help=CACHE_HELP)
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    info.set_defaults(func=_info)

    split = dsub.add_parser(
        "split",
        help="write a split file (path,label,split[,is_query,is_gallery][,category]) for a "
        "dataset: seeded, class-disjoint; use it as data.split_file",
    )
    split.add_argument("spec", help="dataset spec, e.g. imagefolder:PATH")
    split.add_argument("-o", "--output", required=True, help="the file (.csv: commas, else tabs)")
    split.add_argument("--seed", type=int, default=0, help="seeds the class order and the roles")
    split.add_argument(
        "--train-fraction",
        type=float,
        default=0.5,
        help="share of the classes that train (data.train_fraction; default 0.5)",
    )
    split.add_argument(
        "--val-fraction",
        type=float,
        default=0.0,
        help="share of the train classes kept for validation (data.validation_fraction)",
    )
    split.add_argument(
        "--query-gallery",
        default="none",
        help="none (default: leave-one-out evaluation), all (every val/test image queries "
        "and is searched) or a fraction F: F of each val/test class's images query, the rest "
        "are the gallery",
    )
    split.add_argument("--cache-dir", default=None, help=CACHE_HELP)
    split.set_defaults(func=_split)


def _build(args: argparse.Namespace) -> int:
    from langdml.data.saved import META, verify_built

    if args.name == "shapes":
        if args.styles:
            raise DataError("--styles is an emoji option; the shapes benchmark has no styles")
        from langdml.data.shapes import build_shapes, dataset_dir

        target = dataset_dir(cache_dir=args.cache_dir)

        def build():
            return build_shapes(cache_dir=args.cache_dir, force=args.force)
    else:
        from langdml.data.emoji import build_emoji, parse_styles
        from langdml.data.emoji import dataset_dir as emoji_dir

        styles = parse_styles(args.styles)
        target = emoji_dir(styles, args.cache_dir)

        def build():
            return build_emoji(styles, cache_dir=args.cache_dir, force=args.force)

    # an existing build is verified, not trusted: a damaged one is reported and rebuilt
    before = None if args.force or not (target / META).is_file() else verify_built(target)
    existed = (target / META).is_file() and not args.force
    path = build()
    if existed and before is None:
        print(f"{path}: already built; every file matches its checksum")
    elif existed:
        print(f"{path}: repaired (rebuilt: {before})")
    else:
        print(f"{path}: built")
    return 0


def _split(args: argparse.Namespace) -> int:
    from langdml.data import load_dataset
    from langdml.data.split_writer import parse_query_gallery, write_split_file

    roles = parse_query_gallery(args.query_gallery)  # before loading: a typo fails at once
    ds = load_dataset(args.spec, cache_dir=args.cache_dir)
    path = write_split_file(
        ds,
        args.output,
        seed=args.seed,
        train_fraction=args.train_fraction,
        validation_fraction=args.val_fraction,
        query_gallery=roles,
    )
    print(f"{path}: {len(ds)} images of {ds.num_classes} classes (seed {args.seed})")
    return 0


def dataset_summary(spec: str, cache_dir: str | None = None) -> dict:
    from langdml.data import class_splits, load_dataset

    ds = load_dataset(spec, cache_dir=cache_dir)
    counts = ds.class_counts()
    split = class_splits(ds)
    out = {
        "name": ds.name,
        "num_images": len(ds),
        "num_classes": ds.num_classes,
        "images_per_class": {
            "min": int(counts.min()),
            "mean": round(float(counts.mean()), 2),
            "max": int(counts.max()),
        },
        "train_classes": split.train.num_classes,
        "test_classes": split.test.num_classes,
        "example_classes": ds.class_names[:8],
    }
    if ds.name == "emoji":  # the pinned benchmark: its class list's checksum
        from langdml.data.emoji import PIN_FILE, PIN_SHA256

        out["class_list"] = PIN_FILE.name
        out["class_list_sha256"] = PIN_SHA256
    if ds.name.split(":")[0] == "shapes":
        out.update(_shapes_summary(ds, split))
    if "style" in ds.extras:
        styles, n = np.unique(np.asarray(ds.extras["style"]), return_counts=True)
        out["images_per_style"] = {str(s): int(c) for s, c in zip(styles, n)}
        out["styles_per_class_histogram"] = {
            str(k): int(v) for k, v in enumerate(np.bincount(counts)) if v
        }
    return out


def _shapes_summary(ds, split) -> dict:
    """The pinned class list and which attribute values each half of the split holds."""
    from langdml.data.shapes import PIN_FILE, PIN_SHA256

    out: dict = {"class_list": PIN_FILE.name, "class_list_sha256": PIN_SHA256}
    for attr in ("colour", "fill", "shape"):
        train = sorted(set(split.train.extras[attr]))
        unseen = sorted(set(split.test.extras[attr]) - set(train))
        out[f"{attr}s"] = f"{len(train)} in train" + (
            f"; test only: {', '.join(unseen)}" if unseen else "; all also in test"
        )
    counts = np.unique(np.asarray(ds.extras["render_style"]), return_counts=True)
    out["images_per_render_style"] = {str(s): int(c) for s, c in zip(*counts)}
    return out


def _info(args: argparse.Namespace) -> int:
    summary = dataset_summary(args.spec, args.cache_dir)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    for key, value in summary.items():
        print(f"{key:>28}: {value}")
    return 0
