"""S2SD as a trainer option (loss.s2sd.dims): auxiliary heads train, the target embedding is
distilled from them, evaluation and resume use the target embedding only."""

import json

import pytest
import torch
from runkit import imagefolder_cfg

from langdml.config import load_config
from langdml.errors import ConfigError
from langdml.experiment import open_run
from langdml.losses import S2SDLoss
from langdml.train import train

SETTINGS = {
    "model.image_size": 48,
    "model.embedding_dim": 16,
    "train.epochs": 3,
    "train.batch_size": 16,
    "train.m_per_class": 2,
    "train.iterations_per_epoch": 6,
    "train.progress": False,
    "eval.every": 3,
    "eval.clustering": False,
    "loss.s2sd.dims": [64, 96],
    "loss.s2sd.feature_delay": 8,
}


def _cfg(folder, cache, out, **over):
    return imagefolder_cfg(folder, cache, out, SETTINGS, **over)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("s2sd_cache")


def test_s2sd_trains_heads_and_distils_into_the_target(emoji_subset_folder, cache, tmp_path):
    cfg = _cfg(emoji_subset_folder, cache, tmp_path / "run")
    result = train(cfg)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    for key in ("loss/target", "loss/heads", "loss/distill", "loss/feature_distill"):
        assert key in log[-1], key  # feature distillation starts after 8 steps (epoch 2)
    assert "loss/feature_distill" not in log[0]
    assert 0 <= result.metrics["recall@1"] <= 1
    run = open_run(tmp_path / "run")
    heads = run.model.aux_heads
    assert [h.net[-1].out_features for h in heads] == [64, 96]
    x = torch.randn(4, heads[0].net[0].in_features)
    assert run.model(x).shape == (4, 16)  # evaluation sees the target embedding only
    z, aux, feats = run.model(x, with_aux=True)
    assert [a.shape[1] for a in aux] == [64, 96] and torch.equal(feats, x)
    # the training loop's one call: [embedding | heads | features], what S2SDLoss splits
    torch.testing.assert_close(run.model(x, concat_aux=True), torch.cat([z, *aux, feats], 1))
    # a finished run is returned as is; the heads' weights were trained (not the init)
    assert train(cfg).metrics == result.metrics


def test_s2sd_loss_wraps_the_regularized_loss(emoji_subset_folder, cache, tmp_path):
    from langdml.experiment import build_run_loss, prepare_data

    cfg = _cfg(emoji_subset_folder, cache, tmp_path / "r", **{"loss.regularizers": "direction"})
    data = prepare_data(cfg)
    loss = build_run_loss(cfg, data, None)
    assert isinstance(loss, S2SDLoss) and len(loss.auxiliary_losses) == 2
    assert type(loss.target_loss).__name__ == "CombinedLoss"
    assert type(loss.target_loss.base).__name__ == "DRMultiSimilarityLoss"
    assert [type(a).__name__ for a in loss.auxiliary_losses] == ["MultiSimilarityLoss"] * 2


def test_bad_s2sd_config_is_one_line():
    with pytest.raises(ConfigError, match="S2SD head size must be >= 2") as info:
        load_config(None, {"loss.s2sd.dims": [1]})
    assert "\n" not in str(info.value)
