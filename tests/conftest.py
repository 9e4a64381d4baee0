import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def emoji_cache(tmp_path_factory):
    """A cache dir holding the built emoji benchmark (built once per test session)."""
    from langdml.data.emoji import build_emoji

    root = tmp_path_factory.mktemp("cache")
    build_emoji(cache_dir=root)
    return root


@pytest.fixture(scope="session")
def emoji_subset_folder(emoji_cache, tmp_path_factory):
    """An imagefolder tree of 24 emoji classes (all their styles), for fast end-to-end tests."""
    from langdml.data import load_dataset

    ds = load_dataset("emoji", cache_dir=emoji_cache)
    root = tmp_path_factory.mktemp("emoji24")
    for i in range(len(ds)):
        label = int(ds.labels[i])
        if label >= 24:
            continue
        folder = root / f"{label:03d}.{ds.class_names[label].replace(' ', '_')}"
        folder.mkdir(exist_ok=True)
        ds.image(i).resize((48, 48)).save(folder / f"{ds.extras['style'][i]}.png")
    return root


def _train_killed_mid_run(cfg, epochs: int):
    """Start `langdml train` on ``cfg`` in a subprocess, SIGKILL it just after its first
    checkpoint (inside a later epoch) and return the run directory; asserts the kill landed
    before the run finished."""
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    import torch

    from langdml.config import dump_yaml

    run_dir = Path(cfg.output_dir)
    cfg_path = run_dir.parent / f"{run_dir.name}.yaml"
    cfg_path.write_text(dump_yaml(cfg))
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "langdml", "train", str(cfg_path)],
        env={**os.environ, "PYTHONPATH": str(root)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ckpt = run_dir / "checkpoint.pt"
    deadline = time.time() + 240
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)  # into the next epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = torch.load(ckpt, weights_only=True)
    assert 1 <= state["epoch"] < epochs, "the kill must land before the run finished"
    assert not (run_dir / "metrics.json").exists()
    return run_dir


@pytest.fixture
def train_killed_mid_run():
    """``train_killed_mid_run(cfg, epochs)``: a run SIGKILLed mid-training (see above)."""
    return _train_killed_mid_run
