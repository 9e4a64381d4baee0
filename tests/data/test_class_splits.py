"""One class split: training (``experiment.prepare_data``), ``langdml precompute``,
``diagnose.train_classes``, cross-modal CLIP evaluation and inference's ``select_split`` all see
the same train / validation / test classes, folds and train_fraction included."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from faultkit import make_folder

from langdml.config import load_config
from langdml.data import class_splits, load_dataset
from langdml.errors import DataError

# (train_fraction, validation_fraction, folds, fold) on 8 classes
SETTINGS = [(0.5, 0.0, 0, 0), (0.6, 0.25, 0, 0), (0.75, 0.0, 3, 1)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("split") / "images", classes=8, per_class=2)


def _cfg(folder, tmp_path, setting):
    tf, vf, folds, fold = setting
    return load_config(
        None,
        {
            "data.dataset": f"imagefolder:{folder}",
            "data.cache_dir": str(tmp_path / "cache"),
            "data.train_fraction": tf,
            "data.validation_fraction": vf,
            "data.folds": folds,
            "data.fold": fold,
            "model.trainable_blocks": "all",  # no feature extraction: the split is what is tested
            "train.progress": False,
        },
    )


def _precompute_names(monkeypatch, folder, tmp_path, setting, split="train"):
    """The class names ``langdml precompute --dataset`` embeds for ``setting``."""
    import langdml.text.precompute as precompute
    from langdml.cli import main

    asked = []

    def fake(names, **kwargs):
        asked.append(list(names))
        emb = torch.zeros(len(names), 2)
        meta = {"model_spec": "fake"}
        return SimpleNamespace(cache_hit=False, embeddings=emb, meta=meta, path=tmp_path / "x")

    monkeypatch.setattr(precompute, "precompute_text_embeddings", fake)
    tf, vf, folds, fold = setting
    argv = ["precompute", "--dataset", f"imagefolder:{folder}", "--split", split]
    argv += ["--train-fraction", str(tf), "--validation-fraction", str(vf)]
    argv += ["--folds", str(folds), "--fold", str(fold), "--cache-dir", str(tmp_path / "cache")]
    assert main(argv) == 0
    return asked[0]


@pytest.mark.parametrize("setting", SETTINGS)
def test_every_caller_sees_the_same_classes(folder, tmp_path, monkeypatch, setting):
    from langdml.diagnose import train_classes
    from langdml.experiment import prepare_data
    from langdml.inference.run import select_split
    from langdml.xmodal import methods

    tf, vf, folds, fold = setting
    cfg = _cfg(folder, tmp_path, setting)
    data = prepare_data(cfg)
    full = load_dataset(cfg.data.dataset)
    # What the split must be, from the rule (the first int(C * tf) classes by id train; the last
    # fraction of those, or fold `fold` of `folds` contiguous parts, validate).
    names = full.class_names
    n_train = int(len(names) * tf)
    first, test = names[:n_train], names[n_train:]
    if vf:
        n_fit = int(n_train * (1 - vf))
        train, val = first[:n_fit], first[n_fit:]
    elif folds:
        size = n_train // folds
        val = first[fold * size : (fold + 1) * size]
        train = [c for c in first if c not in val]
    else:
        train, val = first, test
    assert data.train.class_names == train
    assert data.eval.class_names == val
    assert data.eval_split == ("val" if vf or folds else "test")

    assert train_classes(full, tf, vf, folds, fold).class_names == train
    assert _precompute_names(monkeypatch, folder, tmp_path, setting) == train
    assert _precompute_names(monkeypatch, folder, tmp_path, setting, "test") == test

    run = SimpleNamespace(config=cfg)
    for part, expected in (("train", train), ("test", test)):
        chosen, rows = select_split(run, full, part)
        assert chosen.class_names == expected
        assert [full.class_names[full.labels[r]] for r in rows] == list(
            chosen.class_names[i] for i in chosen.labels
        )

    # CLIP's zero-shot evaluation: the test classes of the same split (a stand-in CLIP model,
    # since only which images and names it is asked about matters here).
    clip = SimpleNamespace(encode_images=lambda images, batch_size: torch.zeros(len(images), 2))
    monkeypatch.setattr("langdml.text.create_clip_model", lambda model, device: clip)
    monkeypatch.setattr(
        "langdml.text.precompute.embed_with_prompts",
        lambda model, names, prompts, batch_size: torch.zeros(len(names), 2),
    )
    xtest, emb, texts = methods.clip_test_embeddings(f"imagefolder:{folder}", train_fraction=tf)
    assert xtest.class_names == test and len(emb) == len(xtest) and texts.names == test


def test_bad_split_settings_are_one_line_errors(folder):
    full = load_dataset(f"imagefolder:{folder}")
    with pytest.raises(DataError, match="validation_fraction must be in"):
        class_splits(full, 0.5, 1.0)
    with pytest.raises(DataError, match="not both"):
        class_splits(full, 0.5, 0.25, folds=2)
    with pytest.raises(DataError, match="no validation split"):
        class_splits(full, 0.5).part("val")
    assert class_splits(full, 0.75, folds=3, fold=2).part("val").num_classes == 2
