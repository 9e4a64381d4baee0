"""Text-model adapters: one small class per library, one interface.

``encoder.encode(texts) -> torch.FloatTensor (n, d)`` with L2-normalised float32 rows on the CPU;
``encoder.dim``, ``encoder.spec``, ``encoder.pooling``. Model libraries are imported inside the
constructors so that ``import langdml.text`` and cache hits never pay for them.

Hub access: a local path is always loaded with ``local_files_only=True``. A hub id is looked up in
the local Hugging Face cache only; set ``LANGDML_ALLOW_DOWNLOAD=1`` to let it download.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from langdml._extras import require
from langdml.errors import ModelError
from langdml.text.clip_loader import load_clip
from langdml.text.load_errors import LOAD_ERRORS, load_failure, weight_files
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
        except LOAD_ERRORS as exc:
            if not looks_like_path(spec.target) and local_only:
                raise _not_cached_error(spec, spec.target) from None
            files = weight_files(spec.target)
            raise load_failure(exc, "hf model", spec.target, files) from None
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
        except LOAD_ERRORS as exc:
            if not looks_like_path(target) and local_only:
                raise _not_cached_error(spec, target) from None
            what = "sentence-transformers model"
            raise load_failure(exc, what, target, weight_files(target)) from None
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
        self.spec, self.device = spec, _check_device(device)
        loaded = load_clip(spec)  # shared with an open_clip image backbone of the same spec
        self.model = loaded.model.to(self.device)
        self.preprocess, self.tokenizer = loaded.preprocess, loaded.tokenizer
        self.dim = int(self._encode_batch(["a"]).shape[-1])

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
