"""Loading open_clip models from ``clip:``/``open_clip:`` specs, once per process.

One loaded model serves both towers: the text encoder of ``text.text_model: clip:...`` and the
image backbone of ``model.backbone: open_clip:...`` with the same spec share it (the backbone
takes a copy of the image tower, so fine-tuning it leaves the loaded model untouched). The cache
key is the spec plus the size and mtime of its files (``spec.model_identity``), so re-saved
weights at the same path load afresh.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langdml._extras import require
from langdml.errors import ModelError, first_line
from langdml.text.load_errors import LOAD_ERRORS, load_failure, weight_files
from langdml.text.spec import (
    ALLOW_DOWNLOAD_ENV,
    TextModelSpec,
    allow_download,
    looks_like_path,
    model_identity,
)

_CACHE_SIZE = 2
_loaded: dict[str, LoadedClip] = {}


@dataclass(frozen=True)
class LoadedClip:
    """An open_clip model (eval mode, CPU when loaded), its eval preprocessing and tokenizer."""

    model: Any
    preprocess: Any
    tokenizer: Any
    name: str  # the open_clip model name it was built from


def load_clip(spec: TextModelSpec) -> LoadedClip:
    """The open_clip model of a ``clip:`` spec, from the process cache when already loaded.

    ``clip:ARCH/PRETRAINED`` (a built-in arch and weight tag, from the local cache unless
    downloads are on), ``clip:ARCH@CHECKPOINT`` (ARCH a built-in arch or a path to an open_clip
    model-config JSON), ``clip:DIR`` (a folder holding ``open_clip_config.json`` and weights).
    """
    key = json.dumps([spec.canonical, model_identity(spec)], sort_keys=True, default=str)
    if key not in _loaded:
        while len(_loaded) >= _CACHE_SIZE:
            _loaded.pop(next(iter(_loaded)))
        _loaded[key] = _load(spec)
    return _loaded[key]


def _load(spec: TextModelSpec) -> LoadedClip:
    open_clip = require("open_clip", "text", f"CLIP model {spec.raw!r}")
    try:
        if spec.checkpoint:
            name = resolve_arch(spec.arch or "")
            ckpt = str(_local_path(spec.checkpoint, "CLIP checkpoint"))
            model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=ckpt)
        elif spec.pretrained:
            name = resolve_arch(spec.arch or "")
            model, preprocess = _from_tag(name, spec.pretrained)
        else:
            folder = _local_path(spec.target, "CLIP model directory")
            if not (folder / "open_clip_config.json").is_file():
                raise ModelError(
                    f"CLIP model directory {spec.target!r} has no open_clip_config.json; "
                    "expected clip:ARCH/PRETRAINED, clip:ARCH@CHECKPOINT_PATH or such a directory"
                )
            name = f"local-dir:{folder}"
            model, _, preprocess = open_clip.create_model_and_transforms(name)
        tokenizer = open_clip.get_tokenizer(name)
    except ModelError:
        raise
    except LOAD_ERRORS as exc:
        files = weight_files(spec.checkpoint or spec.target)
        raise load_failure(exc, "CLIP model", spec.raw, files) from None
    return LoadedClip(model.eval(), preprocess, tokenizer, name)


def random_clip(arch: str) -> LoadedClip:
    """A randomly initialised open_clip model of ``arch`` (a built-in name or a config JSON)."""
    open_clip = require("open_clip", "text", f"CLIP architecture {arch!r}")
    name = resolve_arch(arch)
    model, _, preprocess = open_clip.create_model_and_transforms(name)
    return LoadedClip(model.eval(), preprocess, open_clip.get_tokenizer(name), name)


def _local_path(value: str, what: str) -> Path:
    p = Path(value).expanduser()
    if not p.exists():
        raise ModelError(f"{what} {value!r} does not exist")
    return p.resolve()


def resolve_arch(arch: str) -> str:
    """A built-in arch name, or register a model-config JSON file and return its name."""
    import open_clip

    if not looks_like_path(arch):
        if arch in open_clip.list_models():
            return arch
        raise ModelError(
            f"unknown open_clip architecture {arch!r}; expected a name from "
            "open_clip.list_models() (e.g. ViT-B-32) or a path to a model-config JSON"
        )
    path = _local_path(arch, "CLIP model config")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"cannot read CLIP model config {arch!r}: {first_line(exc, with_type=False)}"
        ) from None
    cfg = cfg.get("model_cfg", cfg) if isinstance(cfg, dict) else cfg
    if not isinstance(cfg, dict) or not all(
        k in cfg for k in ("embed_dim", "vision_cfg", "text_cfg")
    ):
        raise ModelError(
            f"CLIP model config {arch!r} needs keys embed_dim, vision_cfg and text_cfg"
        )
    from open_clip.factory import get_model_config

    name = path.stem
    known = get_model_config(name)
    if known is not None and known != cfg:
        raise ModelError(
            f"CLIP model config {arch!r} is named like the registered architecture {name!r} "
            "but differs from it; rename the file"
        )
    if known is None:
        open_clip.add_model_config(path)
    return name


def _from_tag(arch: str, tag: str) -> tuple[Any, Any]:
    import open_clip

    cfg = open_clip.get_pretrained_cfg(arch, tag)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(arch)
        raise ModelError(
            f"unknown pretrained tag {tag!r} for open_clip arch {arch!r}; known: "
            f"{', '.join(tags) or 'none'}"
        )
    if allow_download():
        model, _, preprocess = open_clip.create_model_and_transforms(
            arch, pretrained=tag, device="cpu"
        )
        return model, preprocess
    ckpt = _cached_clip_weights(cfg)
    if ckpt is None:
        raise ModelError(
            f"CLIP weights {arch}/{tag} are not in the local cache and downloads are off; "
            'download them on a machine with hub access (python -c "import open_clip; '
            f"open_clip.create_model('{arch}', pretrained='{tag}')\") and copy the Hugging "
            f"Face cache here, use clip:{arch}@/path/to/weights, or set {ALLOW_DOWNLOAD_ENV}=1"
        )
    # The tag's own preprocessing and activation (OpenAI weights were trained with QuickGELU).
    model, _, preprocess = open_clip.create_model_and_transforms(
        arch,
        pretrained=ckpt,
        device="cpu",
        force_quick_gelu=bool(cfg.get("quick_gelu", False)),
        image_mean=cfg.get("mean"),
        image_std=cfg.get("std"),
        image_interpolation=cfg.get("interpolation"),
        image_resize_mode=cfg.get("resize_mode"),
    )
    return model, preprocess


def _cached_clip_weights(cfg: dict) -> str | None:
    """Path of already-downloaded weights for an open_clip pretrained config, without network."""
    hub = cfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import hf_hub_download
        from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

        repo, filename = os.path.split(hub)  # "org/name/" → ("org/name", ""), as open_clip does
        names = [HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME] if not filename else [filename]
        if filename.endswith((".bin", ".pth")):
            names.insert(0, filename[:-4] + ".safetensors")
        for name in names:
            try:
                return hf_hub_download(repo, name, local_files_only=True)
            except Exception:  # noqa: BLE001 - any failure means "not cached"
                continue
    url = cfg.get("url", "")
    if url:
        p = Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
        if p.is_file():
            return str(p)
    return None
