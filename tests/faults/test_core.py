"""Fault injection: damaged files, full disks, foreign run directories, bad values. Each case
ends in one ``langdml: error:`` line naming the file or value (no traceback without --debug), or
in a correct result; nothing is lost."""

import argparse
import errno
import json

import pytest
import torch
from faultkit import make_folder, one_line, tiny_cfg
from PIL import Image

from langdml.cli import main
from langdml.config import dump_yaml
from langdml.errors import DataError, LangDMLError


def _run_raising(monkeypatch, exc, *extra):
    """main() with a command that raises ``exc``."""

    def boom(_args):
        raise exc

    monkeypatch.setattr(
        argparse.ArgumentParser,
        "parse_known_args",
        lambda self, argv=None, namespace=None: (argparse.Namespace(func=boom), []),
    )
    return main(["diagnose", *extra])


@pytest.mark.parametrize(
    "code, words",
    [
        (errno.ENOSPC, "disk is full"),
        (errno.EACCES, "permission"),
        (errno.EEXIST, "in the way"),
        (errno.EISDIR, "directory"),
    ],
)
def test_oserror_families_are_one_line_naming_the_file(monkeypatch, capsys, code, words):
    exc = OSError(code, "strerror text", "/some/run/file.pt")
    assert _run_raising(monkeypatch, exc) == 2
    line = one_line(capsys.readouterr().err)
    assert "/some/run/file.pt" in line and words in line


def test_torch_iostream_error_reads_as_disk_full(monkeypatch, capsys):
    exc = RuntimeError("[enforce fail at inline_container.cc] basic_ios::clear: iostream error")
    assert _run_raising(monkeypatch, exc) == 2
    assert "disk is full" in one_line(capsys.readouterr().err)


def test_debug_flag_and_env_show_the_traceback(monkeypatch, capsys):
    exc = OSError(errno.ENOSPC, "No space left on device", "/x")
    assert _run_raising(monkeypatch, exc, "--debug") == 2
    assert "Traceback" in capsys.readouterr().err
    monkeypatch.setenv("LANGDML_DEBUG", "1")
    assert _run_raising(monkeypatch, exc) == 2
    assert "Traceback" in capsys.readouterr().err


def test_a_bug_is_still_a_traceback(monkeypatch):
    with pytest.raises(ZeroDivisionError):
        _run_raising(monkeypatch, ZeroDivisionError("bug"))


def test_binary_config_file_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"\xff\xfe\x00\x81binary" * 10)
    assert main(["train", str(bad)]) == 2
    line = one_line(capsys.readouterr().err)
    assert str(bad) in line and "UTF-8" in line


