"""Modern trunks: tiny random timm ViT and ConvNeXt and a tiny open_clip image tower, saved as
weight files and loaded the way a user loads real weights; partial fine-tuning of their last
block or stage, export, the pretrained preprocessing, and the CLIP text tower as text model."""

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from runkit import imagefolder_cfg

from langdml.errors import ModelError

VIT = "vit_tiny_patch16_224"
VIT_KWARGS = {"depth": 2, "embed_dim": 24, "num_heads": 2, "img_size": 32}
CONVNEXT = "convnext_atto"
CONVNEXT_KWARGS = {"depths": [1, 1, 1, 1], "dims": [8, 16, 24, 32]}
# two residual blocks, so one trains and one stays in the cached prefix
TOWER_CFG = {
    "embed_dim": 12,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
}

SETTINGS = {
    "model.embedding_dim": 16,
    "model.trainable_blocks": 1,
    "train.epochs": 2,
    "train.batch_size": 16,
    "train.m_per_class": 2,
    "train.iterations_per_epoch": 3,
    "train.progress": False,
    "eval.every": 2,
    "optimizer.lr": 0.001,
}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Random tiny weight files: a timm ViT (safetensors), a timm ConvNeXt (.pth) and an
    open_clip CLIP (model-config JSON + checkpoint)."""
    import open_clip
    import timm
    from open_clip.model import CLIP
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("backbone_weights")
    torch.manual_seed(0)
    vit = timm.create_model(VIT, num_classes=0, **VIT_KWARGS)
    save_file(vit.state_dict(), root / "vit.safetensors")
    convnext = timm.create_model(CONVNEXT, num_classes=0, **CONVNEXT_KWARGS)
    torch.save(convnext.state_dict(), root / "convnext.pth")
    cfg_path = root / "langdml_test_clip_tower.json"
    cfg_path.write_text(json.dumps(TOWER_CFG))
    open_clip.add_model_config(cfg_path)  # the oracles below build it by name, in any test order
    clip = CLIP(**TOWER_CFG)
    torch.save(clip.state_dict(), root / "clip.pt")
    return {
        "vit": root / "vit.safetensors",
        "convnext": root / "convnext.pth",
        "clip_cfg": cfg_path,
        "clip": root / "clip.pt",
        "clip_model": clip.eval(),
        "vit_model": vit.eval(),
    }


def _clip_backbone(weights) -> str:
    return f"open_clip:{weights['clip_cfg']}@{weights['clip']}"


def _families(weights) -> dict[str, dict]:
    return {
        "vit": {
            "model.backbone": VIT,
            "model.weights": str(weights["vit"]),
            "model.backbone_kwargs": VIT_KWARGS,
            "model.preprocessing": "pretrained",
        },
        "convnext": {
            "model.backbone": CONVNEXT,
            "model.weights": str(weights["convnext"]),
            "model.backbone_kwargs": CONVNEXT_KWARGS,
            "model.image_size": 32,
        },
        "open_clip": {
            "model.backbone": _clip_backbone(weights),
            "model.preprocessing": "pretrained",
        },
    }


def test_loaded_weights_are_the_saved_ones(weights):
    from langdml.models import create_backbone

    x = torch.randn(2, 3, 32, 32)
    vit, info = create_backbone(VIT, str(weights["vit"]), kwargs=VIT_KWARGS, image_size=32)
    assert info.feature_dim == 24
    with torch.no_grad():
        torch.testing.assert_close(vit.eval()(x), weights["vit_model"](x))
    tower, info = create_backbone(_clip_backbone(weights))
    assert info.feature_dim == 12 and info.mean == pytest.approx(
        (0.48145466, 0.4578275, 0.40821073)
    )
    with torch.no_grad():
        torch.testing.assert_close(tower.eval()(x), weights["clip_model"].encode_image(x))


@pytest.mark.parametrize("family", ["vit", "convnext", "open_clip"])
def test_prefix_then_suffix_is_the_trunk(weights, family):
    from langdml.models import create_backbone
    from langdml.models.trunk_split import split_trunk

    over = _families(weights)[family]
    kwargs = over.get("model.backbone_kwargs")
    trunk, _ = create_backbone(
        over["model.backbone"],
        over.get("model.weights", "packaged"),
        kwargs=kwargs,
        image_size=32,
    )
    trunk.eval()
    units = {"vit": 2, "convnext": 4, "open_clip": 2}[family]
    x = torch.randn(2, 3, 32, 32)
    before = copy.deepcopy(trunk.state_dict())
    with torch.no_grad():
        full = trunk(x)
        for n in range(1, units + 1):
            prefix, suffix = split_trunk(trunk, n)
            torch.testing.assert_close(suffix(prefix(x)), full, atol=1e-5, rtol=1e-4)
            shared = {id(p) for p in prefix.parameters()} & {id(p) for p in suffix.parameters()}
            assert not shared  # each part holds only its own weights
    assert all(torch.equal(v, trunk.state_dict()[k]) for k, v in before.items())  # untouched
    with pytest.raises(ModelError, match="trainable_blocks"):
        split_trunk(trunk, units + 1)


@pytest.mark.parametrize(
    ("name", "kwargs", "size"),
    [
        ("deit_tiny_distilled_patch16_224", {"depth": 2, "embed_dim": 24, "num_heads": 2}, 32),
        ("vit_small_patch14_reg4_dinov2", {"depth": 2, "embed_dim": 24, "num_heads": 2}, 28),
        ("convnextv2_atto", CONVNEXT_KWARGS, 32),
    ],
)
def test_timm_variants_split_too(name, kwargs, size):
    """DeiT's distillation token, DINOv2's register tokens and ConvNeXt-V2's stages."""
    from langdml.models import create_backbone
    from langdml.models.trunk_split import split_trunk

    torch.manual_seed(0)
    trunk, _ = create_backbone(name, "none", kwargs=kwargs, image_size=size)
    with torch.no_grad():  # LayerScale's 1e-5 start would hide a wrong cut
        for key, p in trunk.named_parameters():
            if key.endswith(".gamma"):
                p.fill_(1.0)
    trunk.eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        full = trunk(x)
        for n in (1, 2):
            prefix, suffix = split_trunk(trunk, n)
            torch.testing.assert_close(suffix(prefix(x)), full, atol=1e-5, rtol=1e-4)


