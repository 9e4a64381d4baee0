"""The cross-modal methods end to end, through the same functions and CLI users call, on a tiny
generated image folder: CLIP with a tiny randomly initialised open_clip model (checked against
open_clip used directly), learned alignment and language as proxies on frozen features and on a
trained run, the zero-shot baseline's classifier shortcut, and one-line errors for bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from clipkit import CLIP_CFG, save_tiny_clip
from PIL import Image

from langdml.cli import main
from langdml.errors import LangDMLError
from langdml.xmodal import (
    METRIC_KEYS,
    crossmodal_metrics,
    xmodal_aligned,
    xmodal_clip,
    xmodal_for_run,
    xmodal_text_proxies,
)

COLORS = {
    "red": (220, 30, 30),
    "green": (30, 200, 40),
    "blue": (30, 40, 220),
    "yellow": (230, 220, 20),
    "purple": (140, 30, 160),
    "orange": (250, 140, 10),
    "black": (10, 10, 10),
    "white": (245, 245, 245),
}
SHAPES = ("square", "circle")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """8 classes "NN.<color>_<shape>" with 4 slightly different 32x32 images each."""
    root = tmp_path_factory.mktemp("xmodal_folder")
    rng = np.random.default_rng(0)
    for c, (color, rgb) in enumerate(COLORS.items()):
        shape = SHAPES[c % 2]
        d = root / f"{c:02d}.{color}_{shape}"
        d.mkdir()
        for i in range(4):
            arr = np.full((32, 32, 3), 255, np.uint8)
            lo, hi = 6 + i, 26 - i
            if shape == "square":
                arr[lo:hi, lo:hi] = rgb
            else:
                yy, xx = np.mgrid[:32, :32]
                arr[(yy - 16) ** 2 + (xx - 16) ** 2 < (10 - i) ** 2] = rgb
            noise = rng.integers(-8, 9, arr.shape)
            Image.fromarray(np.clip(arr + noise, 0, 255).astype(np.uint8)).save(d / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("xmodal_cache")


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A random tiny open_clip CLIP saved as (model-config JSON, checkpoint) and the model."""
    root = tmp_path_factory.mktemp("xmodal_tiny_clip")
    cfg_path, ckpt, model = save_tiny_clip(root, "langdml-xmodal-tiny-clip.json", seed=7)
    return f"clip:{cfg_path}@{ckpt}", model.eval()


def _spec(folder) -> str:
    return f"imagefolder:{folder}"


def _one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg and msg
    return msg


def _check_result(result: dict, num_classes: int = 4, num_images: int = 16) -> None:
    assert result["num_test_classes"] == num_classes
    assert result["num_test_images"] == num_images
    for key in METRIC_KEYS:
        assert 0.0 <= result[key] <= 1.0, key
        assert f"chance_{key}" in result
    json.dumps(result)  # JSON-able


# ------------------------------------------------------------------ CLIP


def test_clip_method_end_to_end_equals_open_clip_used_directly(folder, tiny_clip, cache):
    import open_clip

    from langdml.data import class_disjoint_split, load_dataset
    from langdml.xmodal.methods import clip_test_embeddings

    spec, model = tiny_clip
    result = xmodal_clip(_spec(folder), spec, cache_dir=cache)
    _check_result(result)

    # Oracle: the same random model, preprocessing and tokenizer straight from open_clip.
    test = class_disjoint_split(load_dataset(_spec(folder)), 0.5).test
    preprocess = open_clip.image_transform(CLIP_CFG["vision_cfg"]["image_size"], is_train=False)
    tokenizer = open_clip.SimpleTokenizer(context_length=CLIP_CFG["text_cfg"]["context_length"])
    with torch.no_grad():
        images = torch.stack([preprocess(test.image(i)) for i in range(len(test))])
        img = F.normalize(model.encode_image(images), dim=-1)
        names = [n.split(".", 1)[1].replace("_", " ") for n in test.class_names]
        txt = F.normalize(
            model.encode_text(tokenizer([f"a photo of a {n}" for n in names])), dim=-1
        )
    want = crossmodal_metrics(img, test.labels, txt)
    for key in want:
        assert result[key] == pytest.approx(want[key], abs=1e-9), key
    _, got_img, got_texts = clip_test_embeddings(_spec(folder), spec, cache_dir=cache)
    torch.testing.assert_close(got_img, img, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_texts.embeddings, txt, atol=1e-5, rtol=1e-5)


def test_clip_cli_prints_json(folder, tiny_clip, cache, capsys):
    spec, _ = tiny_clip
    argv = [
        "xmodal",
        "--method",
        "clip",
        "--dataset",
        _spec(folder),
        "--text-model",
        spec,
        "--cache-dir",
        str(cache),
        "--prompt",
        "{}",
    ]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["method"] == "clip" and out["text_model"] == spec
    _check_result(out)


