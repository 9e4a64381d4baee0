"""Trainer end to end on a 48-class emoji subset (frozen trunk, tiny images): learning, exact
resume after SIGKILL, NaN handling, CLI train/evaluate."""

import json
import os
from pathlib import Path

import pytest
import torch
from runkit import imagefolder_cfg

from langdml.cli import main
from langdml.errors import ConfigError, LangDMLError
from langdml.train import train

ROOT = Path(__file__).resolve().parents[2]


SETTINGS = {
    "model.image_size": 48,
    "model.embedding_dim": 32,
    "train.epochs": 6,
    "train.batch_size": 16,
    "train.m_per_class": 2,
    "train.iterations_per_epoch": 12,
    "train.progress": False,
    "eval.every": 2,
    "optimizer.lr": 0.003,
}


def _cfg(folder, cache, out, **over):
    return imagefolder_cfg(folder, cache, out, SETTINGS, **over)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("train_cache")


def test_training_beats_untrained_head_and_raw_features(emoji_subset_folder, cache, tmp_path):
    cfg = _cfg(emoji_subset_folder, cache, tmp_path / "run", **{"train.epochs": 10})
    result = train(cfg)
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    r1 = result.metrics["recall@1"]
    assert r1 > summary["baselines"]["untrained"]["recall@1"]
    assert r1 > summary["baselines"]["raw_features"]["recall@1"]
    for name in ("config.yaml", "log.jsonl", "log.csv", "checkpoint.pt", "provenance.json"):
        assert (tmp_path / "run" / name).is_file(), name
    # no validation split: no best epoch chosen on the test classes, and metrics.json says why
    assert not (tmp_path / "run" / "best.pt").exists()
    assert summary["best"] == {} and "validation_fraction" in summary["best_unavailable"]
    prov = json.loads((tmp_path / "run" / "provenance.json").read_text())
    assert prov["versions"]["torch"] and prov["versions"]["numpy"]
    assert {"python", "numpy", "timm", "faiss"} <= set(prov["versions"])
    assert prov["dataset"]["fingerprints"]["train"] and prov["dataset"]["fingerprints"]["test"]
    assert "cuda" in prov["device"] and "gpus" in prov["device"]
    assert prov["device"]["cpu_threads"] == torch.get_num_threads()
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == list(range(1, 11))
    assert "recall@1" in log[1] and "recall@1" not in log[0]  # eval every 2 epochs
    # a finished run is returned as is, not retrained
    again = train(cfg)
    assert again.resumed and again.metrics == result.metrics


def test_sigkill_mid_epoch_then_resume_gives_identical_metrics(
    emoji_subset_folder, cache, tmp_path, train_killed_mid_run
):
    over = {"train.epochs": 8, "train.iterations_per_epoch": 40, "loss.regularizers": "direction"}
    reference = train(_cfg(emoji_subset_folder, cache, tmp_path / "ref", **over))

    cfg = _cfg(emoji_subset_folder, cache, tmp_path / "killed", **over)
    train_killed_mid_run(cfg, 8)
    resumed = train(cfg)
    assert resumed.resumed
    assert resumed.metrics == reference.metrics  # exact, not approximate


def test_nan_loss_stops_and_keeps_last_good_checkpoint(
    emoji_subset_folder, cache, tmp_path, monkeypatch
):
    import langdml.losses as losses

    real = losses.build_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        loss = real(*args, **kwargs)
        forward = loss.forward

        def maybe_nan(z, y):
            calls["n"] += 1
            value = forward(z, y)
            return value * float("nan") if calls["n"] > 30 else value

        loss.forward = maybe_nan
        return loss

    monkeypatch.setattr(losses, "build_loss", poisoned)
    cfg = _cfg(emoji_subset_folder, cache, tmp_path / "nan")
    with pytest.raises(LangDMLError, match="loss became nan at epoch 3.*epoch 2"):
        train(cfg)
    assert torch.load(tmp_path / "nan" / "checkpoint.pt", weights_only=True)["epoch"] == 2


def test_resume_with_a_different_config_is_refused(emoji_subset_folder, cache, tmp_path):
    train(_cfg(emoji_subset_folder, cache, tmp_path / "r", **{"train.epochs": 1}))
    with pytest.raises(ConfigError, match="different config.*optimizer.lr"):
        train(
            _cfg(
                emoji_subset_folder,
                cache,
                tmp_path / "r",
                **{"train.epochs": 1, "optimizer.lr": 0.1},
            )
        )


def test_resume_ignores_labels_but_not_settings():
    from langdml.train.checkpoint import same_config

    saved = {"name": "abl/run-1", "output_dir": "a", "optimizer": {"lr": 0.001}}
    assert same_config(saved, {**saved, "name": "abl-part/run-1", "output_dir": "b"}) == []
    changed = {**saved, "name": "x", "optimizer": {"lr": 0.1}}
    assert same_config(saved, changed) == ["optimizer.lr"]


