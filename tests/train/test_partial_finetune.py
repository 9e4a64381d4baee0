"""Partial fine-tuning (model.trainable_blocks N): config mapping, the trunk split, training the
suffix on cached prefix activations, exact resume after SIGKILL, the image tower of a run."""

from pathlib import Path

import pytest
import torch
from runkit import imagefolder_cfg

from langdml.config import load_config
from langdml.errors import ConfigError
from langdml.train import train

ROOT = Path(__file__).resolve().parents[2]


SETTINGS = {
    "model.image_size": 48,
    "model.embedding_dim": 32,
    "model.trainable_blocks": 1,
    "train.epochs": 4,
    "train.batch_size": 16,
    "train.m_per_class": 2,
    "train.iterations_per_epoch": 12,
    "train.progress": False,
    "eval.every": 2,
    "optimizer.lr": 0.001,
}


def _cfg(folder, cache, out, **over):
    return imagefolder_cfg(folder, cache, out, SETTINGS, **over)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("partial_cache")


@pytest.mark.parametrize(
    ("over", "blocks", "frozen"),
    [
        ({}, 0, True),
        ({"model.frozen_trunk": True}, 0, True),
        ({"model.frozen_trunk": False}, "all", False),
        ({"model.trainable_blocks": "2"}, 2, False),
        ({"model.trainable_blocks": "all"}, "all", False),
        ({"model.trainable_blocks": 0, "model.frozen_trunk": True}, 0, True),
    ],
)
def test_trainable_blocks_maps_frozen_trunk(over, blocks, frozen):
    cfg = load_config(None, over)
    assert (cfg.model.trainable_blocks, cfg.model.frozen_trunk) == (blocks, frozen)
    assert load_config(None, cfg.to_dict()).model == cfg.model  # a saved config reloads


@pytest.mark.parametrize(
    "over",
    [
        {"model.trainable_blocks": 1, "model.frozen_trunk": True},
        {"model.trainable_blocks": 0, "model.frozen_trunk": False},
        {"model.trainable_blocks": -1},
    ],
)
def test_conflicting_trunk_settings_are_one_line_errors(over):
    with pytest.raises(ConfigError) as err:
        load_config(None, over)
    assert "\n" not in str(err.value).strip()


def test_prefix_then_suffix_is_the_trunk():
    from langdml.models import create_backbone
    from langdml.models.trunk_split import split_trunk

    trunk, _ = create_backbone()
    trunk.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        full = trunk(x)
        for n in (1, 2, 7):
            prefix, suffix = split_trunk(trunk, n)
            assert torch.allclose(suffix(prefix(x)), full, atol=1e-5)
    with pytest.raises(Exception, match="trainable_blocks"):
        split_trunk(trunk, 8)


def test_partial_run_trains_suffix_on_cached_activations(emoji_subset_folder, cache, tmp_path):
    from langdml.experiment import open_run

    cfg = _cfg(emoji_subset_folder, cache, tmp_path / "run")
    result = train(cfg)
    assert 0 < result.metrics["recall@1"] <= 1
    # the prefix activations are cached once (48 px: stage 6 input is 192 x 2 x 2)
    cached = list((cache / "features").glob("*.safetensors"))
    assert len(cached) == 1
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["model"]
    assert any(k.startswith("backbone.0.") for k in state)  # the trained last stage
    assert not any("conv_stem" in k for k in state)  # the frozen prefix is not stored
    # the run's image tower (prefix + trained suffix + head) embeds images like the cache path
    from langdml.inference import load_run

    model = load_run(tmp_path / "run")
    run = open_run(tmp_path / "run")
    ds = run.data.eval
    from langdml.experiment import embed

    via_cache = embed(run.model, run.config, run.data, rows=list(range(6)))
    via_images = model.embed([ds.image(i) for i in range(6)])
    assert torch.allclose(via_cache, via_images, atol=1e-4)


def test_partial_sigkill_mid_epoch_then_resume_gives_identical_metrics(
    emoji_subset_folder, cache, tmp_path, train_killed_mid_run
):
    over = {"train.epochs": 6, "train.iterations_per_epoch": 20}
    reference = train(_cfg(emoji_subset_folder, cache, tmp_path / "ref", **over))

    cfg = _cfg(emoji_subset_folder, cache, tmp_path / "killed", **over)
    train_killed_mid_run(cfg, 6)
    resumed = train(cfg)
    assert resumed.resumed
    assert resumed.metrics == reference.metrics  # exact, not approximate


def test_channels_last_trains_the_same_run_in_the_other_layout(
    emoji_subset_folder, cache, tmp_path, monkeypatch
):
    """train.channels_last: the trained trunk's convolution weights and the batches are
    channels-last, and it is the same computation: the first epoch's mean loss equals the
    default layout's within float noise (same initial weights, same batches)."""
    import json

    import langdml.train.loop as loop

    seen = []
    real_step = loop._step

    def spy(cfg, state, model, x, y, device, epoch):
        conv = next(m for m in state.model.modules() if isinstance(m, torch.nn.Conv2d))
        seen.append(conv.weight.is_contiguous(memory_format=torch.channels_last))
        # what the first trained convolution receives
        hook = conv.register_forward_pre_hook(
            lambda _, a: seen.append(a[0].is_contiguous(memory_format=torch.channels_last))
        )
        try:
            return real_step(cfg, state, model, x, y, device, epoch)
        finally:
            hook.remove()

    one = {"train.epochs": 1, "eval.every": 1}
    train(_cfg(emoji_subset_folder, cache, tmp_path / "nchw", **one))
    monkeypatch.setattr(loop, "_step", spy)
    layout = {"train.channels_last": True}
    train(_cfg(emoji_subset_folder, cache, tmp_path / "cl", **one, **layout))
    assert seen and all(seen)
    losses = [
        json.loads((tmp_path / run / "log.jsonl").read_text().splitlines()[0])["loss"]
        for run in ("nchw", "cl")
    ]
    assert losses[1] == pytest.approx(losses[0], rel=1e-3)