@pytest.mark.parametrize(
    "spec,needle",
    [
        ("clip:NoSuchArch/openai", "unknown open_clip architecture 'NoSuchArch'"),
        ("clip:ViT-B-32@/no/such/weights.pt", "does not exist"),
        ("minilm", "expected a clip:"),
    ],
)
def test_unloadable_clip_spec_is_one_line(folder, spec, needle, capsys):
    argv = ["xmodal", "--method", "clip", "--dataset", _spec(folder), "--text-model", spec]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and needle in err


# ------------------------------------------------------------------ trained methods on features


def test_aligned_and_text_proxies_on_frozen_features(folder, tiny_clip, cache):
    spec, _ = tiny_clip  # its text tower is a valid TEXTMODEL: names get 12-d embeddings
    common = dict(dataset=_spec(folder), text_model=spec, image_size=32, cache_dir=cache, epochs=3)
    aligned = xmodal_aligned(**common, embedding_dim=8)
    _check_result(aligned)
    assert aligned["method"] == "aligned" and aligned["num_train_classes"] == 4
    proxies = xmodal_text_proxies(**common, embedding_dim=8, loss="text_proxy_nca")
    _check_result(proxies)
    assert proxies["loss"] == "text_proxy_nca"
    # deterministic for a seed
    assert xmodal_aligned(**common, embedding_dim=8)["i2t_map"] == aligned["i2t_map"]


