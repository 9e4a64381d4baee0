"""Helpers shared by the tests that use a random tiny open_clip CLIP."""

from __future__ import annotations

import json

import torch

CLIP_CFG = {
    "embed_dim": 12,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
}


def save_tiny_clip(root, name: str, seed: int):
    """A random tiny CLIP (``CLIP_CFG``, initialised under ``torch.manual_seed(seed)``) saved as the
    model-config JSON ``root / name`` and the checkpoint ``root / "tiny_clip.pt"``; returns
    (config path, checkpoint path, model)."""
    from open_clip.model import CLIP

    cfg_path = root / name
    cfg_path.write_text(json.dumps(CLIP_CFG))
    torch.manual_seed(seed)
    model = CLIP(**CLIP_CFG)
    ckpt = root / "tiny_clip.pt"
    torch.save(model.state_dict(), ckpt)
    return cfg_path, ckpt, model
