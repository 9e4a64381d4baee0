"""Compatibility layers for code written against other metric-learning libraries.

``langdml.compat.pml`` mirrors pytorch-metric-learning's import paths and class names for the
losses, miners and accuracy calculator langdml implements (see docs/guides/pml.md).
"""
