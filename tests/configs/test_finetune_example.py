"""The shipped ViT fine-tuning example (dinov2_vits14_finetune, shown in the backbones guide) and
``train.device: auto``: the config validates as shipped, the guide shows it verbatim, and it
trains end to end and exports with a tiny random DINOv2-family ViT standing in for the hub
weights (on the CPU here; ``auto`` picks the GPU where there is one)."""

import json
import re
from pathlib import Path

import pytest
import torch

from langdml.errors import ConfigError, LangDMLError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = "dinov2_vits14_finetune"
GUIDE = ROOT / "docs" / "guides" / "backbones.md"
TINY = {"depth": 2, "embed_dim": 24, "num_heads": 2}


def _example_path() -> Path:
    from langdml.packaged_configs import resolve_config

    return resolve_config(EXAMPLE)


def test_the_example_validates_and_the_guide_shows_it_verbatim():
    import yaml

    from langdml.config import load_config
    from langdml.experiment import run_preprocessing

    text = _example_path().read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", GUIDE.read_text(encoding="utf-8"), re.S)
    assert text in blocks
    assert yaml.safe_load(text)["train"]["device"] == "auto"
    cfg = load_config(_example_path())
    assert cfg.model.backbone == "vit_small_patch14_dinov2.lvd142m"
    assert cfg.model.trainable_blocks == "all" and cfg.model.weights == "hub"
    assert cfg.train.device == ("cuda" if torch.cuda.is_available() else "cpu")
    pre = run_preprocessing(cfg)
    # DINOv2's pretrained config gives mean/std and interpolation; size and crop are the file's
    assert (pre.image_size, pre.crop_pct, pre.scale_size) == (224, 0.875, 256)
    assert pre.interpolation == "bicubic" and pre.mean == pytest.approx((0.485, 0.456, 0.406))


@pytest.mark.parametrize("gpu", [True, False])
def test_auto_device_is_cuda_only_with_a_gpu(monkeypatch, gpu):
    from langdml.config import dump_yaml, load_config, validate_config

    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    cfg = load_config(None, {"train.device": "auto"})
    assert cfg.train.device == ("cuda" if gpu else "cpu")
    # the dump keeps auto: a config sent to another machine (an ablation worker) chooses there
    assert cfg.to_dict()["train"]["device"] == "auto" and "device: auto" in dump_yaml(cfg)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: not gpu)
    assert validate_config(cfg.to_dict()).train.device == ("cpu" if gpu else "cuda")
    cfg.train.device = "cpu"  # an explicit device is dumped as itself
    assert cfg.train.device == "cpu" and cfg.to_dict()["train"]["device"] == "cpu"
    assert load_config(None, {"train.device": "CUDA:1"}).train.device == "cuda:1"


def test_a_bad_device_is_one_line():
    from langdml.config import load_config

    with pytest.raises(ConfigError, match=r"train.device must be cpu, .* or auto, got 'gpu'"):
        load_config(None, {"train.device": "gpu"})


def test_cuda_without_a_gpu_is_one_line(monkeypatch, capsys, emoji_subset_folder, tmp_path):
    from langdml.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code = main(
        [
            "train",
            EXAMPLE,
            f"data.dataset=imagefolder:{emoji_subset_folder}",
            f"output_dir={tmp_path / 'run'}",
            "train.device=cuda",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("langdml: error: ")
    assert "train.device=cuda but CUDA is not available" in err[0] and "auto" in err[0]
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory):
    """A random tiny ViT of DINOv2's timm family, saved the way a downloaded model.safetensors
    is (at DINOv2's 518 px position grid, so the run resamples it to its own size)."""
    import timm
    from safetensors.torch import save_file

    path = tmp_path_factory.mktemp("dinov2_tiny") / "model.safetensors"
    torch.manual_seed(0)
    vit = timm.create_model("vit_small_patch14_dinov2.lvd142m", num_classes=0, **TINY)
    with torch.no_grad():  # DINOv2's LayerScale starts at 1e-5: every image would look alike
        for name, p in vit.named_parameters():
            if name.endswith(".gamma"):
                p.fill_(1.0)
    save_file(vit.state_dict(), path)
    return path


def test_the_example_trains_on_an_image_folder_and_exports(
    stand_in, emoji_subset_folder, tmp_path, monkeypatch
):
    """The shipped file with only the weights, the model size, the image size and the run's
    length changed: full fine-tuning of every block runs, its checkpoint holds the trunk, and
    the TorchScript export embeds as the run does."""
    from langdml.config import load_config
    from langdml.inference import load_run
    from langdml.inference.export import card_path, export_run, run_exported
    from langdml.models.transforms import transform_batch
    from langdml.train import train

    shipped = load_config(_example_path())
    over = {
        "data.dataset": f"imagefolder:{emoji_subset_folder}",
        "data.cache_dir": str(tmp_path / "cache"),
        "output_dir": str(tmp_path / "run"),
        "model.weights": str(stand_in),
        "model.backbone_kwargs": TINY,
        "model.image_size": 28,  # 2 x 2 patches of 14 px
        "train.epochs": 1,
        "train.batch_size": 16,
        "train.iterations_per_epoch": 2,
        "train.num_workers": 0,
        "train.progress": False,
        "eval.every": 1,
    }
    cfg = load_config(_example_path(), over)
    assert cfg.model == shipped.model.model_copy(
        update={"weights": str(stand_in), "backbone_kwargs": TINY, "image_size": 28}
    )
    result = train(cfg)
    assert 0 < result.metrics["recall@1"] <= 1
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["model"]
    assert any("patch_embed" in k for k in state)  # every block trained: the trunk is saved
    loaded = load_run(tmp_path / "run")
    images = [loaded.data.eval.image(i) for i in range(4)]
    out = export_run(loaded, "torchscript", tmp_path / "tower.pt")
    x = transform_batch(loaded.transform(), images)
    assert x.shape == (4, 3, 28, 28)
    embedded = loaded.embed(images)
    assert torch.cdist(embedded, embedded).max() > 0.1  # distinct images, distinct embeddings
    torch.testing.assert_close(run_exported(out, x), embedded, atol=1e-4, rtol=1e-3)
    card = json.loads(card_path(out).read_text())["preprocessing"]
    assert (card["image_size"], card["crop_pct"], card["interpolation"]) == (28, 0.875, "bicubic")
    # reopening takes auto too, and a device this machine cannot use is one line
    assert load_run(tmp_path / "run", device="auto").device == cfg.train.device
    with pytest.raises(LangDMLError, match=r"--device 'gpu' is not a device; expected .* or auto"):
        load_run(tmp_path / "run", device="gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(LangDMLError, match="--device 'cuda' requested but CUDA is not available"):
        load_run(tmp_path / "run", device="cuda")
