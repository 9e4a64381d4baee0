"""`langdml train CONFIG.yaml [dotted.key=value ...]` (or a run directory, to resume it)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train one experiment; rerun on its run directory to resume")
    p.add_argument("config", help="experiment YAML, or an existing run directory to resume")
    p.add_argument(
        "overrides", nargs="*", help="dotted.key=value overrides, e.g. loss.language.weight=5"
    )
    p.add_argument(
        "--output-dir", default=None, help="run directory (default: the config's output_dir)"
    )
    p.set_defaults(func=_train_command)


def _train_command(args: argparse.Namespace) -> int:
    from langdml.config import load_config
    from langdml.experiment import load_run_config
    from langdml.packaged_configs import resolve_config
    from langdml.pipeline import train_experiment

    target = resolve_config(args.config)  # a path, or the name of a shipped config
    if target.is_dir():
        cfg = load_run_config(target)
        if args.overrides:
            from langdml.config import apply_overrides, validate_config

            cfg = validate_config(apply_overrides(cfg.to_dict(), args.overrides))
        run_dir = target
    else:
        cfg = load_config(target, args.overrides)
        run_dir = Path(args.output_dir) if args.output_dir else cfg.run_dir()
    result = train_experiment(cfg, run_dir)
    if os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 reports
        return 0
    print(
        json.dumps(
            {"run_dir": str(result.run_dir), "final": result.metrics, "best": result.best}, indent=2
        )
    )
    return 0