def test_vit_weights_from_another_input_size_are_resampled(weights):
    from timm.layers import resample_abs_pos_embed

    from langdml.models import create_backbone

    vit, _ = create_backbone(VIT, str(weights["vit"]), kwargs=VIT_KWARGS | {"img_size": 48})
    saved = weights["vit_model"].pos_embed.detach()
    expected = resample_abs_pos_embed(saved, new_size=(3, 3), old_size=(2, 2), num_prefix_tokens=1)
    torch.testing.assert_close(vit.pos_embed.detach(), expected)
    assert vit.eval()(torch.randn(1, 3, 48, 48)).shape == (1, 24)
    with pytest.raises(ModelError, match="img_size 48 differs"):
        create_backbone(
            VIT, str(weights["vit"]), kwargs=VIT_KWARGS | {"img_size": 48}, image_size=32
        )


def test_pretrained_preprocessing_is_timms_and_open_clips(weights):
    """The eval transform equals timm's own (create_transform on the pretrained cfg) and
    open_clip's own preprocess, on a non-square image."""
    import timm
    from open_clip import create_model_and_transforms
    from timm.data import create_transform, resolve_data_config

    from langdml.config import load_config
    from langdml.experiment import run_preprocessing, run_transform

    image = Image.new("RGB", (57, 41))
    image.putdata([((7 * i) % 256, (3 * i) % 256, (11 * i) % 256) for i in range(57 * 41)])
    cfg = load_config(None, _families(weights)["vit"])
    assert (cfg.model.image_size, cfg.model.crop_pct) == ("pretrained", "pretrained")
    pre = run_preprocessing(cfg)
    assert (pre.image_size, pre.crop_pct, pre.interpolation) == (32, 0.9, "bicubic")
    data = resolve_data_config({}, pretrained_cfg=timm.models.get_pretrained_cfg(VIT).to_dict())
    data["input_size"] = (3, 32, 32)
    oracle = create_transform(**data, is_training=False)
    torch.testing.assert_close(run_transform(cfg, train=False)(image), oracle(image))
    assert load_config(None, cfg.to_dict()).model == cfg.model  # the saved config reloads so
    _assert_trains_with(run_transform(cfg, train=True), 32, data["mean"], data["std"])

    cfg = load_config(None, _families(weights)["open_clip"])
    _, _, preprocess = create_model_and_transforms(
        str(weights["clip_cfg"].stem), pretrained=str(weights["clip"])
    )
    torch.testing.assert_close(run_transform(cfg, train=False)(image), preprocess(image))
    clip_norm = next(t for t in preprocess.transforms if type(t).__name__ == "Normalize")
    _assert_trains_with(run_transform(cfg, train=True), 32, clip_norm.mean, clip_norm.std)
    # an explicit value wins over the pretrained one
    cfg = load_config(None, {**_families(weights)["vit"], "model.crop_pct": None})
    assert run_preprocessing(cfg).crop_pct is None and run_preprocessing(cfg).image_size == 32


