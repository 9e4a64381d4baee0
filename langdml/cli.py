"""The `langdml` command line. Each stage registers its own subcommands in ``<stage>/commands.py``.

Errors the user can fix (LangDMLError, OSError such as a full disk or a denied write, undecodable
files, decompression bombs, refused checkpoints) print as one ``langdml: error:`` line and exit
with status 2; ``--debug`` (anywhere on the line) or ``LANGDML_DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
import warnings

from langdml import __version__
from langdml.errors import describe_exception

# Stage modules exposing ``add_commands(subparsers)``; each subparser sets ``func=callable(args)``.
_COMMAND_MODULES = (
    "langdml.data.commands",
    "langdml.text.commands",
    "langdml.train.commands",
    "langdml.eval.commands",
    "langdml.ablation.commands",
    "langdml.xmodal.commands",
    "langdml.inference.commands",
    "langdml.diagnose_commands",
    "langdml.packaged_configs",
    "langdml.starter",
)


# Which module registers each subcommand, so ``langdml search ...`` imports only the module
# that serves it (a query's start-up time is mostly imports); tests check it against the
# parsers the modules register.
COMMAND_MODULE = {
    "data": "langdml.data.commands",
    "precompute": "langdml.text.commands",
    "train": "langdml.train.commands",
    "evaluate": "langdml.eval.commands",
    "ablate": "langdml.ablation.commands",
    "xmodal": "langdml.xmodal.commands",
    "embed": "langdml.inference.commands",
    "index": "langdml.inference.commands",
    "search": "langdml.inference.commands",
    "export": "langdml.inference.commands",
    "report": "langdml.inference.commands",
    "diagnose": "langdml.diagnose_commands",
    "configs": "langdml.packaged_configs",
    "init": "langdml.starter",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every subcommand, or (``command`` named in :data:`COMMAND_MODULE`) of the
    subcommands of the one module that serves ``command``."""
    parser = argparse.ArgumentParser(
        prog="langdml", description="Language-guided deep metric learning for computer vision."
    )
    parser.add_argument("--version", action="version", version=f"langdml {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an error (or LANGDML_DEBUG=1)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    only = COMMAND_MODULE.get(command) if command is not None else None
    for name in _COMMAND_MODULES if only is None else (only,):
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):  # stage not built yet
                continue
            raise
        module.add_commands(sub)
    return parser


_plain_formatwarning = warnings.formatwarning


def _formatwarning(message, category, filename, lineno, line=None):
    """langdml's own warnings (a damaged cache being rebuilt, ...) as one line."""
    if os.path.abspath(filename).startswith(os.path.dirname(os.path.abspath(__file__))):
        return f"langdml: warning: {message}\n"
    return _plain_formatwarning(message, category, filename, lineno, line)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("LANGDML_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    if not debug:
        warnings.formatwarning = _formatwarning
    first = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(first)
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
    except KeyboardInterrupt:
        print("langdml: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as exc:
        line = describe_exception(exc)
        if line is None:
            raise
        if debug:
            traceback.print_exc()
        print(f"langdml: error: {line}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
