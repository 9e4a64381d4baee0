"""`langdml precompute`: class-name (or pseudo-label) embeddings → prints the cache file path."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from langdml.errors import LangDMLError
from langdml.text.prompts import NAME_CLEANERS
from langdml.text.spec import HF_POOLINGS, KINDS_HELP

if TYPE_CHECKING:
    from langdml.data import ImageDataset


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "precompute",
        help="embed class names (or PLG pseudo-labels) with a text model; prints the cache file",
        description="Embed class names with a text model and cache them; prints the cache file "
        "path on stdout (a second identical call is a cache hit).",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", metavar="SPEC", help="dataset spec, e.g. emoji or cub200:PATH")
    src.add_argument("--classes", metavar="FILE", help="a text file with one class name per line")
    p.add_argument("--model", default="minilm", metavar="TEXTMODEL", help=f"one of: {KINDS_HELP}")
    p.add_argument("--pooling", choices=HF_POOLINGS, help="hf models: pooling (default pooler)")
    p.add_argument(
        "--prompt",
        action="append",
        metavar="TEMPLATE",
        help="template with {} for the name (default 'a photo of a {}'); repeat for an ensemble",
    )
    p.add_argument(
        "--names",
        choices=["auto", *NAME_CLEANERS],
        default="auto",
        help="class-name cleaning (auto: default; datasets clean their names when loaded; "
        "none: names as given)",
    )
    p.add_argument(
        "--split",
        choices=["all", "train", "val", "test"],
        default=None,
        help="which classes of --dataset (default train: the classes training uses)",
    )
    add_split_arguments(p)
    p.add_argument(
        "--descriptions",
        metavar="FILE",
        help="embed the classes' descriptions instead (text.descriptions: a class,text CSV/TSV "
        "or packaged:emoji_cldr); prompts do not apply",
    )
    p.add_argument("--plg", action="store_true", help="pseudo-label guidance: top-k ImageNet names")
    p.add_argument("--top-k", type=int, default=5, help="pseudo-labels per class (with --plg)")
    p.add_argument("--image-size", type=int, default=224, help="classifier input size (with --plg)")
    p.add_argument(
        "--classifier",
        default="packaged",
        help="PLG classifier: packaged or ARCH:WEIGHTS, e.g. resnet50:torchvision (text."
        "pseudo_label_model)",
    )
    p.add_argument(
        "--crop-pct",
        type=float,
        default=None,
        help="PLG: resize to image-size / crop-pct, then center-crop (text.pseudo_label_crop_pct)",
    )
    p.add_argument(
        "--cache-dir",
        default=None,
        help="cache root, as in every command (default $LANGDML_CACHE or cache); text embeddings "
        "go to <root>/text",
    )
    p.add_argument("--data-cache-dir", default=None, help=argparse.SUPPRESS)  # deprecated
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument(
        "--allow-duplicate-names",
        action="store_true",
        help="let names in --classes repeat (a dataset's shared names are embedded once each)",
    )
    p.add_argument("--force", action="store_true", help="recompute even if cached")
    p.set_defaults(func=run_precompute)


def read_class_file(path: str) -> list[str]:
    """One class name per line; surrounding whitespace and blank lines are ignored."""
    p = Path(path)
    if not p.is_file():
        raise LangDMLError(f"class-name file {path!r} does not exist")
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise LangDMLError(f"cannot read class-name file {path!r}: {exc}") from None
    names = [ln.strip() for ln in lines if ln.strip()]
    if not names:
        raise LangDMLError(f"class-name file {path!r} holds no class names")
    return names


def cache_roots(args: argparse.Namespace) -> tuple[Path | None, Path]:
    """(dataset cache root, text cache folder) from ``--cache-dir`` (the root). The old meanings
    — ``--cache-dir`` naming the text folder itself, ``--data-cache-dir`` the root — still work
    for one release, with a one-line deprecation message."""
    from langdml.io import text_cache_dir

    root = Path(args.cache_dir) if args.cache_dir is not None else None
    if args.data_cache_dir is not None:
        print(
            "langdml: warning: --data-cache-dir is deprecated; --cache-dir names the cache root",
            file=sys.stderr,
        )
        if root is not None:  # old meaning: --cache-dir was the text folder
            return Path(args.data_cache_dir), root
        root = Path(args.data_cache_dir)
    if root is not None and root.name == "text":
        print(
            f"langdml: warning: --cache-dir {root} looks like a text folder; --cache-dir now names "
            f"the cache root, using {root.parent}",
            file=sys.stderr,
        )
        root = root.parent
    return root, text_cache_dir(root)


def add_split_arguments(p: argparse.ArgumentParser) -> None:
    """The run's class-split settings, so --split names the classes that run trains on."""
    p.add_argument(
        "--train-fraction",
        type=float,
        default=0.5,
        help="share of train classes (data.train_fraction)",
    )
    p.add_argument(
        "--validation-fraction",
        type=float,
        default=0.0,
        help="validation classes carved from the train classes (data.validation_fraction)",
    )
    p.add_argument("--folds", type=int, default=0, help="K class folds (data.folds)")
    p.add_argument("--fold", type=int, default=0, help="the validation fold (data.fold)")


