"""Ablation runner: grid expansion, validation before any run, table/plot, kill -9 and resume."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from langdml.ablation import load_ablation, run_ablation
from langdml.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def _write(tmp_path, folder, cache, grid=None, seeds=(0, 1), **extra):
    base = {
        "name": "tiny",
        "data": {"dataset": f"imagefolder:{folder}", "cache_dir": str(cache)},
        "model": {"image_size": 48, "embedding_dim": 32},
        "train": {
            "epochs": 3,
            "batch_size": 16,
            "m_per_class": 2,
            "iterations_per_epoch": 15,
            "progress": False,
        },
        "eval": {"every": 3, "clustering": False},
        "optimizer": {"lr": 0.003},
    }
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    abl = {
        "base": "base.yaml",
        "output_dir": str(tmp_path / "out"),
        "seeds": list(seeds),
        "grid": grid
        if grid is not None
        else {
            "loss.base.name": ["multi_similarity", "proxy_anchor"],
            "loss.regularizers": ["none", "language"],
        },
    }
    abl.update(extra)
    path = tmp_path / "abl.yaml"
    path.write_text(yaml.safe_dump(abl))
    return path


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("abl_cache")


def test_grid_expansion(emoji_subset_folder, cache, tmp_path):
    abl = load_ablation(_write(tmp_path, emoji_subset_folder, cache, seeds=[0, 1, 2]))
    assert len(abl.runs) == 2 * 2 * 3
    assert len({r.id for r in abl.runs}) == 12
    assert {r.config.loss.base.name for r in abl.runs} == {"multi_similarity", "proxy_anchor"}


def test_when_applies_overrides_per_grid_value(emoji_subset_folder, cache, tmp_path):
    when = {"loss.base.name": {"proxy_anchor": {"loss.language.weight": 30.0}}}
    abl = load_ablation(_write(tmp_path, emoji_subset_folder, cache, when=when))
    weights = {(r.config.loss.base.name, r.config.loss.language.weight) for r in abl.runs}
    assert weights == {("multi_similarity", 1.0), ("proxy_anchor", 30.0)}
    # a different resolved config gets a different run directory
    plain = load_ablation(_write(tmp_path, emoji_subset_folder, cache))

    def pa(a):
        return {r.config.output_dir for r in a.runs if r.config.loss.base.name == "proxy_anchor"}

    assert not pa(abl) & pa(plain)
    with pytest.raises(ConfigError, match="'triplet', which is not one of the grid values"):
        load_ablation(
            _write(tmp_path, emoji_subset_folder, cache, when={"loss.base.name": {"triplet": {}}})
        )
    with pytest.raises(ConfigError, match="not a grid key"):
        load_ablation(_write(tmp_path, emoji_subset_folder, cache, when={"seed": {}}))


@pytest.mark.parametrize(
    "grid, seeds, extra, fragment",
    [
        ({"loss.bse.name": ["triplet"]}, [0], {}, "unknown config key 'loss.bse'"),
        ({}, [0], {}, "'grid' must be a non-empty mapping"),
        ({"loss.base.name": []}, [0], {}, "needs a non-empty list"),
        ({"loss.base.name": ["triplet"]}, [], {}, "'seeds' must be a non-empty list"),
        ({"train.batch_size": [15]}, [0], {}, "not divisible"),
        ({"loss.base.name": ["no_such_loss"]}, [0], {}, "unknown base loss 'no_such_loss'"),
        ({"loss.base.name": ["triplet"]}, [0], {"gird": 1}, "unknown ablation key 'gird'"),
    ],
)
def test_bad_ablation_fails_before_any_run(
    emoji_subset_folder, cache, tmp_path, grid, seeds, extra, fragment
):
    path = _write(tmp_path, emoji_subset_folder, cache, grid=grid, seeds=seeds, **extra)
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace("[", r"\[")):
        run_ablation(path, progress=False)
    assert not (tmp_path / "out" / "runs").exists()


def test_ablation_table_plot_and_kill_resume(emoji_subset_folder, cache, tmp_path):
    path = _write(tmp_path, emoji_subset_folder, cache)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "langdml", "ablate", str(path), "--no-progress"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    out = tmp_path / "out"
    deadline = time.time() + 300
    # kill once at least one run has finished and another has a checkpoint but no result
    while time.time() < deadline and proc.poll() is None:
        runs = list((out / "runs").glob("*")) if (out / "runs").exists() else []
        finished = [r for r in runs if (r / "metrics.json").exists()]
        partial = [
            r for r in runs if (r / "checkpoint.pt").exists() and not (r / "metrics.json").exists()
        ]
        if finished and partial:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished_before = {
        r.name: (r / "metrics.json").stat().st_mtime_ns
        for r in (out / "runs").glob("*")
        if (r / "metrics.json").exists()
    }
    partial_before = [
        r
        for r in (out / "runs").glob("*")
        if (r / "checkpoint.pt").exists() and not (r / "metrics.json").exists()
    ]
    assert finished_before and len(finished_before) < 8

    result = run_ablation(path, progress=False)
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 8 and all(r["status"] == "ok" for r in rows)
    # finished runs were not retrained; interrupted ones resumed (their log starts at epoch 1 once)
    for name, mtime in finished_before.items():
        assert (out / "runs" / name / "metrics.json").stat().st_mtime_ns == mtime
    for run in partial_before:
        epochs = [json.loads(x)["epoch"] for x in (run / "log.jsonl").read_text().splitlines()]
        assert epochs == [1, 2, 3]
    md = (out / "results.md").read_text()
    assert md.count("**") >= 4 and "p=" in md and "multi_similarity" in md and "proxy_anchor" in md
    assert (out / "results.png").read_bytes()[:4] == b"\x89PNG"
    # the same table from a clean rerun
    again = run_ablation(path, progress=False)
    assert again.markdown == result.markdown
