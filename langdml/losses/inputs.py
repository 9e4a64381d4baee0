"""The loss library's input checks, compute-dtype rule and unit-vector helpers, public for code
outside the package (``langdml.compat``) that builds on the losses."""

from ._common import as_compute, check_batch, distance_from_cosine, normalize, zero_loss

__all__ = ["as_compute", "check_batch", "distance_from_cosine", "normalize", "zero_loss"]
