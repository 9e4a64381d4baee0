"""Names the loss library accepts, importable without torch (the config and the CLI use them).

One vocabulary for where a regularizer looks: ``batch`` (the batch's samples), ``proxy`` (the
base loss's proxies) and, for the direction regularizer, ``auto`` (proxy when the base loss has
proxies). The older spellings ``pairs`` / ``proxies`` map onto it with a deprecation message.
"""

from __future__ import annotations

import warnings

REGULARIZERS = ("language", "direction")
# Base losses whose proxies are projected class-name embeddings (language as proxies); the
# classes are registered under these names in langdml.losses.combined.BASE_LOSSES.
TEXT_PROXY_BASES = ("text_proxy_anchor", "text_proxy_nca")
MODES = ("batch", "proxy")
_OLD_MODES = {"pairs": "batch", "proxies": "proxy"}


def canonical_mode(mode: str, who: str) -> str:
    """``mode`` in the one vocabulary; an old spelling is mapped with a one-line warning."""
    if mode in _OLD_MODES:
        new = _OLD_MODES[mode]
        warnings.warn(
            f"{who}: mode {mode!r} is deprecated, use {new!r}", DeprecationWarning, stacklevel=3
        )
        return new
    return mode
