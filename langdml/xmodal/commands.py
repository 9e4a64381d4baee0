"""`langdml xmodal`: image→text and text→image retrieval on the test classes, printed as JSON."""

from __future__ import annotations

import argparse
import json
from typing import Any

from langdml.errors import LangDMLError

_HELP = {
    "clip": "an open_clip model's image and text towers (--text-model clip:ARCH/PRETRAINED, "
    "clip:ARCH@CHECKPOINT or clip:DIR)",
    "aligned": "a text head trained on the train classes to a run's embeddings (--run) or "
    "jointly with an image head on frozen features",
    "text_proxies": "language as proxies: an image head trained with a text-proxy loss, test "
    "names projected into proxies (or a run trained with one)",
    "zeroshot": "no training: ImageNet classifier probabilities mapped through ImageNet name "
    "embeddings",
}


def add_commands(sub: argparse._SubParsersAction) -> None:
    METHODS = tuple(_HELP)  # same names as langdml.xmodal.methods.METHODS, without importing torch

    p = sub.add_parser(
        "xmodal",
        help="cross-modal (image <-> class-name) retrieval metrics on unseen classes, as JSON",
        description="Image->text (each test image vs the test class names: R@1 = zero-shot "
        "accuracy, R@5, MAP) and text->image (each test class name vs all test images: R@1, "
        "R@10, MAP@R, mAP) on the classes held out from training, with chance levels. Methods: "
        + "; ".join(f"{m}: {_HELP[m]}" for m in METHODS),
    )
    p.add_argument(
        "--dataset",
        default=None,
        metavar="SPEC",
        help="dataset spec (default emoji, or the run's with --run)",
    )
    p.add_argument("--method", required=True, choices=METHODS)
    p.add_argument(
        "--run",
        default=None,
        metavar="RUN_DIR",
        help="aligned/text_proxies: a langdml train run directory for the image side",
    )
    p.add_argument("--checkpoint", choices=["final", "best"], default="final")
    p.add_argument(
        "--split",
        choices=["test", "val"],
        default=None,
        help="with --run: held-out classes to evaluate (default: the run's own eval split)",
    )
    p.add_argument(
        "--text-model",
        default=None,
        metavar="TEXTMODEL",
        help="text model (default minilm, or the run's; clip: required, a clip:... spec)",
    )
    p.add_argument(
        "--prompt",
        action="append",
        metavar="TEMPLATE",
        help="prompt with {} for the name (default 'a photo of a {}'); repeatable",
    )
    p.add_argument(
        "--text-embeddings",
        default=None,
        metavar="FILE",
        help="a langdml precompute cache file holding every needed class name",
    )
    p.add_argument("--image-size", type=int, default=128, help="frozen-feature image size")
    p.add_argument("--train-fraction", type=float, default=0.5)
    p.add_argument(
        "--loss",
        default="text_proxy_anchor",
        choices=["text_proxy_anchor", "text_proxy_nca"],
        help="text_proxies loss",
    )
    p.add_argument(
        "--image-head",
        default="linear",
        choices=["linear", "mlp", "none"],
        help="image head on frozen features (without --run)",
    )
    p.add_argument("--embedding-dim", type=int, default=128)
    p.add_argument(
        "--projection",
        default="linear",
        choices=["linear", "mlp"],
        help="text head / text-proxy projection",
    )
    p.add_argument(
        "--temperature",
        type=float,
        default=None,
        help="aligned: InfoNCE temperature (0.2); zeroshot: softmax temperature (1)",
    )
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--cache-dir", default=None, help="cache root (default $LANGDML_CACHE or cache)")
    p.add_argument("--output", default=None, metavar="FILE", help="also write the JSON here")
    p.set_defaults(func=run_xmodal_command)


def _kwargs(args: argparse.Namespace) -> dict[str, Any]:
    if args.method in ("clip", "zeroshot") and args.run:
        raise LangDMLError(f"--run does not apply to method {args.method!r}")
    common = dict(
        prompts=args.prompt,
        cache_dir=args.cache_dir,
        device=args.device,
        train_fraction=args.train_fraction,
    )
    if args.method == "clip":
        if not args.text_model:
            raise LangDMLError(
                "method clip needs --text-model clip:ARCH/PRETRAINED (e.g. clip:ViT-B-32/openai), "
                "clip:ARCH@CHECKPOINT or clip:DIR"
            )
        return dict(
            common,
            dataset=args.dataset or "emoji",
            model=args.text_model,
            **({"batch_size": args.batch_size} if args.batch_size else {}),
        )
    common.update(text_embeddings=args.text_embeddings, image_size=args.image_size)
    if args.method == "zeroshot":
        return dict(
            common,
            dataset=args.dataset or "emoji",
            text_model=args.text_model or "minilm",
            temperature=1.0 if args.temperature is None else args.temperature,
        )
    trained = dict(
        common,
        dataset=args.dataset if args.run else (args.dataset or "emoji"),
        run_dir=args.run,
        text_model=args.text_model,
        checkpoint=args.checkpoint,
        split=args.split,
        image_head=args.image_head,
        embedding_dim=args.embedding_dim,
        epochs=args.epochs,
        lr=args.lr,
        seed=args.seed,
    )
    if args.batch_size:
        trained["batch_size"] = args.batch_size
    if args.method == "aligned":
        trained["text_head"] = args.projection
        if args.temperature is not None:
            trained["temperature"] = args.temperature
        return trained
    if args.temperature is not None:
        raise LangDMLError(
            "--temperature applies to methods aligned and zeroshot, not text_proxies"
        )
    return dict(trained, loss=args.loss, projection=args.projection)


def run_xmodal_command(args: argparse.Namespace) -> int:
    from langdml.io import atomic_write_json
    from langdml.xmodal.methods import run_method

    result = run_method(args.method, **_kwargs(args))
    print(json.dumps(result, indent=2))
    if args.output:
        atomic_write_json(args.output, result)
    return 0