def _assert_trains_with(transform, size, mean, std) -> None:
    """The training augmentation crops to the pretrained size, resamples bicubic (both towers'
    pretrained interpolation) and normalises with the pretrained mean/std."""
    from torchvision.transforms import InterpolationMode

    steps = {type(t).__name__: t for t in transform.transforms}
    crop = steps["RandomResizedCrop"]
    assert crop.size == (size, size) and crop.interpolation == InterpolationMode.BICUBIC
    assert tuple(steps["Normalize"].mean) == pytest.approx(tuple(mean))
    assert tuple(steps["Normalize"].std) == pytest.approx(tuple(std))


def test_bad_open_clip_specs_are_one_line(weights):
    from langdml.models import create_backbone

    with pytest.raises(ModelError, match="names no weights"):
        create_backbone("open_clip:ViT-B-32")
    with pytest.raises(ModelError, match="leave model.weights unset"):
        create_backbone(_clip_backbone(weights), str(weights["clip"]))
    with pytest.raises(ModelError, match="leave model.weights unset"):
        create_backbone(_clip_backbone(weights), "hub")  # a checkpoint file is not the hub
    with pytest.raises(ModelError, match="takes 32 px input, not 48"):
        create_backbone(_clip_backbone(weights), image_size=48)
    with pytest.raises(ModelError, match="does not exist"):
        create_backbone(f"open_clip:{weights['clip_cfg']}@/no/such/clip.pt")


def test_a_pretrained_tag_takes_weights_hub_as_its_own():
    from langdml.models.clip_tower import clip_spec

    assert clip_spec("open_clip:ViT-B-32/openai", "hub") == clip_spec("open_clip:ViT-B-32/openai")
    assert clip_spec("open_clip:ViT-B-32/openai").raw == "clip:ViT-B-32/openai"


@pytest.fixture(scope="module")
def trained(weights, emoji_subset_folder, tmp_path_factory):
    from langdml.train import train

    root = tmp_path_factory.mktemp("backbone_runs")
    runs = {}
    for family, over in _families(weights).items():
        cfg = imagefolder_cfg(emoji_subset_folder, root / "cache", root / family, SETTINGS, **over)
        runs[family] = train(cfg)
    return root, runs


