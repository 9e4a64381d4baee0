"""`langdml data build emoji` and `langdml data info SPEC`."""

from __future__ import annotations

import argparse
import json

import numpy as np

CACHE_HELP = "cache root, as in every command (default $LANGDML_CACHE or cache)"


def add_commands(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="build and inspect datasets")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    build = dsub.add_parser("build", help="build the embedded emoji benchmark")
    build.add_argument("name", choices=["emoji"])
    build.add_argument(
        "--styles",
        default=None,
        help="comma-separated font styles (default: all four: openmoji,noto_color,"
        "noto_mono,symbola); a non-default set builds a differently named variant",
    )
    build.add_argument("--cache-dir", default=None, help=CACHE_HELP)
    build.add_argument("--force", action="store_true", help="rebuild even if present")
    build.set_defaults(func=_build)

    info = dsub.add_parser("info", help="class count, images per class, a few names")
    info.add_argument("spec")
    info.add_argument("--cache-dir", default=None, help=CACHE_HELP)
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    info.set_defaults(func=_info)


def _build(args: argparse.Namespace) -> int:
    from langdml.data.emoji import META, build_emoji, dataset_dir, parse_styles, verify_built

    styles = parse_styles(args.styles)
    target = dataset_dir(styles, args.cache_dir)
    # an existing build is verified, not trusted: a damaged one is reported and rebuilt
    before = None if args.force or not (target / META).is_file() else verify_built(target)
    existed = (target / META).is_file() and not args.force
    path = build_emoji(styles, cache_dir=args.cache_dir, force=args.force)
    if existed and before is None:
        print(f"{path}: already built; every file matches its checksum")
    elif existed:
        print(f"{path}: repaired (rebuilt: {before})")
    else:
        print(f"{path}: built")
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
    if "style" in ds.extras:
        styles, n = np.unique(np.asarray(ds.extras["style"]), return_counts=True)
        out["images_per_style"] = {str(s): int(c) for s, c in zip(styles, n)}
        out["styles_per_class_histogram"] = {
            str(k): int(v) for k, v in enumerate(np.bincount(counts)) if v
        }
    return out


def _info(args: argparse.Namespace) -> int:
    summary = dataset_summary(args.spec, args.cache_dir)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    for key, value in summary.items():
        print(f"{key:>28}: {value}")
    return 0
