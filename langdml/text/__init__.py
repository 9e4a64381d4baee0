"""Precompute stage: class-name, description and pseudo-label text embeddings, cached on disk.

Text models (TEXTMODEL): ``minilm`` (packaged all-MiniLM-L6-v2, offline default), ``mpnet``
(packaged all-mpnet-base-v2, optional; :mod:`langdml.text.packaged`),
``hf:ID_OR_PATH[#pooler|cls|mean]``, ``st:ID_OR_PATH``, ``clip:ARCH/PRETRAINED``,
``clip:ARCH@CHECKPOINT_PATH``, ``clip:DIR``, and ``file:PATH``: class embeddings computed elsewhere
(:mod:`langdml.text.userfile`). Importing this package loads no model library.
"""

from langdml.text.cache import CacheMismatchError, TextEmbeddings, load_text_embeddings
from langdml.text.descriptions import ClassDescriptions, load_descriptions
from langdml.text.encoders import (
    ClipModel,
    HFTextEncoder,
    STTextEncoder,
    TextEncoder,
    create_clip_model,
    create_text_encoder,
)
from langdml.text.pooling import grouped_unit_mean, unit_mean
from langdml.text.precompute import (
    compute_pseudo_labels,
    embed_with_prompts,
    precompute_text_embeddings,
    pseudo_label_embeddings,
)
from langdml.text.prompts import DEFAULT_PROMPT, NAME_CLEANERS, clean_name
from langdml.text.spec import TextModelSpec, parse_text_model_spec
from langdml.text.targets import class_text_target, description_embeddings

__all__ = [
    "DEFAULT_PROMPT",
    "NAME_CLEANERS",
    "CacheMismatchError",
    "ClassDescriptions",
    "ClipModel",
    "HFTextEncoder",
    "STTextEncoder",
    "TextEmbeddings",
    "TextEncoder",
    "TextModelSpec",
    "class_text_target",
    "clean_name",
    "compute_pseudo_labels",
    "create_clip_model",
    "create_text_encoder",
    "description_embeddings",
    "embed_with_prompts",
    "grouped_unit_mean",
    "load_descriptions",
    "load_text_embeddings",
    "parse_text_model_spec",
    "precompute_text_embeddings",
    "pseudo_label_embeddings",
    "unit_mean",
]
