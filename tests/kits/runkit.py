"""Helpers shared by the tests that train tiny runs on an imagefolder tree."""

from __future__ import annotations

import copy

from langdml.config import load_config


def imagefolder_cfg(folder, cache, out, settings: dict, **over):
    """The config of a run on the imagefolder ``folder``: ``data.dataset`` and ``data.cache_dir``,
    then a fresh copy of the module's ``settings`` (in their order), then ``output_dir``, with
    ``over`` on top."""
    base = {
        "data.dataset": f"imagefolder:{folder}",
        "data.cache_dir": str(cache),
        **copy.deepcopy(settings),
        "output_dir": str(out),
    }
    base.update(over)
    return load_config(None, base)
