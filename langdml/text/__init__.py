"""Precompute stage: class-name and pseudo-label text embeddings, cached on disk.

Text models (TEXTMODEL): ``minilm`` (packaged all-MiniLM-L6-v2, offline default), ``mpnet``
(packaged all-mpnet-base-v2, optional; :mod:`langdml.text.packaged`),
``hf:ID_OR_PATH[#pooler|cls|mean]``, ``st:ID_OR_PATH``, ``clip:ARCH/PRETRAINED``,
``clip:ARCH@CHECKPOINT_PATH``, ``clip:DIR``, and ``file:PATH``: class embeddings computed elsewhere
(:mod:`langdml.text.userfile`). Importing this package loads no model library.
"""

from langdml.text.cache import CacheMismatchError, TextEmbeddings, load_text_embeddings
from langdml.text.encoders import (
    ClipModel,
    HFTextEncoder,
    STTextEncoder,
    TextEncoder,
    create_clip_model,
    create_text_encoder,
)
from langdml.text.precompute import (
    compute_pseudo_labels,
    embed_with_prompts,
    precompute_text_embeddings,
    pseudo_label_embeddings,
)
from langdml.text.prompts import DEFAULT_PROMPT, NAME_CLEANERS, clean_name
from langdml.text.spec import TextModelSpec, parse_text_model_spec

__all__ = [
    "DEFAULT_PROMPT",
    "NAME_CLEANERS",
    "CacheMismatchError",
    "ClipModel",
    "HFTextEncoder",
    "STTextEncoder",
    "TextEmbeddings",
    "TextEncoder",
    "TextModelSpec",
    "clean_name",
    "compute_pseudo_labels",
    "create_clip_model",
    "create_text_encoder",
    "embed_with_prompts",
    "load_text_embeddings",
    "parse_text_model_spec",
    "precompute_text_embeddings",
    "pseudo_label_embeddings",
]
