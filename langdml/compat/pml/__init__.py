"""pytorch-metric-learning's names over langdml's implementations.

Change ``from pytorch_metric_learning import losses, miners`` to ``from langdml.compat.pml
import losses, miners`` (and ``pytorch_metric_learning.utils.accuracy_calculator`` to
``langdml.compat.pml.utils.accuracy_calculator``); the classes take PML's constructor arguments
and call signatures and return PML's values (in the input's dtype). An argument or feature
langdml does not implement (most distance / reducer objects, ``swap=True``, ...) raises one
``LangDMLError`` line naming it. Sub-modules: ``losses``, ``miners``, ``distances``,
``regularizers``, ``utils.accuracy_calculator``. This package does not need
pytorch-metric-learning installed.
"""
