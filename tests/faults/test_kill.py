"""SIGKILL at several points of extract / precompute / ablate, two processes writing the same
cache entry, and a full disk while writing the feature cache: each ends in a correct result
identical to an undisturbed run (or one clear line), with no damaged entry left to be used."""

from __future__ import annotations

import contextlib
import errno
import json
import warnings

import pytest
import torch
import yaml
from faultkit import kill_when, make_folder, one_line, python, tiny_cfg, write_cfg

from langdml.cli import main

NAMES = ["dog face", "cat face", "sailboat", "red apple"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("kill_images"))


def _features(folder, cache, **kw):
    from langdml.data import load_dataset
    from langdml.models.features import FeatureSpec, extract_features

    ds = load_dataset(f"imagefolder:{folder}")
    return extract_features(ds, FeatureSpec(image_size=32), cache_dir=cache, progress=False, **kw)


@contextlib.contextmanager
def _strict():
    """A context in which any warning (e.g. "damaged, rebuilding") fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


_EXTRACT = """
    import sys, time
    from pathlib import Path
    from langdml.data import load_dataset
    from langdml.models import features as F
    folder, cache, slow, go = sys.argv[1:] if len(sys.argv) > 1 else {args}
    real = F._extract_chunk
    def chunk(*a, **k):
        out = real(*a, **k)
        time.sleep(float(slow))  # widen the window the kill lands in
        return out
    F._extract_chunk = chunk
    while go and not Path(go).exists():
        time.sleep(0.01)
    ds = load_dataset(f"imagefolder:{{folder}}")
    got = F.extract_features(ds, F.FeatureSpec(image_size=32), cache_dir=cache, progress=False,
                             chunk_size=4)
    print(got.features.double().sum().item(), got.path)
