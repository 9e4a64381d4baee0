"""Per-epoch logs of a run: log.jsonl, log.csv and (when installed) TensorBoard scalars."""

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


def write_logs(run_dir: Path, history: list[dict], tb) -> None:
    atomic_write_text(run_dir / "log.jsonl", "".join(json.dumps(r) + "\n" for r in history))
    keys = list(dict.fromkeys(k for r in history for k in r))
    lines = [",".join(keys)] + [",".join(str(r.get(k, "")) for k in keys) for r in history]
    atomic_write_text(run_dir / "log.csv", "\n".join(lines) + "\n")
    if tb is not None:
        rec = history[-1]
        for k, v in rec.items():
            if k != "epoch" and isinstance(v, int | float):
                tb.add_scalar(k, v, rec["epoch"])
        tb.flush()
