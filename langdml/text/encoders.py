"""Text-model adapters: one small class per library, one interface.

``encoder.encode(texts) -> torch.FloatTensor (n, d)`` with L2-normalised float32 rows on the CPU;
``encoder.dim``, ``encoder.spec``, ``encoder.pooling``. Model libraries are imported inside the
constructors so that ``import langdml.text`` and cache hits never pay for them.

Hub access: a local path is always loaded with ``local_files_only=True``. A hub id is looked up in
the local Hugging Face cache only; set ``LANGDML_ALLOW_DOWNLOAD=1`` to let it download.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langdml._extras import require
from langdml.errors import ModelError, first_line
from langdml.text.spec import (
    ALLOW_DOWNLOAD_ENV,
    TextModelSpec,
    allow_download,
    looks_like_path,
    minilm_path,
    parse_text_model_spec,
)

if TYPE_CHECKING:
    import torch
    from PIL import Image


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "missing"


def _check_device(device: str) -> str:
    from langdml.devices import check_device
    from langdml.errors import LangDMLError

    try:
        return check_device(device, "device")
    except LangDMLError as exc:
        raise ModelError(str(exc)) from None


def _local_path(value: str, what: str) -> Path:
    p = Path(value).expanduser()
    if not p.exists():
        raise ModelError(f"{what} {value!r} does not exist")
    return p.resolve()


# What model libraries raise on a folder or weight file they cannot read (pickle errors included:
# transformers and open_clip let torch's weights-only refusal through).
_LOAD_ERRORS = (
    OSError,
    ValueError,
    KeyError,
    RuntimeError,
    EOFError,
    IndexError,
    TypeError,
    AttributeError,
    pickle.UnpicklingError,
)


def _load_failure(exc: BaseException, what: str, target: str, files: Sequence[Path]) -> ModelError:
    """One line for a library's failure to load ``target``: the weight file's own line when one of
    ``files`` is damaged, foreign or unsafe (``langdml.weights``), else the library's first line
    (never its advice to turn ``weights_only`` off)."""
    from langdml.weights import check_weight_files

    check_weight_files(files, f"{what} weights file")  # raises the file's one line
    why = first_line(exc, with_type=False)
    if "weights_only" in why:
        why = "its weights could not be loaded as plain tensors"
    return ModelError(f"cannot load {what} {target!r}: {why}")


def _weight_files(target: str) -> list[Path]:
    from langdml.weights import folder_weight_files

    return folder_weight_files(Path(target).expanduser()) if looks_like_path(target) else []


def _not_cached_error(spec: TextModelSpec, hub_id: str) -> ModelError:
    return ModelError(
        f"text model {spec.raw!r}: {hub_id!r} is neither a local directory nor in the local "
        f"Hugging Face cache, and downloads are off; download it on a machine with hub access "
        f"(`hf download {hub_id}`) and copy the cache here (or set HF_HOME), pass a local "
        f"directory ({spec.kind}:/path/to/model), or set {ALLOW_DOWNLOAD_ENV}=1 to download"
    )


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Hide transformers' per-load progress bars (restored afterwards): the CLI prints one line."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def _normalize(x: torch.Tensor) -> torch.Tensor:
    import torch.nn.functional as F

    return F.normalize(x.detach().float(), dim=-1).cpu()


class TextEncoder:
    """Common interface; subclasses implement :meth:`_encode_batch` (unnormalised outputs)."""

    spec: TextModelSpec
    device: str
    dim: int
    pooling: str | None = None
    libraries: tuple[str, ...] = ()

    def _encode_batch(self, texts: list[str]) -> torch.Tensor:
        raise NotImplementedError

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """Embed ``texts`` → (n, d) float32, each row divided by its L2 norm."""
        import torch

        texts = list(texts)
        if batch_size < 1:
            raise ModelError(f"batch_size must be ≥ 1, got {batch_size}")
        if not texts:
            return torch.zeros(0, self.dim)
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                out.append(_normalize(self._encode_batch(texts[i : i + batch_size])))
        emb = torch.cat(out)
        if not torch.isfinite(emb).all():
            raise ModelError(f"text model {self.spec.raw!r} produced non-finite embeddings")
        return emb

    def library_versions(self) -> dict[str, str]:
        return {name: _version(name) for name in ("torch", *self.libraries)}

    def __repr__(self) -> str:
        name, spec = type(self).__name__, self.spec.describe()
        return f"{name}({spec!r}, dim={self.dim}, device={self.device!r})"


class HFTextEncoder(TextEncoder):
    """transformers AutoModel + AutoTokenizer with ``pooler`` / ``cls`` / ``mean`` pooling.

    - pooler: ``pooler_output`` (BERT/RoBERTa: tanh(W·h_[CLS] + b)), what the LG authors' code uses;
    - cls: the last hidden state of the first token;
    - mean: Σ_t m_t h_t / Σ_t m_t over the attention mask m.
    """

    libraries = ("transformers", "tokenizers")

    def __init__(self, spec: TextModelSpec, device: str = "cpu"):
        import torch

        require("transformers", "text", f"text model {spec.raw!r}")
        from transformers import AutoModel, AutoTokenizer

        self.spec, self.device, self.pooling = spec, _check_device(device), spec.pooling
        if looks_like_path(spec.target):
            source, local_only = str(_local_path(spec.target, "model path")), True
        else:
            source, local_only = spec.target, not allow_download()
        try:
            with _quiet_transformers():
                self.tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
                model, info = AutoModel.from_pretrained(
                    source,
                    local_files_only=local_only,
                    output_loading_info=True,
                    dtype=torch.float32,
                )
        except _LOAD_ERRORS as exc:
            if not looks_like_path(spec.target) and local_only:
                raise _not_cached_error(spec, spec.target) from None
            files = _weight_files(spec.target)
            raise _load_failure(exc, "hf model", spec.target, files) from None
        if self.tokenizer.pad_token is None:  # GPT-style tokenizers; the mask hides padding anyway
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        if spec.pooling == "pooler":
            has_pooler = any(n.startswith("pooler.") for n, _ in model.named_parameters())
            if not has_pooler:
                raise ModelError(
                    f"hf model {spec.target!r} ({type(model).__name__}) has no pooler; use "
                    f"hf:{spec.target}#cls or hf:{spec.target}#mean"
                )
            missing = [k for k in info.get("missing_keys", ()) if k.startswith("pooler.")]
            if missing:
                raise ModelError(
                    f"hf model {spec.target!r} has no trained pooler weights (missing "
                    f"{sorted(missing)}); pooler_output would be random: "
                    f"use hf:{spec.target}#cls or #mean"
                )
        self.model = model.eval().to(self.device)
        self.dim = int(model.config.hidden_size)
        limit = min(int(getattr(self.tokenizer, "model_max_length", 512) or 512), 512)
        self.max_length = limit

    def _encode_batch(self, texts: list[str]) -> torch.Tensor:
        inputs = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        out = self.model(**inputs)
        if self.pooling == "pooler":
            return out.pooler_output
        hidden = out.last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)


class STTextEncoder(TextEncoder):
    """sentence-transformers: the model's own saved pipeline (pooling, normalisation)."""

    libraries = ("sentence-transformers", "transformers")

    def __init__(self, spec: TextModelSpec, device: str = "cpu", path: Path | None = None):
        require("sentence_transformers", "text", f"text model {spec.raw!r}")
        from sentence_transformers import SentenceTransformer

        self.spec, self.device = spec, _check_device(device)
        target = str(path) if path is not None else spec.target
        if path is not None or looks_like_path(target):
            source, local_only = str(_local_path(target, "model path")), True
        else:
            source, local_only = target, not allow_download()
        try:
            with _quiet_transformers():
                self.model = SentenceTransformer(
                    source, device=self.device, local_files_only=local_only
                ).eval()
        except _LOAD_ERRORS as exc:
            if not looks_like_path(target) and local_only:
                raise _not_cached_error(spec, target) from None
            what = "sentence-transformers model"
            raise _load_failure(exc, what, target, _weight_files(target)) from None
        self.dim = int(self.model.get_embedding_dimension())

    def _encode_batch(self, texts: list[str]) -> torch.Tensor:
        return self.model.encode(
            texts, batch_size=len(texts), convert_to_tensor=True, show_progress_bar=False
        )