def test_decompression_bomb_names_the_image(tmp_path, monkeypatch):
    from langdml.data.images import open_rgb

    path = tmp_path / "big.png"
    Image.new("RGB", (64, 64)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(DataError, match="big.png") as info:
        open_rgb(path)
    assert "decompression-bomb" in str(info.value)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A tiny imagefolder: 8 classes x 4 images of distinct colours."""
    return make_folder(tmp_path_factory.mktemp("faults_images"))


def _writetiny_cfg(cfg, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(dump_yaml(cfg))
    return path


def test_cuda_without_cuda_is_one_line(folder, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    path = _writetiny_cfg(tiny_cfg(folder, tmp_path), tmp_path)
    assert main(["train", str(path), "train.device=cuda"]) == 2
    line = one_line(capsys.readouterr().err)
    assert "train.device=cuda" in line and "train.device=cpu" in line


def test_output_dir_that_is_a_file_is_one_line(folder, tmp_path, capsys):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    path = _writetiny_cfg(tiny_cfg(folder, tmp_path), tmp_path)
    assert main(["train", str(path), "--output-dir", str(blocker)]) == 2
    line = one_line(capsys.readouterr().err)
    assert str(blocker) in line


def _finished_run(folder, tmp_path, **over):
    cfg = tiny_cfg(folder, tmp_path, **over)
    path = _writetiny_cfg(cfg, tmp_path)
    assert main(["train", str(path)]) == 0
    return cfg, path, tmp_path / "run"


class _NotATensor:
    pass


# Damaged checkpoints (fallback to checkpoint.prev.pt, or one line when both are damaged):
# tests/faults/test_state.py


def test_unsafe_pickle_refusal_never_suggests_weights_only_false(tmp_path):
    from langdml.weights import load_weights_file

    path = tmp_path / "evil.pt"
    torch.save({"model": _NotATensor()}, path)
    with pytest.raises(LangDMLError, match="evil.pt") as info:
        load_weights_file(path)
    assert "weights_only=False" not in str(info.value)


def test_run_dir_without_config_is_refused_as_foreign(folder, tmp_path, capsys):
    cfg, path, run = _finished_run(folder, tmp_path)
    (run / "config.yaml").unlink()
    other = _writetiny_cfg(tiny_cfg(folder, tmp_path, **{"optimizer.lr": 0.5}), tmp_path)
    capsys.readouterr()
    assert main(["train", str(other)]) == 2
    line = one_line(capsys.readouterr().err)
    assert "no config.yaml" in line and str(run) in line
    assert (run / "checkpoint.pt").is_file() and (run / "metrics.json").is_file()


# --- feature cache: checksummed, content-keyed -------------------------------------------------


def _features(folder, cache):
    from langdml.data import load_dataset
    from langdml.models.features import FeatureSpec, extract_features

    ds = load_dataset(f"imagefolder:{folder}")
    return extract_features(ds, FeatureSpec(image_size=32), cache_dir=cache, progress=False)


@pytest.mark.parametrize("damage", ["truncate", "bitflip", "meta"])
def test_damaged_feature_cache_is_reported_and_rebuilt(folder, tmp_path, damage):
    first = _features(folder, tmp_path)
    path = first.path
    meta_path = path.with_suffix(".json")
    if damage == "truncate":
        blob = path.read_bytes()
        path.write_bytes(blob[: len(blob) // 2])
    elif damage == "bitflip":
        blob = bytearray(path.read_bytes())
        blob[-5] ^= 0x10  # inside the float data: safetensors alone would not notice
        path.write_bytes(bytes(blob))
    else:
        meta_path.write_text('{"class_names": [')
    with pytest.warns(UserWarning) as record:
        again = _features(folder, tmp_path)
    messages = [str(w.message) for w in record]
    named = str(meta_path) if damage == "meta" else str(path)
    assert any(named in m and "rebuilding" in m for m in messages), messages
    assert torch.equal(again.features, first.features)
    # the rebuilt entry verifies: no warning the next time
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(_features(folder, tmp_path).features, first.features)


def test_overwritten_images_invalidate_the_feature_cache(folder, tmp_path_factory):
    import shutil

    root = tmp_path_factory.mktemp("overwrite") / "images"
    shutil.copytree(folder, root)
    cache = root.parent / "cache"
    before = _features(root, cache)
    for i, img in enumerate(sorted(root.rglob("*.png"))):
        Image.new("RGB", (32, 32), ((i * 37) % 256, (i * 91) % 256, 7)).save(img)
    after = _features(root, cache)
    assert after.path != before.path
    assert not torch.equal(after.features, before.features)


def test_damaged_extraction_chunk_is_redone(folder, tmp_path, monkeypatch):
    from langdml.data import load_dataset
    from langdml.models import features as F

    ds = load_dataset(f"imagefolder:{folder}")
    spec = F.FeatureSpec(image_size=32)
    full = F.extract_features(ds, spec, cache_dir=tmp_path / "a", progress=False, chunk_size=8)
    # an interrupted extraction left a damaged chunk behind
    parts = (tmp_path / "b" / "features" / full.path.name).with_suffix(".parts")
    parts.mkdir(parents=True)
    (parts / "part_000001.safetensors").write_bytes(b"\x00\x01garbage")
    with pytest.warns(UserWarning, match="part_000001"):
        again = F.extract_features(ds, spec, cache_dir=tmp_path / "b", progress=False, chunk_size=8)
    assert torch.equal(again.features, full.features)


# --- dataset walking: loop-safe, stays inside the root -----------------------------------------


def _tree(tmp_path):
    root = tmp_path / "ds"
    for c in ("class_a", "class_b"):
        (root / c / "sub").mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (8, 8)).save(root / c / f"{i}.png")
        Image.new("RGB", (8, 8)).save(root / c / "sub" / "x.png")
    return root


def test_symlink_loops_count_each_image_once(tmp_path):
    from langdml.data import load_dataset

    root = _tree(tmp_path)
    plain = load_dataset(f"imagefolder:{root}")
    (root / "class_a" / "self").symlink_to(root / "class_a")  # class_a/self -> .
    (root / "class_a" / "sub" / "up").symlink_to(root / "class_a")  # a longer cycle
    (root / "class_b" / "again").symlink_to(root / "class_b" / "sub")  # the same dir twice
    looped = load_dataset(f"imagefolder:{root}")
    assert len(looped) == len(plain) == 6
    assert looped.class_names == plain.class_names


def test_symlink_leaving_the_root_is_refused(tmp_path, capsys):
    from langdml.data import load_dataset

    root = _tree(tmp_path)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    Image.new("RGB", (8, 8)).save(outside / "y.png")
    (root / "class_b" / "ext").symlink_to(outside)
    with pytest.raises(DataError, match="outside the dataset root") as info:
        load_dataset(f"imagefolder:{root}")
    assert str(root / "class_b" / "ext") in str(info.value)


# --- ablate: a failed cell fails the command -----------------------------------------------------


def test_ablate_exits_nonzero_and_lists_failed_cells(folder, tmp_path, monkeypatch, capsys):
    import yaml

    import langdml.pipeline

    base = {
        "name": "tiny",
        "data": {"dataset": f"imagefolder:{folder}", "cache_dir": str(tmp_path / "cache")},
        "model": {"image_size": 32, "embedding_dim": 16},
        "train": {"epochs": 1, "batch_size": 8, "m_per_class": 2, "iterations_per_epoch": 2},
        "eval": {"clustering": False},
    }
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    abl = {"base": "base.yaml", "output_dir": str(tmp_path / "out"), "seeds": [0, 1]}
    abl["grid"] = {"loss.regularizers": ["none"]}
    (tmp_path / "abl.yaml").write_text(yaml.safe_dump(abl))
    real = langdml.pipeline.train_experiment

    def flaky(cfg, *a, **k):
        if cfg.seed == 1:
            raise OSError(errno.ENOSPC, "No space left on device", "/full/disk/checkpoint.pt")
        return real(cfg, *a, **k)

    monkeypatch.setattr(langdml.pipeline, "train_experiment", flaky)
    assert main(["ablate", str(tmp_path / "abl.yaml"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith(("langdml: error:", "  "))]
    assert lines[0].startswith("langdml: error: 1 of 2 runs failed"), err
    assert len(lines) == 2 and "seed1" in lines[1].replace("_", "").replace("-", "")
    assert "No space left on device" in lines[1]


# --- validate early: before the first epoch ------------------------------------------------------


def test_misspelled_best_metric_is_rejected_at_validation(folder, tmp_path, capsys):
    path = _writetiny_cfg(tiny_cfg(folder, tmp_path), tmp_path)
    assert main(["train", str(path), "eval.best_metric=recal@1"]) == 2
    line = one_line(capsys.readouterr().err)
    assert "recal@1" in line and "did you mean 'recall@1'" in line
    assert not (tmp_path / "run").exists()  # nothing started


def test_negative_loss_parameter_is_rejected_before_the_first_epoch(folder, tmp_path, capsys):
    path = _writetiny_cfg(tiny_cfg(folder, tmp_path), tmp_path)
    assert main(["train", str(path), "loss.base.alpha=-2"]) == 2
    line = one_line(capsys.readouterr().err)
    assert "alpha" in line and "-2" in line and "> 0" in line
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    assert not (tmp_path / "run" / "log.jsonl").exists()


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("multi_similarity", {"alpha": -2.0}),
        ("multi_similarity", {"beta": 0.0}),
        ("proxy_anchor", {"alpha": 0.0}),
        ("proxy_anchor", {"margin": -0.1}),
        ("triplet", {"margin": -0.05}),
        ("contrastive", {"neg_margin": -1.0}),
        ("proxy_nca", {"softmax_scale": -1.0}),
        ("proxy_gml", {"scale": 0.0}),
    ],
)
def test_loss_constructors_check_their_ranges(name, kwargs):
    from langdml.losses import build_loss

    with pytest.raises(LangDMLError, match=next(iter(kwargs))):
        build_loss({"base": {"name": name, **kwargs}}, num_classes=4, embedding_size=8)


def test_damaged_metrics_json_is_recomputed_from_the_checkpoint(folder, tmp_path, capsys):
    cfg, path, run = _finished_run(folder, tmp_path)
    before = json.loads((run / "metrics.json").read_text())["final"]
    (run / "metrics.json").write_text('{"final": {"recall@1": 0.9')  # truncated
    capsys.readouterr()
    with pytest.warns(UserWarning, match="metrics.json is damaged"):
        assert main(["train", str(path)]) == 0
    assert json.loads((run / "metrics.json").read_text())["final"] == before
