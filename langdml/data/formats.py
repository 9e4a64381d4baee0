"""Deprecated location: one module per format now (:mod:`langdml.data.cub`, ``cars``, ``sop``,
``imagefolder``, ``hf``); this module re-exports their public names."""

from langdml.data.cars import load_cars196
from langdml.data.cub import load_cub200
from langdml.data.hf import load_hf, split_spec_options
from langdml.data.imagefolder import load_imagefolder
from langdml.data.images import IMAGE_EXTENSIONS
from langdml.data.names import clean_class_name, collapse_whitespace, natural_key
from langdml.data.records import official_split
from langdml.data.sop import load_sop

__all__ = [
    "IMAGE_EXTENSIONS",
    "clean_class_name",
    "collapse_whitespace",
    "load_cars196",
    "load_cub200",
    "load_hf",
    "load_imagefolder",
    "load_sop",
    "natural_key",
    "official_split",
    "split_spec_options",
]
