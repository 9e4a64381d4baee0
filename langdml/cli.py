"""The `langdml` command line. Each stage registers its own subcommands in ``<stage>/commands.py``.

Errors the user can fix (LangDMLError, missing files) print as one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from langdml import __version__
from langdml.errors import LangDMLError

# Stage modules exposing ``add_commands(subparsers)``; each subparser sets ``func=callable(args)``.
_COMMAND_MODULES = (
    "langdml.data.commands",
    "langdml.text.commands",
    "langdml.train.commands",
    "langdml.eval.commands",
    "langdml.ablation.commands",
    "langdml.xmodal.commands",
    "langdml.inference.commands",
    "langdml.diagnose",
    "langdml.packaged_configs",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="langdml", description="Language-guided deep metric learning for computer vision."
    )
    parser.add_argument("--version", action="version", version=f"langdml {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):  # stage not built yet
                continue
            raise
        module.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse stops filling a positional list at the first option, so ``train CFG --output-dir D
    # a=b`` leaves ``a=b`` over; dotted overrides may come anywhere after the config.
    if extra:
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = list(args.overrides or []) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        result = args.func(args)
    except (LangDMLError, FileNotFoundError) as exc:
        print(f"langdml: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("langdml: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