@pytest.mark.parametrize("family", ["vit", "convnext", "open_clip"])
def test_partial_run_trains_the_last_unit_and_exports(trained, family, tmp_path):
    from langdml.experiment import embed, open_run
    from langdml.inference import load_run
    from langdml.inference.export import card_path, export_run, run_exported
    from langdml.models.transforms import transform_batch

    root, runs = trained
    assert 0 < runs[family].metrics["recall@1"] <= 1
    state = torch.load(root / family / "checkpoint.pt", weights_only=True)["model"]
    frozen = {"vit": "patch_embed", "convnext": "stem", "open_clip": "conv1"}[family]
    assert not any(frozen in k for k in state)  # the frozen prefix is not stored
    opened = open_run(root / family)
    loaded = load_run(root / family)
    images = [opened.data.eval.image(i) for i in range(4)]
    via_cache = embed(opened.model, opened.config, opened.data, rows=list(range(4)))
    torch.testing.assert_close(loaded.embed(images), via_cache, atol=1e-4, rtol=1e-3)
    out = export_run(loaded, "torchscript", tmp_path / "tower.pt")
    x = transform_batch(loaded.transform(), images)
    torch.testing.assert_close(run_exported(out, x), via_cache, atol=1e-4, rtol=1e-3)
    card = json.loads(card_path(out).read_text())
    assert card["preprocessing"]["image_size"] == 32
    assert card["preprocessing"]["mean"] == pytest.approx(list(loaded_mean(loaded)))


def loaded_mean(loaded):
    from langdml.experiment import run_preprocessing

    return run_preprocessing(loaded.config).mean


@pytest.mark.parametrize("family", ["vit", "convnext", "open_clip"])
def test_partial_runs_export_to_onnx(trained, family, tmp_path):
    pytest.importorskip("onnx")
    from langdml.inference import load_run
    from langdml.inference.export import export_run, run_exported
    from langdml.models.transforms import transform_batch

    root, _ = trained
    loaded = load_run(root / family)
    images = [loaded.data.eval.image(i) for i in range(3)]
    out = export_run(loaded, "onnx", tmp_path / "tower.onnx")
    x = transform_batch(loaded.transform(), images)
    torch.testing.assert_close(run_exported(out, x), loaded.embed(images), atol=1e-4, rtol=1e-3)


def test_the_towers_own_text_side_is_the_text_model_loaded_once(
    weights, emoji_subset_folder, tmp_path, monkeypatch
):
    """text.text_model with the backbone's spec uses the same CLIP's text tower; one load."""
    import open_clip

    from langdml.experiment import class_text_embeddings, prepare_data
    from langdml.text import clip_loader
    from langdml.text.prompts import clean_names
    from langdml.train import train

    loads = []
    real = clip_loader._load
    monkeypatch.setattr(clip_loader, "_loaded", {})
    monkeypatch.setattr(clip_loader, "_load", lambda spec: loads.append(spec.raw) or real(spec))
    spec = f"{weights['clip_cfg']}@{weights['clip']}"
    over = {
        **_families(weights)["open_clip"],
        "text.text_model": f"open_clip:{spec}",
        "text.prompts": ["{}"],
        "loss.regularizers": ["language"],
    }
    cfg = imagefolder_cfg(
        emoji_subset_folder, tmp_path / "cache", tmp_path / "run", SETTINGS, **over
    )
    result = train(cfg)
    assert 0 < result.metrics["recall@1"] <= 1
    assert len(loads) == 1
    data = prepare_data(cfg)
    text = class_text_embeddings(cfg, data.train)
    tokenizer = open_clip.get_tokenizer(weights["clip_cfg"].stem)
    names = clean_names(data.train.class_names, "default")  # the texts the prompt "{}" embeds
    with torch.no_grad():
        ref = F.normalize(weights["clip_model"].encode_text(tokenizer(names)), dim=-1)
    assert text.shape == (data.train.num_classes, 12)
    torch.testing.assert_close(text, ref, atol=1e-5, rtol=1e-4)


