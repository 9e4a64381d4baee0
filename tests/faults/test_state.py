"""Fault injection on stored state: checksummed checkpoints (with a fallback to the previous
one), text-embedding and dataset caches (damaged entries reported in one line and rebuilt), disk
full while saving, and the NaN stop message."""

from __future__ import annotations

import errno
import json
import pickle

import pytest
import torch
from faultkit import flip_byte, make_folder, one_line, python, tiny_cfg, write_cfg

from langdml.cli import main
from langdml.errors import LangDMLError


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("state_images"))


def _finished(folder, tmp_path, **over):
    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg = tiny_cfg(folder, tmp_path, **over)
    path = write_cfg(cfg, tmp_path / "c.yaml")
    assert main(["train", str(path)]) == 0
    run = tmp_path / "run"
    return path, run, json.loads((run / "metrics.json").read_text())


class _NotATensor:
    pass


def _damage(path, how):
    blob = path.read_bytes()
    if how == "truncate":
        path.write_bytes(blob[: len(blob) // 2])
    elif how == "bitflip":
        flip_byte(path, len(blob) // 2)
    elif how == "pickle":
        path.write_bytes(pickle.dumps({"model": _NotATensor()}))
    else:  # killed after the previous checkpoint was kept, before this one was written
        path.unlink()


# --- checkpoints ---------------------------------------------------------------------------------


def test_checkpoints_carry_a_checksum_and_keep_the_previous_one(folder, tmp_path):
    from langdml.io import file_sha256

    _, run, _ = _finished(folder, tmp_path)
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        recorded = (run / f"{name}.sha256").read_text().split()
        assert recorded == [file_sha256(run / name), name]
    assert torch.load(run / "checkpoint.pt", weights_only=True)["epoch"] == 2
    assert torch.load(run / "checkpoint.prev.pt", weights_only=True)["epoch"] == 1


@pytest.mark.parametrize("how", ["truncate", "bitflip", "pickle", "missing"])
def test_damaged_checkpoint_falls_back_to_the_previous_one(folder, tmp_path, how):
    path, run, before = _finished(folder, tmp_path)
    (run / "metrics.json").unlink()  # force a resume that reads checkpoint.pt
    _damage(run / "checkpoint.pt", how)
    with pytest.warns(UserWarning) as record:
        assert main(["train", str(path)]) == 0
    lines = [str(w.message) for w in record if "checkpoint.prev.pt" in str(w.message)]
    assert len(lines) == 1 and str(run / "checkpoint.pt") in lines[0], lines
    assert "(epoch 1)" in lines[0]
    # the replayed epoch is exact: the same numbers as the undamaged run
    assert json.loads((run / "metrics.json").read_text())["final"] == before["final"]
    if how != "missing":
        assert (run / "checkpoint.pt.damaged").is_file()  # nothing deleted


def test_both_checkpoints_damaged_is_one_line_naming_the_file(folder, tmp_path, capsys):
    over = {"data.validation_fraction": 0.3, "train.batch_size": 4}
    path, run, _ = _finished(folder, tmp_path, **over)
    (run / "metrics.json").unlink()
    _damage(run / "checkpoint.pt", "bitflip")
    _damage(run / "checkpoint.prev.pt", "truncate")
    capsys.readouterr()
    assert main(["train", str(path)]) == 2
    line = one_line(capsys.readouterr().err)
    assert str(run / "checkpoint.pt") in line and "checksum" in line
    assert "best.pt" in line  # the intact best weights are pointed out
    assert (run / "checkpoint.pt").is_file() and (run / "checkpoint.prev.pt").is_file()


def test_bit_flipped_best_weights_are_refused_when_opened(folder, tmp_path):
    from langdml.experiment import open_run

    over = {"data.validation_fraction": 0.3, "train.batch_size": 4}
    _, run, _ = _finished(folder, tmp_path, **over)
    flip_byte(run / "best.pt", (run / "best.pt").stat().st_size - 200)
    with pytest.raises(LangDMLError, match="best.pt.*checksum"):
        open_run(run, checkpoint="best")


# open_run (evaluate, embed, export, ...) reads the same fallback without moving any file


def _checkpoint_warnings(record) -> list[str]:
    return [str(w.message) for w in record if "checkpoint" in str(w.message)]


@pytest.mark.parametrize("how", ["bitflip", "missing"])
def test_open_run_falls_back_to_the_previous_checkpoint(folder, tmp_path, how):
    import warnings

    from langdml.experiment import open_run

    _, run, _ = _finished(folder, tmp_path)
    ckpt, prev = run / "checkpoint.pt", run / "checkpoint.prev.pt"
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        intact = open_run(run)
    assert _checkpoint_warnings(record) == [] and intact.epoch == 2
    assert intact.checkpoint_file == ckpt
    _damage(ckpt, how)
    damaged = ckpt.read_bytes() if how != "missing" else None
    with pytest.warns(UserWarning) as record:
        opened = open_run(run)
    lines = _checkpoint_warnings(record)
    assert len(lines) == 1 and "\n" not in lines[0], lines
    assert str(ckpt) in lines[0] and str(prev) in lines[0] and "(epoch 1)" in lines[0]
    assert opened.epoch == 1 and opened.checkpoint_file == prev
    assert opened.fingerprint()["checkpoint"] == prev.name  # index / export records
    weights = torch.load(prev, weights_only=True)["model"]
    assert all(torch.equal(v, weights[k]) for k, v in opened.model.state_dict().items())
    # read-only: nothing renamed or rewritten (resume sets the damaged file aside, not open_run)
    assert not (run / "checkpoint.pt.damaged").exists()
    assert (ckpt.read_bytes() if ckpt.exists() else None) == damaged


def test_evaluate_with_a_damaged_checkpoint_warns_in_one_line(folder, tmp_path):
    _, run, _ = _finished(folder, tmp_path)
    _damage(run / "checkpoint.pt", "truncate")
    child = python(
        f"""
        from langdml.cli import main
        raise SystemExit(main(["evaluate", {str(run)!r}]))
        """
    )
    out, err = child.communicate(timeout=240)
    assert child.returncode == 0, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("langdml: warning: "), err
    assert str(run / "checkpoint.pt") in lines[0] and "(epoch 1)" in lines[0]
    assert json.loads(out)["epoch"] == 1


def test_open_run_with_both_checkpoints_damaged_is_one_line_naming_both(folder, tmp_path, capsys):
    from langdml.experiment import open_run

    over = {"data.validation_fraction": 0.3, "train.batch_size": 4}
    _, run, _ = _finished(folder, tmp_path, **over)
    _damage(run / "checkpoint.pt", "bitflip")
    _damage(run / "checkpoint.prev.pt", "truncate")
    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 2
    line = one_line(capsys.readouterr().err)
    assert str(run / "checkpoint.pt") in line and str(run / "checkpoint.prev.pt") in line
    assert "checksum" in line and "checkpoint='best'" in line  # best.pt is intact
    assert open_run(run, "best").epoch in (1, 2)
    (run / "best.pt").unlink()
    with pytest.raises(LangDMLError) as info:
        open_run(run)
    assert "\n" not in str(info.value) and "checkpoint='best'" not in str(info.value)


def test_disk_full_while_saving_a_checkpoint(folder, tmp_path, monkeypatch, capsys):
    """ENOSPC from the writer: one line naming the file; checkpoint.pt is never half-written, and
    the rerun (space freed) ends with the numbers of an undisturbed run."""
    from pathlib import Path

    import langdml.io

    _, _, clean = _finished(folder, tmp_path / "clean")
    cfg = tiny_cfg(folder, tmp_path, **{"train.epochs": 2})
    path = write_cfg(cfg, tmp_path / "c.yaml")
    real = Path.write_bytes
    calls = {"n": 0}

    def full_disk(self, data):
        if self.name.startswith(".checkpoint.pt."):
            calls["n"] += 1
            if calls["n"] == 2:  # the second epoch's checkpoint
                real(self, data[:100])
                raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    assert main(["train", str(path)]) == 2
    line = one_line(capsys.readouterr().err)
    assert "disk is full" in line and "checkpoint.pt" in line
    monkeypatch.setattr(Path, "write_bytes", real)
    run = tmp_path / "run"
    assert not list(run.glob(".*.tmp"))  # no partial file left behind
    assert langdml.io.verify_checksum(run / "checkpoint.pt")  # sidecar is new, file still old
    with pytest.warns(UserWarning, match="checkpoint.prev.pt"):
        assert main(["train", str(path)]) == 0
    assert json.loads((run / "metrics.json").read_text())["final"] == clean["final"]


def test_metrics_json_that_still_parses_but_was_altered_is_recomputed(folder, tmp_path):
    path, run, before = _finished(folder, tmp_path)
    text = (run / "metrics.json").read_text()
    value = json.dumps(before["final"]["recall@1"])
    forged = text.replace(f'"recall@1": {value}', '"recall@1": 0.999', 1)
    assert forged != text
    (run / "metrics.json").write_text(forged)  # valid JSON, wrong numbers
    with pytest.warns(UserWarning, match="metrics.json is damaged.*checksum"):
        assert main(["train", str(path)]) == 0
    assert json.loads((run / "metrics.json").read_text())["final"] == before["final"]


# --- NaN stop ------------------------------------------------------------------------------------


def test_nan_stop_names_the_likely_cause_and_the_kept_checkpoint(folder, tmp_path, capsys):
    cfg = tiny_cfg(
        folder,
        tmp_path,
        **{"optimizer.lr": 1e9, "train.epochs": 4, "train.iterations_per_epoch": 4},
    )
    path = write_cfg(cfg, tmp_path / "c.yaml")
    assert main(["train", str(path)]) == 2
    line = one_line(capsys.readouterr().err)
    assert "became n" in line and "multi_similarity" in line, line
    assert "optimizer.lr=1e+09" in line and "too high" in line
    ckpt = tmp_path / "run" / "checkpoint.pt"
    assert (str(ckpt) in line) == ckpt.is_file(), line
    assert ckpt.is_file() or "no checkpoint was written yet" in line


# --- text-embedding cache ------------------------------------------------------------------------

NAMES = ["dog face", "cat face", "sailboat", "red apple"]


def test_bit_flipped_text_cache_is_reported_and_rebuilt(tmp_path):
    from langdml.text import load_text_embeddings, precompute_text_embeddings

    good = precompute_text_embeddings(NAMES, cache_dir=tmp_path)
    assert len(good.meta["sha256"]) == 64
    # a flip inside the float data: finite, right shape, parseable, and wrong
    flip_byte(good.path, good.path.stat().st_size - 9)
    with pytest.raises(LangDMLError, match="checksum") as info:
        load_text_embeddings(good.path, NAMES)
    assert str(good.path) in str(info.value) and "\n" not in str(info.value)
    with pytest.warns(UserWarning, match="checksum") as record:
        again = precompute_text_embeddings(NAMES, cache_dir=tmp_path)
    assert str(good.path) in str(record[0].message) and "rebuilding" in str(record[0].message)
    assert not again.cache_hit and torch.equal(again.embeddings, good.embeddings)
    assert load_text_embeddings(good.path, NAMES).cache_hit  # the rebuilt entry verifies


# --- dataset cache (the built emoji benchmark) ---------------------------------------------------

STYLES = ("openmoji", "noto_mono")


@pytest.fixture
def tiny_emoji(monkeypatch, tmp_path):
    """A 6-class build of an emoji style variant (seconds instead of minutes)."""
    from langdml.data import emoji

    real = emoji.emoji_classes
    wanted = {"dog face", "cat face", "sailboat", "red apple", "rocket", "sun"}
    monkeypatch.setattr(emoji, "emoji_classes", lambda: [c for c in real() if c[1] in wanted])
    path = emoji.build_emoji(STYLES, cache_dir=tmp_path)
    return path


def _rows(cache):
    from langdml.data import load_dataset

    ds = load_dataset("emoji:" + ",".join(STYLES), cache_dir=cache)
    return ds.labels.tolist(), [ds.image(i).tobytes() for i in range(len(ds))]


def _arrow(built):
    (arrow,) = built.glob("*.arrow")
    return arrow


@pytest.mark.parametrize("how", ["truncate", "bitflip"])
def test_damaged_dataset_cache_is_reported_and_rebuilt_on_load(tiny_emoji, tmp_path, how):
    before = _rows(tmp_path)
    arrow = _arrow(tiny_emoji)
    _damage(arrow, how)
    with pytest.warns(UserWarning) as record:
        after = _rows(tmp_path)
    lines = [str(w.message) for w in record if "rebuilding" in str(w.message)]
    assert len(lines) == 1 and str(arrow) in lines[0], lines
    assert after == before
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rebuilt entry verifies
        assert _rows(tmp_path) == before


def test_data_build_verifies_and_repairs(tiny_emoji, tmp_path, capsys):
    args = ["data", "build", "emoji", "--styles", ",".join(STYLES), "--cache-dir", str(tmp_path)]
    assert main(args) == 0
    assert "every file matches its checksum" in capsys.readouterr().out
    before = _rows(tmp_path)
    _damage(_arrow(tiny_emoji), "truncate")
    with pytest.warns(UserWarning, match="rebuilding"):
        assert main(args) == 0
    out = capsys.readouterr().out
    assert "repaired" in out and str(_arrow(tiny_emoji)) in out
    assert _rows(tmp_path) == before


def test_dataset_built_before_checksums_is_checked_once(tiny_emoji, tmp_path):
    """A build without a manifest is read in full: a truncated Arrow file is found (and rebuilt),
    an intact one gets its checksums recorded."""
    meta_path = tiny_emoji / "langdml_meta.json"
    before = _rows(tmp_path)

    def strip_manifest():
        meta = json.loads(meta_path.read_text())
        meta.pop("files")
        meta_path.write_text(json.dumps(meta))

    strip_manifest()
    assert _rows(tmp_path) == before
    assert "files" in json.loads(meta_path.read_text())  # recorded
    strip_manifest()
    _damage(_arrow(tiny_emoji), "truncate")
    with pytest.warns(UserWarning, match="unreadable.*rebuilding"):
        assert _rows(tmp_path) == before