def dataset_classes(args: argparse.Namespace, data_root: Path | None) -> tuple[ImageDataset, str]:
    """(the --split part of --dataset under the run's class split, the part's name)."""
    from langdml.data import class_splits, load_dataset

    full = load_dataset(args.dataset, cache_dir=data_root)
    split = args.split or "train"
    if split == "all":
        return full, split
    splits = class_splits(
        full, args.train_fraction, args.validation_fraction, args.folds, args.fold
    )
    return splits.part(split), split


def run_precompute(args: argparse.Namespace) -> int:
    from langdml.config.base import MAX_IMAGE_SIZE
    from langdml.devices import check_device
    from langdml.errors import check_int
    from langdml.text.precompute import precompute_text_embeddings, pseudo_label_embeddings

    check_device(args.device)
    check_int(args.batch_size, "--batch-size")
    check_int(args.top_k, "--top-k")
    check_int(args.image_size, "--image-size", high=MAX_IMAGE_SIZE, meaning="pixels per side")
    cleaner = args.names
    allow_duplicates = args.allow_duplicate_names
    data_root, text_dir = cache_roots(args)
    if args.descriptions is not None and args.plg:
        raise LangDMLError("--descriptions and --plg are two different targets; give one")
    split = "all"
    if args.classes is not None:
        if args.plg:
            raise LangDMLError("--plg needs --dataset (pseudo-labels come from the class images)")
        if args.split not in (None, "all"):
            raise LangDMLError(f"--split {args.split} applies to --dataset, not --classes")
        names = read_class_file(args.classes)
        dataset = None
    else:
        dataset, split = dataset_classes(args, data_root)
        # Distinct names, embedded once each: exactly the request training makes for a dataset
        # whose classes share names (SOP's super-classes).
        names = dataset.distinct_class_names()[0]
        # PLG keys on the per-class names (one row per class), as training asks for them.
        allow_duplicates = allow_duplicates or dataset.shares_names
        if args.plg and split != "train":
            print(
                f"langdml: warning: pseudo-labels from {split} images; training uses --split train",
                file=sys.stderr,
            )
    common = dict(
        model=args.model,
        prompts=args.prompt,
        cache_dir=text_dir,
        device=args.device,
        batch_size=args.batch_size,
        pooling=args.pooling,
        name_cleaner="default" if cleaner == "auto" else cleaner,
        force=args.force,
        allow_duplicates=allow_duplicates,
    )
    if args.descriptions is not None:
        result = _descriptions(args, names, common, check=split == "all")
    elif args.plg:
        result = pseudo_label_embeddings(
            dataset,
            k=args.top_k,
            image_size=args.image_size,
            classifier=args.classifier,
            crop_pct=args.crop_pct,
            **common,
        )
    else:
        result = precompute_text_embeddings(names, **common)
    status = "cache hit" if result.cache_hit else "computed"
    print(
        f"{status}: {tuple(result.embeddings.shape)} float32 from {result.meta.get('model_spec')}",
        file=sys.stderr,
    )
    print(result.path)
    return 0


def _descriptions(args: argparse.Namespace, names: list[str], common: dict, check: bool):
    """The description embeddings of ``names`` (the file training reads for these classes)."""
    from langdml.text.descriptions import load_descriptions
    from langdml.text.targets import description_embeddings

    found = load_descriptions(args.descriptions)
    if check:  # the whole class list: a class the file names must be one of them
        found.check_classes(names)
    result, _ = description_embeddings(
        names,
        found,
        model=common["model"],
        cache_dir=common["cache_dir"],
        device=common["device"],
        batch_size=common["batch_size"],
        pooling=common["pooling"],
        required=False,
        force=common["force"],
    )
    return result