def test_open_clip_run_records_its_zero_shot_baseline(trained, weights):
    """baselines.clip_zeroshot: CLIP's zero-shot classifier over the eval classes and the raw
    tower's Recall@1, against open_clip's own towers and a loop over the images."""
    import open_clip

    from langdml.experiment import open_run
    from langdml.text.prompts import clean_names

    root, _ = trained
    baseline = json.loads((root / "open_clip" / "metrics.json").read_text())["baselines"]
    zeroshot = baseline["clip_zeroshot"]
    data = open_run(root / "open_clip").data.eval
    clip = weights["clip_model"]
    _, _, preprocess = open_clip.create_model_and_transforms(
        str(weights["clip_cfg"].stem), pretrained=str(weights["clip"])
    )
    tokenizer = open_clip.get_tokenizer(weights["clip_cfg"].stem)
    names = [f"a photo of a {n}" for n in clean_names(data.class_names, "default")]
    with torch.no_grad():
        x = torch.stack([preprocess(data.image(i)) for i in range(len(data))])
        images = F.normalize(clip.encode_image(x), dim=-1)
        texts = F.normalize(clip.encode_text(tokenizer(names)), dim=-1)
    labels = torch.as_tensor(data.labels)
    accuracy = ((images @ texts.T).argmax(1) == labels).float().mean().item()
    assert zeroshot["zeroshot_accuracy"] == pytest.approx(accuracy, abs=1e-6)
    hits = []
    for i in range(len(data)):  # leave-one-out nearest neighbour
        sims = images @ images[i]
        sims[i] = -2
        hits.append(bool(labels[int(sims.argmax())] == labels[i]))
    assert zeroshot["recall@1"] == pytest.approx(sum(hits) / len(hits), abs=1e-6)
    assert (
        "clip_zeroshot" not in json.loads((root / "vit" / "metrics.json").read_text())["baselines"]
    )


@pytest.mark.slow
def test_xmodal_clip_takes_the_backbone_spelling(weights, emoji_subset_folder, tmp_path):
    from langdml.xmodal import xmodal_clip

    spec = f"{weights['clip_cfg']}@{weights['clip']}"
    dataset = f"imagefolder:{emoji_subset_folder}"
    a = xmodal_clip(dataset, f"open_clip:{spec}", cache_dir=tmp_path)
    b = xmodal_clip(dataset, f"clip:{spec}", cache_dir=tmp_path)
    keys = ("i2t_r@1", "i2t_map", "t2i_map")
    assert [a[k] for k in keys] == [b[k] for k in keys] and a["num_test_classes"] == 12


def test_frozen_open_clip_run_scores_the_same_zero_shot_from_its_cache(
    trained, weights, emoji_subset_folder
):
    from langdml.train import train

    root, _ = trained
    over = {**_families(weights)["open_clip"], "model.trainable_blocks": 0, "train.epochs": 1}
    cfg = imagefolder_cfg(
        emoji_subset_folder, root / "cache", root / "frozen_clip", SETTINGS, **over
    )
    baselines = train(cfg).extra["baselines"]
    partial = json.loads((root / "open_clip" / "metrics.json").read_text())["baselines"]
    for key, value in partial["clip_zeroshot"].items():
        assert baselines["clip_zeroshot"][key] == pytest.approx(value, abs=1e-6), key
    assert baselines["raw_features"]["recall@1"] == baselines["clip_zeroshot"]["recall@1"]


def test_the_agreement_of_a_modern_trunk_uses_the_runs_features(weights):
    """An ablation's language/image agreement reads the features training caches: the same
    FeatureSpec (backbone_kwargs and the pretrained resize included)."""
    from langdml.ablation.agreement import request_for
    from langdml.config import load_config
    from langdml.diagnose import AgreementRequest
    from langdml.experiment import feature_spec

    over = {**_families(weights)["vit"], "model.trainable_blocks": 0}
    cfg = load_config(None, {**over, "loss.regularizers": ["language"]})
    request = request_for(cfg)
    assert request.feature_spec() == feature_spec(cfg)
    stored = json.loads(json.dumps(request.as_dict()))  # as agreement.json keeps it
    assert AgreementRequest(**stored).key() == request.key()
    plain = request_for(load_config(None, {"loss.regularizers": ["language"]})).as_dict()
    assert "feature_extra" not in plain  # a default trunk keeps the key it was cached with
    assert dict(request.feature_extra)["floor_scale"] is True  # timm's pretrained crop rule