"""


@pytest.mark.slow
def test_kill_during_feature_extraction_resumes_to_identical_features(folder, tmp_path):
    clean = _features(folder, tmp_path / "clean", chunk_size=4)
    cache = tmp_path / "killed"
    proc = python(_EXTRACT.format(args=(str(folder), str(cache), "0.3", "")))
    parts = cache / "features" / clean.path.with_suffix(".parts").name
    kill_when(proc, lambda: len(list(parts.glob("part_*.safetensors"))) >= 2)
    assert not (cache / "features" / clean.path.name).exists()
    with _strict():
        again = _features(folder, cache, chunk_size=4)
    assert torch.equal(again.features, clean.features)
    assert not parts.exists()


@pytest.mark.slow
def test_two_processes_extracting_the_same_entry(folder, tmp_path):
    clean = _features(folder, tmp_path / "clean", chunk_size=4)
    cache, go = tmp_path / "shared", tmp_path / "go"
    procs = [
        python(_EXTRACT.format(args=(str(folder), str(cache), "0.05", str(go)))) for _ in range(2)
    ]
    go.touch()
    outs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert outs[0][0] == outs[1][0]  # same features, same path
    with _strict():  # one valid entry: a hit that verifies
        hit = _features(folder, cache, chunk_size=4)
    assert torch.equal(hit.features, clean.features)


_PRECOMPUTE = """
    import sys, time
    from pathlib import Path
    from langdml.text import precompute_text_embeddings
    cache, mode, go = {args}
    real = Path.write_bytes
    def half_then_hang(self, data):
        if not self.name.endswith(".tmp"):
            return real(self, data)
        real(self, data[: len(data) // 2])
        Path(cache, "half-written").touch()
        time.sleep(600)
    if mode == "kill":
        Path.write_bytes = half_then_hang
    while go and not Path(go).exists():
        time.sleep(0.01)
    r = precompute_text_embeddings({names!r}, cache_dir=cache)
    print(r.embeddings.double().sum().item(), r.path)
"""


@pytest.mark.slow
def test_kill_while_writing_the_text_cache_leaves_no_entry(tmp_path):
    from langdml.text import precompute_text_embeddings

    clean = precompute_text_embeddings(NAMES, cache_dir=tmp_path / "clean")
    cache = tmp_path / "killed"
    cache.mkdir()
    proc = python(_PRECOMPUTE.format(args=(str(cache), "kill", ""), names=NAMES))
    kill_when(proc, lambda: (cache / "half-written").exists())
    assert not (cache / clean.path.name).exists()  # only the half-written temp file
    assert list(cache.glob(".*.tmp"))
    with _strict():
        again = precompute_text_embeddings(NAMES, cache_dir=cache)
    assert not again.cache_hit and torch.equal(again.embeddings, clean.embeddings)


@pytest.mark.slow
def test_two_processes_precomputing_the_same_entry(tmp_path):
    from langdml.text import precompute_text_embeddings

    clean = precompute_text_embeddings(NAMES, cache_dir=tmp_path / "clean")
    cache, go = tmp_path / "shared", tmp_path / "go"
    procs = [
        python(_PRECOMPUTE.format(args=(str(cache), "race", str(go)), names=NAMES))
        for _ in range(2)
    ]
    go.touch()
    outs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert outs[0][0] == outs[1][0]
    with _strict():
        hit = precompute_text_embeddings(NAMES, cache_dir=cache)
    assert hit.cache_hit and torch.equal(hit.embeddings, clean.embeddings)


def _ablation(folder, tmp_path, out):
    base = {
        "name": "tiny",
        "data": {"dataset": f"imagefolder:{folder}", "cache_dir": str(tmp_path / "cache")},
        "model": {"image_size": 32, "embedding_dim": 16},
        # 40 short epochs: a run must outlast the 20 ms poll of kill_when on a fast, idle machine
        "train": {"epochs": 40, "batch_size": 8, "m_per_class": 2, "iterations_per_epoch": 2},
        "eval": {"clustering": False, "every": 40},
    }
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    abl = {"base": "base.yaml", "output_dir": str(out), "seeds": [0, 1]}
    abl["grid"] = {"optimizer.lr": [0.002]}
    path = tmp_path / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(abl))
    return path


def _results(out):
    rows = json.loads((out / "results.json").read_text())
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


@pytest.mark.slow
def test_kill_during_an_ablation_grid_resumes_to_identical_results(folder, tmp_path):
    clean = _ablation(folder, tmp_path, tmp_path / "clean")
    assert main(["ablate", str(clean), "--no-progress"]) == 0
    killed_out = tmp_path / "killed"
    killed = _ablation(folder, tmp_path, killed_out)
    proc = python(
        "import sys; from langdml.cli import main; "
        f"sys.exit(main(['ablate', {str(killed)!r}, '--no-progress']))"
    )
    # the second run's first checkpoint: one run is done, one is mid-training
    kill_when(proc, lambda: len(list(killed_out.glob("runs/*/checkpoint.pt"))) >= 2)
    rows = json.loads((killed_out / "results.json").read_text())
    assert len([r for r in rows if r["status"] == "ok"]) < 2
    assert main(["ablate", str(killed), "--no-progress"]) == 0
    assert _results(killed_out) == _results(tmp_path / "clean")


def test_disk_full_while_writing_the_feature_cache(folder, tmp_path, monkeypatch, capsys):
    from pathlib import Path

    cfg = tiny_cfg(folder, tmp_path)
    path = write_cfg(cfg, tmp_path / "c.yaml")
    real = Path.write_bytes

    def full_disk(self, data):
        if self.suffix == ".tmp" and ".safetensors." in self.name:
            real(self, data[: len(data) // 3])
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    assert main(["train", str(path)]) == 2
    line = one_line(capsys.readouterr().err)
    assert "disk is full" in line and ".safetensors" in line
    assert not list((tmp_path / "cache" / "features").glob("*.safetensors"))
    monkeypatch.setattr(Path, "write_bytes", real)
    with _strict():
        assert main(["train", str(path)]) == 0
    clean_cfg = tiny_cfg(folder, tmp_path / "clean")
    (tmp_path / "clean").mkdir()
    assert main(["train", str(write_cfg(clean_cfg, tmp_path / "clean" / "c.yaml"))]) == 0
    got = json.loads((tmp_path / "run" / "metrics.json").read_text())["final"]
    want = json.loads((tmp_path / "clean" / "run" / "metrics.json").read_text())["final"]
    assert got == want


def test_a_really_full_disk_is_one_line(tmp_path, capsys):
    """A 16 KiB tmpfs (needs mount rights; skipped without): the text cache write fails with
    ENOSPC, reported in one line naming the file, and no entry is left."""
    import subprocess

    disk = tmp_path / "tiny"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        classes = tmp_path / "classes.txt"
        names = [f"object number {i}" for i in range(24)]  # 24 x 384 floats: over 16 KiB
        classes.write_text("\n".join(names) + "\n")
        assert main(["precompute", "--classes", str(classes), "--cache-dir", str(disk)]) == 2
        line = one_line(capsys.readouterr().err)
        assert "disk is full" in line and str(disk) in line
        assert not list((disk / "text").glob("*.safetensors"))
    finally:
        subprocess.run(["umount", str(disk)], check=True)
