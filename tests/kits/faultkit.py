"""Helpers shared by the fault-injection tests (test_faults*.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import torch
from PIL import Image

from langdml.config import dump_yaml, load_config

ROOT = Path(__file__).resolve().parents[2]


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("langdml: error: "), err
    assert "Traceback" not in err
    return lines[0]


def make_folder(root: Path, classes: int = 8, per_class: int = 4) -> Path:
    """A tiny imagefolder of distinct random colours."""
    gen = torch.Generator().manual_seed(0)
    for c in range(classes):
        (root / f"class_{c}").mkdir(parents=True)
        for i in range(per_class):
            rgb = tuple(int(v) for v in torch.randint(0, 255, (3,), generator=gen))
            Image.new("RGB", (32, 32), rgb).save(root / f"class_{c}" / f"{i}.png")
    return root


def tiny_cfg(folder: Path, tmp_path: Path, **over):
    base = {
        "data.dataset": f"imagefolder:{folder}",
        "data.cache_dir": str(tmp_path / "cache"),
        "model.image_size": 32,
        "model.embedding_dim": 16,
        "train.epochs": 2,
        "train.batch_size": 8,
        "train.m_per_class": 2,
        "train.iterations_per_epoch": 2,
        "train.progress": False,
        "output_dir": str(tmp_path / "run"),
    }
    base.update(over)
    return load_config(None, base)


def write_cfg(cfg, path: Path) -> Path:
    path.write_text(dump_yaml(cfg))
    return path


def flip_byte(path: Path, offset: int) -> None:
    blob = bytearray(path.read_bytes())
    blob[offset] ^= 0x10
    path.write_bytes(bytes(blob))


def python(code: str) -> subprocess.Popen:
    """A child ``python -c code`` importing this checkout's langdml."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def kill_when(proc: subprocess.Popen, ready, timeout: float = 240) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` holds; asserts it was still running then."""
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None, f"the child ended before the kill point: {proc.stderr.read()}"
        assert time.time() < deadline, "the kill point was never reached"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
