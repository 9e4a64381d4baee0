"""Deprecated location: the text-proxy losses live in :mod:`langdml.losses.text_proxies`."""

from langdml.losses.text_proxies import (
    PROJECTIONS,
    TEXT_PROXY_LOSSES,
    TextProjection,
    TextProxyAnchorLoss,
    TextProxyNCALoss,
    class_rows,
)

__all__ = [
    "PROJECTIONS",
    "TEXT_PROXY_LOSSES",
    "TextProjection",
    "TextProxyAnchorLoss",
    "TextProxyNCALoss",
    "class_rows",
]
