"""Ablation grids: base loss × regularizer × seed → results.csv, results.md, results.png."""

from langdml.ablation.runner import AblationResult, run_ablation
from langdml.ablation.spec import Ablation, load_ablation

__all__ = ["Ablation", "AblationResult", "load_ablation", "run_ablation"]