def test_text_embeddings_file_missing_class_names_is_one_line(folder, tiny_clip, cache, capsys):
    from langdml.text import precompute_text_embeddings

    spec, _ = tiny_clip
    partial = precompute_text_embeddings(
        ["00.red_square", "05.orange_circle"], model=spec, cache_dir=cache / "partial"
    )
    with pytest.raises(LangDMLError) as e:
        xmodal_aligned(
            _spec(folder), text_embeddings=partial.path, image_size=32, cache_dir=cache, epochs=1
        )
    msg = _one_line(e)
    assert "missing from text-embedding file" in msg and "'01.green_circle'" in msg
    assert "'00.red_square'" not in msg
    argv = [
        "xmodal",
        "--method",
        "zeroshot",
        "--dataset",
        _spec(folder),
        "--image-size",
        "32",
        "--cache-dir",
        str(cache),
        "--text-embeddings",
        str(partial.path),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'04.purple_square'" in err


def test_zeroshot_text_embeddings_of_the_wrong_dimension_is_one_line(
    folder, tiny_clip, cache, tmp_path
):
    from open_clip.model import CLIP

    from langdml.text import precompute_text_embeddings
    from langdml.xmodal import xmodal_zeroshot

    spec, _ = tiny_clip
    cfg = dict(CLIP_CFG, embed_dim=10)
    cfg_path = tmp_path / "langdml-xmodal-tiny-clip-10.json"
    cfg_path.write_text(json.dumps(cfg))
    torch.save(CLIP(**cfg).state_dict(), tmp_path / "w.pt")
    names = sorted(p.name for p in folder.iterdir())
    other = precompute_text_embeddings(
        names, model=f"clip:{cfg_path}@{tmp_path / 'w.pt'}", cache_dir=tmp_path / "text"
    )  # 10-d
    with pytest.raises(LangDMLError) as e:
        # the ImageNet names are embedded with the 12-d model, the class names came from another
        xmodal_zeroshot(
            _spec(folder),
            text_model=spec,
            image_size=32,
            cache_dir=cache,
            text_embeddings=other.path,
        )
    assert "10-d" in _one_line(e) and "12-d" in _one_line(e)


def test_zeroshot_and_text_proxies_cli(folder, tiny_clip, cache, tmp_path, capsys):
    spec, _ = tiny_clip
    base = [
        "xmodal",
        "--dataset",
        _spec(folder),
        "--text-model",
        spec,
        "--image-size",
        "32",
        "--cache-dir",
        str(cache),
    ]
    assert main([*base, "--method", "zeroshot"]) == 0
    zeroshot = json.loads(capsys.readouterr().out)
    _check_result(zeroshot)
    out = tmp_path / "tp.json"
    argv = [
        *base,
        "--method",
        "text_proxies",
        "--epochs",
        "2",
        "--embedding-dim",
        "8",
        "--output",
        str(out),
    ]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert json.loads(out.read_text()) == printed and printed["loss"] == "text_proxy_anchor"
    _check_result(printed)


# ------------------------------------------------------------------ zero-shot baseline


def test_imagenet_logits_from_cached_features_equal_the_full_classifier():
    from langdml.models import create_backbone, load_imagenet_classifier
    from langdml.xmodal.zeroshot import imagenet_logits, probabilities_to_text

    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    trunk, _ = create_backbone(weights="packaged")
    with torch.no_grad():
        full = load_imagenet_classifier()(x)
        features = trunk.eval()(x)
    torch.testing.assert_close(imagenet_logits(features), full, atol=1e-4, rtol=1e-4)
    names = F.normalize(torch.randn(5, 3), dim=1)
    onehot = torch.eye(5)[[3, 1]]
    torch.testing.assert_close(probabilities_to_text(onehot, names), names[[3, 1]])
    with pytest.raises(LangDMLError, match="not pooled EfficientNet-Lite0 features"):
        imagenet_logits(torch.randn(2, 64))


# ------------------------------------------------------------------ a trained run


@pytest.fixture(scope="module")
def run_dir(folder, cache, tmp_path_factory):
    from langdml.config import load_config
    from langdml.train import train

    out = tmp_path_factory.mktemp("xmodal_run") / "run"
    cfg = load_config(
        None,
        {
            "data.dataset": _spec(folder),
            "data.cache_dir": str(cache),
            "model.image_size": 32,
            "model.embedding_dim": 16,
            "train.epochs": 2,
            "train.batch_size": 8,
            "train.m_per_class": 2,
            "train.progress": False,
            "eval.clustering": False,
            "output_dir": str(out),
        },
    )
    train(cfg)
    return out


def test_xmodal_for_run_fits_a_text_head_to_the_run_embeddings(run_dir, tiny_clip, cache):
    spec, _ = tiny_clip
    result = xmodal_for_run(run_dir, text_model=spec, epochs=2, cache_dir=cache)
    _check_result(result)
    assert result["method"] == "aligned" and result["run_dir"] == str(run_dir)
    assert result["image_head"] == "none"
    proxies = xmodal_text_proxies(None, run_dir, spec, epochs=2, cache_dir=cache)
    _check_result(proxies)
    assert proxies["image_head"] == "none" and proxies["loss"] == "text_proxy_anchor"


def test_cli_run_with_other_dataset_is_one_line(run_dir, capsys):
    argv = ["xmodal", "--method", "aligned", "--run", str(run_dir), "--dataset", "emoji"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "differs from run" in err


def test_run_text_projection_is_read_from_the_checkpoint_layout():
    """A run trained with base text_proxy_anchor stores CombinedLoss(base=TextProxyAnchorLoss)."""
    from langdml.config import load_config
    from langdml.losses import CombinedLoss
    from langdml.xmodal import TextProxyAnchorLoss
    from langdml.xmodal.inputs import RunEmbeddings, run_projection

    text = F.normalize(torch.randn(5, 12), dim=1)
    loss = CombinedLoss(TextProxyAnchorLoss(text, 16))
    cfg = load_config(None, {"loss.base.name": "text_proxy_anchor", "model.embedding_dim": 16})
    run = RunEmbeddings(cfg, None, None, torch.zeros(0), torch.zeros(0), loss.state_dict(), 1)
    projection = run_projection(run)
    new = F.normalize(torch.randn(3, 12), dim=1)
    with torch.no_grad():
        torch.testing.assert_close(projection(new), loss.base.project(new))


def test_tuning_run_is_evaluated_on_its_validation_classes_unless_test_is_asked(
    folder, cache, tiny_clip, tmp_path
):
    """A run tuned on a validation split must not see test classes through xmodal by default."""
    from langdml.config import load_config
    from langdml.train import train

    spec, _ = tiny_clip
    overrides = {
        "data.dataset": _spec(folder),
        "data.cache_dir": str(cache),
        "data.validation_fraction": 0.5,
        "model.image_size": 32,
        "model.embedding_dim": 16,
        "train.epochs": 1,
        "train.batch_size": 4,
        "train.m_per_class": 2,
        "train.progress": False,
        "eval.clustering": False,
        "output_dir": str(tmp_path / "tune"),
    }
    train(load_config(None, overrides))
    val = xmodal_for_run(tmp_path / "tune", text_model=spec, epochs=1)
    assert val["split"] == "val" and val["num_test_classes"] == 2 and val["num_train_classes"] == 2
    test = xmodal_for_run(tmp_path / "tune", text_model=spec, epochs=1, split="test")
    assert test["split"] == "test" and test["num_test_classes"] == 4
    assert test["num_train_classes"] == 4
    with pytest.raises(LangDMLError, match="needs a run"):
        xmodal_aligned(_spec(folder), split="val", image_size=32, cache_dir=cache)
