"""Ablation grids: base loss × regularizer × seed → results.csv, results.md, results.png, run on
this machine, a Slurm cluster (submitit) or a Ray cluster (``langdml.ablation.backends``)."""

from langdml._lazy import lazy_getattr

_EXPORTS = {
    "Ablation": "langdml.ablation.spec",
    "load_ablation": "langdml.ablation.spec",
    "AblationResult": "langdml.ablation.runner",
    "run_ablation": "langdml.ablation.runner",
    "ablation_status": "langdml.ablation.status",
}
__all__ = list(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
