"""``langdml diagnose``: the command line of :mod:`langdml.diagnose` (the language-vision
agreement of text models with a frozen trunk on the train classes)."""

from __future__ import annotations

import argparse
import json
import sys
import time

from langdml import diagnose as agreement
from langdml.diagnose import DEFAULT_K, DEFAULT_SEEDS, format_table
from langdml.errors import check_int


def add_commands(sub: argparse._SubParsersAction) -> None:
    from langdml.text.spec import KINDS_HELP

    p = sub.add_parser(
        "diagnose",
        help="language-vision agreement of text models with the trunk on the train classes",
        description="Compare each text model's class-name similarity with the frozen trunk's "
        "class-centroid similarity on the TRAIN classes: Spearman correlation, overlap of each "
        "class's k nearest classes, and the same for shuffled names (control).",
    )
    p.add_argument("--dataset", required=True, metavar="SPEC", help="dataset spec, e.g. emoji")
    p.add_argument(
        "--model",
        action="append",
        metavar="TEXTMODEL",
        help=f"text model (repeat to compare; default minilm): {KINDS_HELP}",
    )
    p.add_argument("--k", type=int, default=DEFAULT_K, help="nearest classes compared (10)")
    p.add_argument("--seeds", type=int, default=DEFAULT_SEEDS, help="shuffled-name permutations")
    p.add_argument("--backbone", default="tf_efficientnet_lite0", help="timm trunk")
    p.add_argument("--weights", default="packaged", help="trunk weights (packaged, a file, …)")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--train-fraction", type=float, default=0.5)
    p.add_argument(
        "--validation-fraction",
        type=float,
        default=0.0,
        help="leave out the last fraction of the train classes (as data.validation_fraction)",
    )
    p.add_argument(
        "--folds", type=int, default=0, help="K class folds of the train classes (as data.folds)"
    )
    p.add_argument(
        "--fold", type=int, default=0, help="the validation fold left out (as data.fold)"
    )
    p.add_argument(
        "--prompt", action="append", metavar="TEMPLATE", help="default 'a photo of a {}'"
    )
    p.add_argument("--cache-dir", default=None, help="cache root (default $LANGDML_CACHE or cache)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.set_defaults(func=run_diagnose)


def run_diagnose(args: argparse.Namespace) -> int:
    from langdml.config.base import MAX_IMAGE_SIZE
    from langdml.devices import check_device
    from langdml.models import FeatureSpec

    check_device(args.device)
    check_int(args.k, "--k", meaning="nearest classes compared")
    check_int(args.seeds, "--seeds", meaning="shuffled-name permutations")
    check_int(args.image_size, "--image-size", high=MAX_IMAGE_SIZE, meaning="pixels per side")
    start = time.perf_counter()
    results = agreement.diagnose(  # looked up at call time: tests replace it
        args.dataset,
        models=args.model or ["minilm"],
        feature_spec=FeatureSpec(args.backbone, args.weights, args.image_size),
        cache_dir=args.cache_dir,
        train_fraction=args.train_fraction,
        validation_fraction=args.validation_fraction,
        folds=args.folds,
        fold=args.fold,
        k=args.k,
        seeds=args.seeds,
        prompts=args.prompt,
        device=args.device,
    )
    seconds = time.perf_counter() - start
    from langdml.calibration import placement

    if args.json:
        rows = [{**r.as_dict(), "calibration": placement(r.spearman)} for r in results]
        print(json.dumps(rows, indent=2))
    else:
        r = results[0]
        print(
            f"Language-vision agreement on {args.dataset}: {r.num_classes} train classes, trunk "
            f"{args.backbone} ({args.weights}, {args.image_size} px); shuffled = mean ± std of "
            f"{r.seeds} permutations of the names"
        )
        print(format_table(results))
        for r in results:  # where each agreement falls among the benchmarks measured here
            print(f"{r.model}: {placement(r.spearman)}")
    print(f"diagnose took {seconds:.1f} s", file=sys.stderr)
    return 0
