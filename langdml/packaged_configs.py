"""The configs shipped inside the package (``langdml/configs/*.yaml``) and ``langdml configs``.

``langdml train emoji_demo`` and ``langdml ablate emoji_ablation`` name a shipped config; an
existing path always wins, so a local file called like a shipped config is the one used. In a
source checkout the root ``configs/`` is a symlink to ``langdml/configs/``, so README commands
such as ``langdml train configs/emoji_demo.yaml`` keep working, and relative ``base:`` references
inside ablation files resolve beside the ablation file in both places.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from langdml.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
_SUFFIXES = (".yaml", ".yml")


def config_dir() -> Path:
    """Folder of the shipped configs (inside the installed package)."""
    return CONFIG_DIR


def available() -> dict[str, Path]:
    """Shipped config name (file stem) → path, sorted by name."""
    if not CONFIG_DIR.is_dir():
        return {}
    files = [p for p in CONFIG_DIR.iterdir() if p.suffix in _SUFFIXES and p.is_file()]
    return {p.stem: p for p in sorted(files, key=lambda p: p.stem)}


def resolve_config(arg: str | os.PathLike) -> Path:
    """An existing file or folder as given; else the shipped config of that name.

    ``emoji_demo``, ``emoji_demo.yaml`` and ``configs/emoji_demo.yaml`` (the README's spelling,
    when run outside a checkout) all name the shipped ``emoji_demo``. Anything else that does not
    exist is one line listing the shipped names.
    """
    path = Path(arg)
    if path.exists():
        return path
    name = path.name
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    shipped = available()
    bare = path.parent in (Path("."), Path("configs"))
    if bare and name in shipped:
        return shipped[name]
    names = ", ".join(shipped) or "none (the package was installed without its configs)"
    raise ConfigError(
        f"config {str(arg)!r} is neither an existing file nor a shipped config; shipped: {names}"
    )


def describe(path: Path, width: int = 80) -> tuple[str, str]:
    """(kind, summary) of a config file: kind is ``ablation`` (it has a grid) or ``train``; the
    summary is the first sentence of the leading comment, cut to ``width`` characters."""
    comment, kind, leading = [], "train", True
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if leading and stripped.startswith("#"):
            comment.append(stripped.lstrip("#").strip())
        elif stripped:
            leading = False
        if line.startswith(("grid:", "seeds:")):
            kind = "ablation"
    text = " ".join(comment)
    end = re.search(r"(?<!\bvs)(?<!\be\.g)(?<!\bi\.e)\.\s+(?=[A-Z`])", text)  # a sentence end
    summary = text[: end.start() + 1] if end else text
    if len(summary) > width:
        summary = summary[: width - 1].rsplit(" ", 1)[0] + "…"
    return kind, summary


def format_listing() -> str:
    shipped = available()
    lines = [f"shipped configs in {config_dir()} (langdml train NAME, langdml ablate NAME):"]
    width = max((len(n) for n in shipped), default=0)
    for name, path in shipped.items():
        kind, first = describe(path)
        lines.append(f"  {name:<{width}}  {kind:<8}  {first}".rstrip())
    return "\n".join(lines)


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "configs", help="list the shipped configs (usable by name: langdml train emoji_demo)"
    )
    p.add_argument("--path", metavar="NAME", default=None, help="print the file path of one config")
    p.set_defaults(func=_configs)


def _configs(args: argparse.Namespace) -> int:
    if args.path:
        print(resolve_config(args.path))
    else:
        print(format_listing())
    return 0
