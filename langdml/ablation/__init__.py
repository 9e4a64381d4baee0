"""Ablation grids: base loss × regularizer × seed → results.csv, results.md, results.png."""

from importlib import import_module

_EXPORTS = {
    "Ablation": "langdml.ablation.spec",
    "load_ablation": "langdml.ablation.spec",
    "AblationResult": "langdml.ablation.runner",
    "run_ablation": "langdml.ablation.runner",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'langdml.ablation' has no attribute {name!r}")