class ClipModel(TextEncoder):
    """An open_clip model: ``encode`` / ``encode_text`` for names, ``encode_images`` for PIL images.

    ``clip:ARCH/PRETRAINED`` (a built-in arch and weight tag), ``clip:ARCH@CHECKPOINT`` (ARCH a
    built-in arch or a path to an open_clip model-config JSON), ``clip:DIR`` (a folder holding
    ``open_clip_config.json`` and weights, open_clip's hub layout).
    """

    libraries = ("open_clip_torch", "timm")

    def __init__(self, spec: TextModelSpec, device: str = "cpu"):
        open_clip = require("open_clip", "text", f"CLIP model {spec.raw!r}")

        self.spec, self.device = spec, _check_device(device)
        try:
            if spec.checkpoint:
                name = self._arch_name(spec.arch or "")
                ckpt = str(_local_path(spec.checkpoint, "CLIP checkpoint"))
                model, _, preprocess = open_clip.create_model_and_transforms(
                    name, pretrained=ckpt, device=self.device
                )
            elif spec.pretrained:
                name = self._arch_name(spec.arch or "")
                model, preprocess = self._from_tag(name, spec.pretrained)
            else:
                folder = _local_path(spec.target, "CLIP model directory")
                if not (folder / "open_clip_config.json").is_file():
                    raise ModelError(
                        f"CLIP model directory {spec.target!r} has no open_clip_config.json; "
                        "expected clip:ARCH/PRETRAINED, clip:ARCH@CHECKPOINT_PATH or such a "
                        "directory"
                    )
                name = f"local-dir:{folder}"
                model, _, preprocess = open_clip.create_model_and_transforms(
                    name, device=self.device
                )
            self.tokenizer = open_clip.get_tokenizer(name)
        except ModelError:
            raise
        except _LOAD_ERRORS as exc:
            files = _weight_files(spec.checkpoint or spec.target)
            raise _load_failure(exc, "CLIP model", spec.raw, files) from None
        self.model = model.eval()
        self.preprocess = preprocess
        self.dim = int(self._encode_batch(["a"]).shape[-1])

    @staticmethod
    def _arch_name(arch: str) -> str:
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

    def _from_tag(self, arch: str, tag: str) -> tuple[Any, Any]:
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
                arch, pretrained=tag, device=self.device
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
            device=self.device,
            force_quick_gelu=bool(cfg.get("quick_gelu", False)),
            image_mean=cfg.get("mean"),
            image_std=cfg.get("std"),
            image_interpolation=cfg.get("interpolation"),
            image_resize_mode=cfg.get("resize_mode"),
        )
        return model, preprocess

    def _encode_batch(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(texts).to(self.device)
        return self.model.encode_text(tokens)

    def encode_text(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        return self.encode(texts, batch_size=batch_size)

    def encode_images(self, images: Sequence[Image.Image], batch_size: int = 64) -> torch.Tensor:
        """PIL images → (n, d) float32 unit rows of the image tower (CLIP eval preprocessing)."""
        import torch

        from langdml.data.images import to_rgb

        images = list(images)
        if not images:
            return torch.zeros(0, self.dim)
        out = []
        with torch.inference_mode():
            for i in range(0, len(images), batch_size):
                batch = torch.stack(
                    [self.preprocess(to_rgb(im)) for im in images[i : i + batch_size]]
                )
                out.append(_normalize(self.model.encode_image(batch.to(self.device))))
        return torch.cat(out)


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


def create_text_encoder(
    spec: str | TextModelSpec, device: str = "cpu", pooling: str | None = None
) -> TextEncoder:
    """Build the adapter for a TEXTMODEL spec (see :mod:`langdml.text.spec`)."""
    if not isinstance(spec, TextModelSpec):
        spec = parse_text_model_spec(spec, pooling=pooling)
    if spec.kind == "minilm":
        # all-MiniLM-L6-v2 is meant to run as its sentence-transformers pipeline (mean + normalise)
        return STTextEncoder(spec, device=device, path=minilm_path())
    if spec.kind == "mpnet":
        from langdml.text.packaged import mpnet_path

        return STTextEncoder(spec, device=device, path=mpnet_path())
    if spec.kind == "file":
        raise ModelError(
            f"{spec.raw!r} is a fixed table of class-name embeddings, not a text encoder: it "
            "serves class names (precompute, language guidance, diagnose), not free text"
        )
    if spec.kind == "hf":
        return HFTextEncoder(spec, device=device)
    if spec.kind == "st":
        return STTextEncoder(spec, device=device)
    return ClipModel(spec, device=device)


def create_clip_model(spec: str, device: str = "cpu") -> ClipModel:
    """A ``clip:…`` spec as a :class:`ClipModel` (text and image towers), for cross-modal work."""
    parsed = parse_text_model_spec(spec)
    if parsed.kind != "clip":
        raise ModelError(f"expected a clip:… model spec for image and text towers, got {spec!r}")
    return ClipModel(parsed, device=device)
