"""Per-epoch logs of a run: log.jsonl (always), log.csv and TensorBoard scalars (when
tensorboard is installed); the last two are the ``csv`` and ``tensorboard`` trackers."""

from __future__ import annotations

import json
from pathlib import Path

from langdml.io import atomic_write_text


def tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional at run time
        return None
    return SummaryWriter(str(run_dir / "tb"))


def write_jsonl(run_dir: Path, history: list[dict]) -> None:
    atomic_write_text(run_dir / "log.jsonl", "".join(json.dumps(r) + "\n" for r in history))


def write_csv(run_dir: Path, history: list[dict]) -> None:
    keys = list(dict.fromkeys(k for r in history for k in r))
    lines = [",".join(keys)] + [",".join(str(r.get(k, "")) for k in keys) for r in history]
    atomic_write_text(run_dir / "log.csv", "\n".join(lines) + "\n")


def write_scalars(tb, record: dict) -> None:
    """One epoch's numbers as TensorBoard scalars at step ``record["epoch"]``."""
    for k, v in record.items():
        if k != "epoch" and isinstance(v, int | float):
            tb.add_scalar(k, v, record["epoch"])
    tb.flush()
