"""`langdml ablate ABLATION.yaml [--workers N]`."""

from __future__ import annotations

import argparse


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ablate", help="run a grid of configs × seeds; resumable; writes a table and plot"
    )
    p.add_argument("ablation", help="ablation YAML (base config + grid + seeds)")
    p.add_argument("--workers", type=int, default=1, help="parallel worker processes")
    p.add_argument("--output-dir", default=None)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_ablate)


def _ablate(args: argparse.Namespace) -> int:
    from langdml.ablation import run_ablation
    from langdml.errors import ConfigError

    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    result = run_ablation(
        args.ablation,
        workers=args.workers,
        output_dir=args.output_dir,
        progress=not args.no_progress,
    )
    print(result.markdown)
    print(
        f"results: {result.output_dir}/results.csv, results.md"
        + (f", {result.plot_path.name}" if result.plot_path else "")
    )
    return 0