@pytest.mark.parametrize("base", ["proxy_anchor", "triplet"])
def test_language_regularizer_trains_and_logs_terms(emoji_subset_folder, cache, tmp_path, base):
    cfg = _cfg(
        emoji_subset_folder,
        cache,
        tmp_path / base,
        **{
            "train.epochs": 2,
            "loss.base.name": base,
            "loss.regularizers": "language+direction",
            "loss.language.weight": 2.0,
            # Proxy Anchor has no integrated DR form; the project's orthogonality penalty.
            "loss.direction.form": "orthogonal" if base == "proxy_anchor" else "integrated",
        },
    )
    result = train(cfg)
    log = json.loads((tmp_path / base / "log.jsonl").read_text().splitlines()[-1])
    assert log["loss/language"] > 0 and "loss/direction" in log
    assert 0 <= result.metrics["recall@1"] <= 1


def test_cli_train_then_evaluate(emoji_subset_folder, cache, tmp_path, capsys, monkeypatch):
    cfg = _cfg(emoji_subset_folder, cache, tmp_path / "cli", **{"train.epochs": 2})
    cfg_path = tmp_path / "c.yaml"
    from langdml.config import dump_yaml

    cfg_path.write_text(dump_yaml(cfg))
    assert main(["train", str(cfg_path), "train.epochs=2"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "cli")]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    final = json.loads((tmp_path / "cli" / "metrics.json").read_text())["final"]
    for key in ("recall@1", "map@r", "r_precision"):
        assert evaluated[key] == pytest.approx(final[key], abs=1e-9)
    assert evaluated["checkpoint"] == "last"
    # "final", the old word for "last": the same result, with one deprecation line
    monkeypatch.setattr("langdml.config.tree._SAID", set())
    assert main(["evaluate", str(tmp_path / "cli"), "--checkpoint", "final"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == evaluated
    lines = [line for line in err.splitlines() if "deprecated" in line]
    assert len(lines) == 1 and "'last'" in lines[0], err
    assert main(["evaluate", str(tmp_path / "cli"), "--checkpoint", "best"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no best checkpoint" in err and "validation_fraction" in err and "\n" not in err
    assert main(["train", str(cfg_path), "train.batch_size=15"]) == 2
    assert "not divisible" in capsys.readouterr().err
    assert main(["train", str(cfg_path), "data.dataset=imagefolder:/no/such/dir"]) == 2


def test_xmodal_columns_after_training(emoji_subset_folder, cache, tmp_path):
    cfg = _cfg(
        emoji_subset_folder, cache, tmp_path / "x", **{"train.epochs": 2, "eval.xmodal": True}
    )
    result = train(cfg)
    xm = result.extra["xmodal"]
    assert {"xmodal/i2t_r@1", "xmodal/t2i_map@r"} <= set(xm)
    assert all(0.0 <= v <= 1.0 for v in xm.values())


def test_language_as_proxies_base_trains_and_projects(emoji_subset_folder, cache, tmp_path):
    cfg = _cfg(
        emoji_subset_folder,
        cache,
        tmp_path / "tp",
        **{"train.epochs": 2, "loss.base.name": "text_proxy_anchor", "eval.xmodal": True},
    )
    result = train(cfg)
    state = torch.load(tmp_path / "tp" / "checkpoint.pt", weights_only=True)
    assert any(k.startswith("base.projection") for k in state["loss"])
    assert not any(k.endswith("proxies") for k in state["loss"])  # no free proxies
    assert result.extra["xmodal"]["xmodal/t2i_map@r"] > 0


def test_best_is_selected_on_validation_classes_only(emoji_subset_folder, cache, tmp_path):
    over = {"train.epochs": 4, "data.validation_fraction": 0.25}
    result = train(_cfg(emoji_subset_folder, cache, tmp_path / "val", **over))
    summary = json.loads((tmp_path / "val" / "metrics.json").read_text())
    assert summary["eval_split"] == "val" and "best_unavailable" not in summary
    assert result.best["epoch"] in (2, 4) and (tmp_path / "val" / "best.pt").is_file()
    from langdml.experiment import open_run

    assert open_run(tmp_path / "val", "best", device="cpu").epoch == result.best["epoch"]


def test_provenance_record_names_versions_git_and_text_model(tmp_path):
    from langdml import provenance

    rec = provenance.collect(dataset="emoji", fingerprints={"train": "abc"}, text_model="minilm")
    assert rec["versions"]["python"] and rec["versions"]["numpy"]
    assert set(provenance.PACKAGES.values()) <= set(rec["versions"])
    assert rec["text_model"]["spec"] == "minilm" and "identity" in rec["text_model"]
    if rec["git"] is not None:  # this checkout is a git repository
        assert len(rec["git"]["commit"]) == 40 and isinstance(rec["git"]["dirty"], bool)
    assert provenance.git_info(tmp_path) is None
    line = provenance.versions_line({"python": "3.11", "torch": "2.4", "faiss": None})
    assert line == "python 3.11, torch 2.4"
    hub = tmp_path / "hub" / "models--org--m" / "refs"
    hub.mkdir(parents=True)
    (hub / "main").write_text("deadbeef\n")

    os.environ["HF_HUB_CACHE"] = str(tmp_path / "hub")
    try:
        assert provenance.hub_revision("org/m") == "deadbeef"
        assert provenance.text_model_info("hf:org/m")["revision"] == "deadbeef"
    finally:
        del os.environ["HF_HUB_CACHE"]
