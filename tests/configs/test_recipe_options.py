"""The config options the literature recipes need: torchvision weights, avg+max pooling, crop
scale and interpolation, the PLG classifier choice, frozen-trunk warm-up epochs (exact resume),
class-disjoint K-fold validation (ablations over seeds x folds), the ablation seed default and
the concatenated evaluation of several runs."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from runkit import imagefolder_cfg

from langdml.config import load_config
from langdml.errors import ConfigError, LangDMLError, ModelError

# ---------------------------------------------------------------------------------------------
# weights, pooling, transforms


def test_torchvision_weights_resolve_to_timm_tv_tag(monkeypatch):
    import timm

    from langdml.models.backbones import create_backbone, timm_pretrained_name

    assert timm_pretrained_name("resnet50", "torchvision") == "resnet50.tv_in1k"
    assert timm_pretrained_name("resnet50", "hub") == "resnet50"
    cfg = timm.models.get_pretrained_cfg("resnet50.tv_in1k")
    assert cfg.url.startswith("https://download.pytorch.org/models/resnet50-")  # torchvision's
    assert cfg.interpolation == "bilinear"
    # create_backbone hands timm the tagged name with pretrained=True (offline: capture the call)
    calls = []
    real = timm.create_model

    def fake(name, pretrained=False, **kw):
        calls.append((name, pretrained))
        return real("resnet18", pretrained=False, **kw)

    monkeypatch.setattr(timm, "create_model", fake)
    model, info = create_backbone("resnet50", "torchvision")
    assert calls == [("resnet50.tv_in1k", True)]
    assert info.weights == "torchvision"
    with pytest.raises(ModelError, match="torchvision"):
        timm_pretrained_name("tf_efficientnet_lite0", "torchvision")


def test_offline_torchvision_weights_fail_in_one_line(monkeypatch):
    import timm

    from langdml.models.backbones import create_backbone

    def no_network(*a, **k):
        raise OSError("no route to host")

    monkeypatch.setattr(timm, "create_model", no_network)
    with pytest.raises(ModelError) as err:
        create_backbone("resnet50", "torchvision")
    assert "\n" not in str(err.value) and "weights file" in str(err.value)


def test_avgmax_pooling_is_the_sum_of_global_average_and_max():
    from langdml.models.backbones import create_backbone

    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    for pooling in ("avg", "max", "avgmax"):
        torch.manual_seed(0)
        model, _ = create_backbone("resnet18", "none", pooling=pooling)
        model.eval()
        with torch.no_grad():
            fmap = model.forward_features(x)
            got = model(x)
        # loop reference over channels, from the definition
        ref = torch.zeros(2, fmap.shape[1])
        for b in range(2):
            for c in range(fmap.shape[1]):
                v = fmap[b, c].flatten()
                avg, mx = float(v.sum() / v.numel()), float(v.max())
                ref[b, c] = {"avg": avg, "max": mx, "avgmax": avg + mx}[pooling]
        assert torch.allclose(got, ref, atol=1e-5), pooling
    with pytest.raises(ModelError):
        create_backbone("resnet18", "none", pooling="gem")


def test_crop_scale_and_interpolation_reach_the_transforms():
    from torchvision import transforms as T

    from langdml.models import image_transform

    default = image_transform(32, train=True).transforms[0]
    assert default.scale == (0.35, 1.0)  # today's behaviour stays the default
    assert default.interpolation == T.InterpolationMode.BICUBIC
    lit = image_transform(32, train=True, crop_scale=(0.08, 1.0), interpolation="bilinear")
    assert lit.transforms[0].scale == (0.08, 1.0)
    assert lit.transforms[0].interpolation == T.InterpolationMode.BILINEAR
    ev = image_transform(224, crop_pct=224 / 256, interpolation="bilinear").view
    assert ev.interpolation == "bilinear" and ev.crop_pct == 224 / 256 and ev.image_size == 224
    assert ev.spatial(Image.new("RGB", (300, 400))).size == (224, 224)
    cfg = load_config(None, {"model.crop_scale": [0.08, 1], "model.interpolation": "bilinear"})
    assert cfg.model.crop_scale == (0.08, 1.0)
    for bad in ({"model.crop_scale": [0.5, 0.2]}, {"model.interpolation": "lanczos"}):
        with pytest.raises(ConfigError) as err:
            load_config(None, bad)
        assert "\n" not in str(err.value).strip()


def test_new_feature_settings_join_the_cache_key_only_when_not_default():
    from langdml.models import FeatureSpec

    class _DS:
        fingerprint = "fp"

        class images:
            items: list = []

    base = FeatureSpec()
    assert base.key(_DS) == FeatureSpec(pooling="avg", interpolation="bicubic").key(_DS)
    assert base.key(_DS) != FeatureSpec(pooling="avgmax").key(_DS)
    assert base.key(_DS) != FeatureSpec(interpolation="bilinear").key(_DS)
    views = FeatureSpec(augment_views=2)
    assert views.key(_DS) != FeatureSpec(augment_views=2, crop_scale=(0.08, 1.0)).key(_DS)


# ---------------------------------------------------------------------------------------------
# PLG classifier


def test_pseudo_label_classifier_spec_and_identity():
    from langdml.models.imagenet import parse_classifier_spec
    from langdml.text.precompute import classifier_identity

    assert parse_classifier_spec("packaged") == ("tf_efficientnet_lite0", "packaged")
    assert parse_classifier_spec("resnet50:torchvision") == ("resnet50", "torchvision")
    for bad in ("resnet50", "resnet50:none", ":hub"):
        with pytest.raises(ModelError):
            parse_classifier_spec(bad)
    packaged = classifier_identity(224)
    assert set(packaged) == {"name", "loader", "weights", "image_size", "label_names"}
    tv = classifier_identity(299, "resnet50:torchvision", 299 / 256)
    assert (tv["name"], tv["weights"], tv["image_size"]) == ("resnet50", "torchvision", 299)
    assert tv["crop_pct"] == pytest.approx(299 / 256)


def test_mean_logits_of_a_chosen_classifier_match_a_loop_reference(tmp_path):
    import timm

    from langdml.data.records import ImageDataset, ImageSource
    from langdml.models import image_transform
    from langdml.text.precompute import imagenet_mean_logits

    torch.manual_seed(0)
    net = timm.create_model("resnet18", pretrained=False)
    weights = tmp_path / "r18.pth"
    torch.save(net.state_dict(), weights)
    rng = np.random.default_rng(0)
    from PIL import Image

    images = [Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)) for _ in range(5)]
    labels = np.array([0, 1, 0, 1, 1])
    ds = ImageDataset(
        "toy", ImageSource(images, lambda im: im), labels, ["a", "b"], fingerprint="toy"
    )
    got = imagenet_mean_logits(ds, 36, classifier=f"resnet18:{weights}", crop_pct=36 / 32)
    net.eval()
    tf = image_transform(
        36,
        (0.485, 0.456, 0.406),
        (0.229, 0.224, 0.225),
        crop_pct=36 / 32,
        interpolation=net.pretrained_cfg["interpolation"],
    )
    with torch.no_grad():
        logits = [net(tf(im).unsqueeze(0))[0] for im in images]
    for c in (0, 1):
        ref = torch.stack([logits[i] for i in range(5) if labels[i] == c]).mean(0)
        assert torch.allclose(got[c], ref, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# frozen-trunk warm-up


FINETUNE_SETTINGS = {
    "model.image_size": 48,
    "model.embedding_dim": 32,
    "model.trainable_blocks": 1,
    "train.epochs": 3,
    "train.frozen_trunk_epochs": 2,
    "train.batch_size": 16,
    "train.m_per_class": 2,
    "train.iterations_per_epoch": 10,
    "train.progress": False,
    "eval.every": 1,
    "optimizer.lr": 0.001,
}


def _finetune_cfg(folder, cache, out, **over):
    return imagefolder_cfg(folder, cache, out, FINETUNE_SETTINGS, **over)


@pytest.fixture(scope="module")
def ft_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("warmup_cache")


def test_frozen_trunk_epochs_train_only_the_head_first(emoji_subset_folder, ft_cache, tmp_path):
    from langdml.train import distributed as dd
    from langdml.train.loop import run_epoch
    from langdml.train.trainer import _setup

    cfg = _finetune_cfg(emoji_subset_folder, ft_cache, tmp_path / "run")
    ctx, device = dd.init_distributed("cpu")
    state = _setup(cfg, ctx, device)
    assert state.trunk_params  # the trained stage's weights (BatchNorm is frozen)
    trunk0 = [p.detach().clone() for p in state.trunk_params]
    head0 = [p.detach().clone() for p in state.model.head.parameters()]
    for epoch in (0, 1):  # warm-up: AdamW's weight decay must not touch the trunk either
        run_epoch(cfg, state, state.model, epoch, ctx, device)
        assert all(torch.equal(a, b) for a, b in zip(trunk0, state.trunk_params))
    assert not all(torch.equal(a, b) for a, b in zip(head0, state.model.head.parameters()))
    run_epoch(cfg, state, state.model, 2, ctx, device)
    assert not all(torch.equal(a, b) for a, b in zip(trunk0, state.trunk_params))


def test_frozen_trunk_epochs_need_a_trained_trunk_and_fewer_epochs():
    for over in (
        {"train.frozen_trunk_epochs": 1},  # frozen trunk: nothing to warm up
        {"model.trainable_blocks": "all", "train.epochs": 2, "train.frozen_trunk_epochs": 2},
    ):
        with pytest.raises(ConfigError, match="frozen_trunk_epochs") as err:
            load_config(None, over)
        assert "\n" not in str(err.value).strip()


def test_warmup_run_killed_inside_the_warmup_resumes_exactly(
    emoji_subset_folder, ft_cache, tmp_path, train_killed_mid_run
):
    from langdml.train import train

    over = {"train.epochs": 4, "train.iterations_per_epoch": 16}
    reference = train(_finetune_cfg(emoji_subset_folder, ft_cache, tmp_path / "ref", **over))
    cfg = _finetune_cfg(emoji_subset_folder, ft_cache, tmp_path / "killed", **over)
    train_killed_mid_run(cfg, 4)  # killed after epoch 1's checkpoint: inside the warm-up
    resumed = train(cfg)
    assert resumed.resumed
    assert resumed.metrics == reference.metrics


# ---------------------------------------------------------------------------------------------
# K-fold class-disjoint validation, ablation seeds x folds, seed default


def _toy(num_classes=10, per_class=3):
    from langdml.data.records import ImageDataset, ImageSource

    labels = np.repeat(np.arange(num_classes), per_class)
    items = [f"img{i}" for i in range(len(labels))]
    names = [f"class {c}" for c in range(num_classes)]
    return ImageDataset("toy", ImageSource(items, str), labels, names, fingerprint="toy")


def test_class_folds_partition_the_train_classes():
    from langdml.data import class_fold_split

    ds = _toy(10)
    held = []
    for fold in range(4):
        split = class_fold_split(ds, 4, fold)
        val, train = set(split.test.class_names), set(split.train.class_names)
        assert not val & train and val | train == set(ds.class_names)
        held.append(val)
    assert [len(h) for h in held] == [3, 3, 2, 2]  # contiguous, sizes differ by <= 1
    assert set().union(*held) == set(ds.class_names)
    assert held[0] == {"class 0", "class 1", "class 2"}
    with pytest.raises(LangDMLError):
        class_fold_split(_toy(3), 4, 0)


def test_folds_config_validation():
    cfg = load_config(None, {"data.folds": 4, "data.fold": 3})
    assert (cfg.data.folds, cfg.data.fold) == (4, 3)
    for bad in (
        {"data.folds": 1},
        {"data.folds": 4, "data.fold": 4},
        {"data.fold": 1},
        {"data.folds": 4, "data.validation_fraction": 0.2},
    ):
        with pytest.raises(ConfigError) as err:
            load_config(None, bad)
        assert "\n" not in str(err.value).strip()


def test_fold_run_validates_on_its_fold(emoji_subset_folder, tmp_path):
    from langdml.experiment import prepare_data

    over = {"data.dataset": f"imagefolder:{emoji_subset_folder}", "data.cache_dir": str(tmp_path)}
    full = prepare_data(load_config(None, {**over, "model.trainable_blocks": "all"}))
    seen = []
    for fold in range(4):
        cfg = load_config(
            None, {**over, "model.trainable_blocks": "all", "data.folds": 4, "data.fold": fold}
        )
        data = prepare_data(cfg)
        assert data.eval_split == "val"
        assert set(data.eval.class_names) | set(data.train.class_names) == set(
            full.train.class_names
        )
        assert not set(data.eval.class_names) & set(full.eval.class_names)  # never test classes
        seen += data.eval.class_names
    assert sorted(seen) == sorted(full.train.class_names)


def _write_ablation(tmp_path, text: str) -> Path:
    path = tmp_path / "abl.yaml"
    path.write_text(text)
    return path


def test_ablation_without_seeds_runs_five_and_folds_multiply(tmp_path):
    from langdml.ablation.spec import load_ablation

    plain = load_ablation(
        _write_ablation(tmp_path, "base: {}\ngrid:\n  loss.regularizers: [none, language]\n")
    )
    assert plain.seeds == [0, 1, 2, 3, 4] and len(plain.runs) == 10
    assert all(r.fold is None for r in plain.runs)
    folded = load_ablation(
        _write_ablation(
            tmp_path,
            "base: {data: {folds: 3}}\nseeds: 2\ngrid:\n  loss.regularizers: [none, language]\n",
        )
    )
    assert len(folded.runs) == 2 * 2 * 3
    assert len({r.id for r in folded.runs}) == len(folded.runs)
    assert {(r.seed, r.fold) for r in folded.runs} == {(s, f) for s in (0, 1) for f in (0, 1, 2)}
    assert all(r.config.data.fold == r.fold for r in folded.runs)


def test_report_averages_and_pairs_over_seeds_and_folds(tmp_path):
    from langdml.ablation.report import markdown_table, summarise
    from langdml.ablation.spec import load_ablation

    ablation = load_ablation(
        _write_ablation(
            tmp_path,
            "base: {data: {folds: 2}}\nseeds: 2\ngrid:\n  loss.regularizers: [none, language]\n",
        )
    )
    rows, value = [], {}
    for run in ablation.runs:
        lang = run.cell.get("loss.regularizers") == "language"
        v = 0.5 + 0.01 * run.seed + 0.1 * run.fold + (0.02 if lang else 0.0)
        value[(lang, run.seed, run.fold)] = v
        rows.append(
            {
                "run_id": run.id,
                "cell_id": run.cell.id,
                "seed": run.seed,
                "fold": run.fold,
                "status": "ok",
                "recall@1": v,
                "map@r": v,
            }
        )
    cells = summarise(ablation, rows)
    lang = next(c for c in cells if c["regularizers"] == "language")
    ref = [value[(True, s, f)] for s in (0, 1) for f in (0, 1)]
    assert lang["recall@1"][0] == pytest.approx(np.mean(ref))
    assert lang["recall@1"][1] == pytest.approx(np.std(ref, ddof=1))
    delta, _, wins, n = lang["deltas"]["recall@1"]
    assert (n, wins) == (4, 4) and delta == pytest.approx(0.02)
    assert "seeds x folds" in markdown_table(cells)


# ---------------------------------------------------------------------------------------------
# concatenated evaluation (MLRC: 4 fold models x 128-d)


def test_concatenated_evaluation_matches_a_manual_concatenation(emoji_subset_folder, tmp_path):
    from langdml.eval.commands import evaluate_concatenated
    from langdml.experiment import embed, evaluate_embeddings, open_run
    from langdml.train import train

    runs = []
    for fold in (0, 1):
        cfg = load_config(
            None,
            {
                "data.dataset": f"imagefolder:{emoji_subset_folder}",
                "data.cache_dir": str(tmp_path / "cache"),
                "model.image_size": 48,
                "model.embedding_dim": 8,
                "data.folds": 2,
                "data.fold": fold,
                "train.epochs": 1,
                "train.batch_size": 8,
                "train.iterations_per_epoch": 3,
                "train.progress": False,
                "output_dir": str(tmp_path / f"fold{fold}"),
            },
        )
        train(cfg)
        runs.append(cfg.output_dir)
    got = evaluate_concatenated(runs, "best", split="test")
    assert got["dim"] == 16 and got["split"] == "test"
    opened = [open_run(r, "best", split="test") for r in runs]
    z = torch.cat([embed(o.model, o.config, o.data) for o in opened], dim=1)
    z = torch.nn.functional.normalize(z, dim=1)
    ref = evaluate_embeddings(opened[0].config, z, opened[0].data.eval.labels)
    assert got["recall@1"] == pytest.approx(ref["recall@1"])
    assert got["map@r"] == pytest.approx(ref["map@r"])
