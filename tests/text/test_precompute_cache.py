"""`langdml precompute --dataset X` warms exactly the text cache that training on X reads: after
it, the trainer's text embeddings come from that file without building a text model."""

from __future__ import annotations

import pytest
import torch

from langdml.cli import main
from langdml.config import load_config
from langdml.experiment import class_text_embeddings, prepare_data
from langdml.text import load_text_embeddings
from tests.data.test_formats import SOP_TEST, SOP_TRAIN, _write_cub, _write_sop


def _precompute(spec: str, cache, capsys) -> str:
    assert main(["precompute", "--dataset", spec, "--cache-dir", str(cache)]) == 0
    out, err = capsys.readouterr()
    assert "computed" in err or "cache hit" in err
    return out.strip()


def _no_text_model(monkeypatch):
    """Any text-model construction from here on is a cache miss and fails the test."""
    import langdml.text.encoders as encoders

    def refuse(*args, **kwargs):
        raise AssertionError("cache miss: a text model was built")

    monkeypatch.setattr(encoders, "create_text_encoder", refuse)


def _cfg(spec: str, cache, **extra):
    overrides = {
        "data.dataset": spec,
        "data.cache_dir": str(cache),
        "model.frozen_trunk": False,  # no features needed to ask for the text
        "loss.regularizers": "language",
        "train.progress": False,
        **extra,
    }
    return load_config(None, overrides)


def _check_hit(spec: str, cache, capsys, monkeypatch) -> torch.Tensor:
    path = _precompute(spec, cache, capsys)
    files = sorted((cache / "text").rglob("*"))
    _no_text_model(monkeypatch)
    cfg = _cfg(spec, cache)
    train = prepare_data(cfg).train
    emb = class_text_embeddings(cfg, train)
    assert sorted((cache / "text").rglob("*")) == files  # nothing new was written
    stored = load_text_embeddings(path)
    names, rows = train.distinct_class_names()
    assert stored.class_names == names
    torch.testing.assert_close(emb, stored.embeddings.float()[torch.as_tensor(rows)])
    return emb


def test_cub_precompute_then_train_is_a_cache_hit(tmp_path, capsys, monkeypatch):
    _write_cub(tmp_path / "data")
    emb = _check_hit(f"cub200:{tmp_path / 'data'}", tmp_path / "cache", capsys, monkeypatch)
    assert emb.shape[0] == 2


def test_sop_shared_names_precompute_then_train_is_a_cache_hit(tmp_path, capsys, monkeypatch):
    _write_sop(tmp_path / "data", SOP_TRAIN, SOP_TEST)
    spec = f"sop:{tmp_path / 'data'}"
    emb = _check_hit(spec, tmp_path / "cache", capsys, monkeypatch)
    # 3 train classes, 2 distinct names (bicycle, bicycle, chair): rows shared by name
    assert emb.shape[0] == 3 and torch.equal(emb[0], emb[1]) and not torch.equal(emb[0], emb[2])


def test_emoji_precompute_then_train_is_a_cache_hit(emoji_cache, capsys, monkeypatch):
    _check_hit("emoji", emoji_cache, capsys, monkeypatch)


@pytest.mark.slow
def test_precompute_then_a_training_run_builds_no_text_model(
    emoji_subset_folder, tmp_path, capsys, monkeypatch
):
    from langdml.train import train

    spec, cache = f"imagefolder:{emoji_subset_folder}", tmp_path / "cache"
    _precompute(spec, cache, capsys)
    _no_text_model(monkeypatch)
    cfg = _cfg(
        spec,
        cache,
        **{
            "model.frozen_trunk": True,
            "model.image_size": 48,
            "train.epochs": 1,
            "train.batch_size": 16,
            "eval.clustering": False,
            "output_dir": str(tmp_path / "run"),
        },
    )
    result = train(cfg)
    assert result.metrics["recall@1"] > 0
    # A run directory of the previous release (text settings under loss.language) still opens.
    import yaml

    from langdml.eval.commands import evaluate_run

    path = tmp_path / "run" / "config.yaml"
    tree = yaml.safe_load(path.read_text())
    tree["loss"]["language"].update(tree.pop("text"))
    path.write_text(yaml.safe_dump(tree))
    again = evaluate_run(tmp_path / "run")
    assert again["recall@1"] == pytest.approx(result.metrics["recall@1"])
    assert "moved to text." in capsys.readouterr().err
    assert train(cfg).resumed  # the old-shape config is the same run: finished, not refused


def test_cache_dir_means_the_cache_root_and_the_old_meaning_is_deprecated(tmp_path, capsys):
    classes = tmp_path / "classes.txt"
    classes.write_text("dog face\ncat face\n")
    argv = ["precompute", "--classes", str(classes), "--cache-dir"]
    assert main([*argv, str(tmp_path / "root")]) == 0
    out, err = capsys.readouterr()
    assert out.strip().startswith(str(tmp_path / "root" / "text")) and "deprecated" not in err
    assert main([*argv, str(tmp_path / "root" / "text")]) == 0  # the old meaning: a text folder
    out2, err = capsys.readouterr()
    assert out2 == out and err.count("warning") == 1 and "cache root" in err
