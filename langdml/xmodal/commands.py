"""`langdml xmodal`: image→text and text→image retrieval on the test classes, printed as JSON.

The flags are generated from :class:`langdml.xmodal.config.XmodalConfig` (names, types, choices,
defaults and help), so the command, the Python functions and the trainers share one definition.
"""

from __future__ import annotations

import argparse
import json
import types
import typing
from typing import Any

from langdml.errors import LangDMLError
from langdml.xmodal.config import METHODS, XmodalConfig, cli_fields, xmodal_config

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
assert tuple(_HELP) == METHODS  # same names as langdml.xmodal.methods.METHODS


def _argument(name: str, meta: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(flag, argparse keyword arguments) of one XmodalConfig field."""
    field = XmodalConfig.model_fields[name]
    flag = meta.get("flag", "--" + name.replace("_", "-"))
    kwargs: dict[str, Any] = {"dest": name, "help": meta["help"]}
    if "metavar" in meta:
        kwargs["metavar"] = meta["metavar"]
    kind = field.annotation
    if typing.get_origin(kind) in (typing.Union, types.UnionType):  # X | None
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    if typing.get_origin(kind) is typing.Literal:
        kwargs["choices"] = list(typing.get_args(kind))
    elif typing.get_origin(kind) is list:
        kwargs["action"] = "append"
    elif kind in (int, float):
        kwargs["type"] = kind
    if field.is_required():
        kwargs["required"] = True
    else:
        # Unset flags stay None, so the config (and the method) supply the defaults.
        kwargs["default"] = None
        if field.default is not None and "action" not in kwargs:
            kwargs["help"] += f" (default {field.default})"
    return flag, kwargs


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "xmodal",
        help="cross-modal (image <-> class-name) retrieval metrics on unseen classes, as JSON",
        description="Image->text (each test image vs the test class names: R@1 = zero-shot "
        "accuracy, R@5, MAP) and text->image (each test class name vs all test images: R@1, "
        "R@10, MAP@R, mAP) on the classes held out from training, with chance levels. Methods: "
        + "; ".join(f"{m}: {_HELP[m]}" for m in METHODS),
    )
    for name, meta in cli_fields().items():
        flag, kwargs = _argument(name, meta)
        p.add_argument(flag, **kwargs)
    p.add_argument("--output", default=None, metavar="FILE", help="also write the JSON here")
    p.set_defaults(func=run_xmodal_command)


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """The flags the user gave, as XmodalConfig settings (validated)."""
    given = {k: getattr(args, k) for k in cli_fields() if getattr(args, k, None) is not None}
    if given.get("method") == "clip" and not given.get("text_model"):
        raise LangDMLError(
            "method clip needs --text-model clip:ARCH/PRETRAINED (e.g. clip:ViT-B-32/openai), "
            "clip:ARCH@CHECKPOINT or clip:DIR"
        )
    return xmodal_config(**given).model_dump(exclude_unset=True)


def run_xmodal_command(args: argparse.Namespace) -> int:
    from langdml.io import atomic_write_json, check_writable
    from langdml.xmodal.methods import run_method

    settings = _settings(args)
    if args.output:
        check_writable(args.output, "--output")  # before the method runs
    result = run_method(settings.pop("method"), **settings)
    print(json.dumps(result, indent=2))
    if args.output:
        atomic_write_json(args.output, result)
    return 0
