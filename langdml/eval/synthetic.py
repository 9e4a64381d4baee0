"""Synthetic labelled embeddings for evaluation benchmarks: clustered sets of any size.

Two sets, both with class sizes uniform in [lo, hi] and rows in random order, filled a block of
65,536 rows at a time so a 1M x 128 set needs no full-size temporaries:

* ``isotropic_embeddings``: class centres N(0, I), rows centre + N(0, noise^2 I) -- every
  direction equally informative, the worst case for an approximate index.
* ``calibrated_embeddings``: centre and noise covariance spectra, noise-to-centre trace ratio and
  shared offset taken from a measurement of trained embeddings (``langdml.eval.spectrum``).

Both are deterministic for a seed; the benchmarks' published numbers depend on the exact random
stream, so the order of the draws below is part of the contract.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from langdml.errors import LangDMLError

BLOCK = 65536  # rows filled per step


def class_labels(
    rng: np.random.Generator, n: int, sizes: tuple[int, int]
) -> tuple[np.ndarray, int]:
    """n labels, class sizes uniform in [lo, hi], in random order; and the number of classes."""
    lo, hi = sizes
    counts = rng.integers(lo, hi + 1, n // lo + 1)
    cut = int(np.searchsorted(np.cumsum(counts), n))
    counts = counts[: cut + 1]
    counts[-1] -= counts.sum() - n  # trim the last class so there are exactly n rows
    return rng.permutation(np.repeat(np.arange(len(counts)), counts)), len(counts)


def isotropic_embeddings(
    n: int, d: int, sizes: tuple[int, int], seed: int = 0, noise: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """(x, labels): float32 (n, d) rows centre + N(0, noise^2 I), centres N(0, I)."""
    rng = np.random.default_rng(seed)
    labels, n_classes = class_labels(rng, n, sizes)
    centres = rng.standard_normal((n_classes, d), dtype=np.float32)
    x = np.empty((n, d), np.float32)
    for s in range(0, n, BLOCK):
        block = labels[s : s + BLOCK]
        x[s : s + len(block)] = centres[block]
        x[s : s + len(block)] += noise * rng.standard_normal((len(block), d), dtype=np.float32)
    return x, labels


def load_calibration(source: str | Path | Mapping[str, Any]) -> Mapping[str, Any]:
    """The calibration record: a mapping with ``between_spectrum``, ``within_spectrum``,
    ``trace_within_over_between`` and ``mean_sq_over_trace``, or a JSON file whose ``"mean"``
    entry is one (what the embedding-spectrum study writes)."""
    if not isinstance(source, Mapping):
        path = Path(source)
        try:
            source = json.loads(path.read_text())["mean"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise LangDMLError(
                f"{path}: not a spectrum calibration file (JSON with a 'mean' record): {exc}"
            ) from exc
    keys = ("between_spectrum", "within_spectrum", "trace_within_over_between")
    missing = [k for k in (*keys, "mean_sq_over_trace") if k not in source]
    if missing:
        raise LangDMLError(f"calibration is missing {', '.join(missing)}")
    return source


def calibrated_embeddings(
    n: int,
    d: int,
    sizes: tuple[int, int],
    calibration: str | Path | Mapping[str, Any],
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(x, labels) with the measured spectra of ``calibration`` (``load_calibration``).

    With lambda_B, lambda_W the normalised between- and within-class spectra (each sums to 1,
    sorted), rho = tr W / tr B and m = |mean|^2 / (tr W + tr B): a random orthogonal basis U
    (seeded) shared by both (measured noise lies mostly in the centres' top directions), centres
    c = U diag(sqrt(lambda_B)) z + mu, rows c + U diag(sqrt(rho lambda_W)) z' (z, z' standard
    normal), mu a random direction with |mu|^2 = m (1 + rho): the shared offset.
    """
    cal = load_calibration(calibration)
    lam_b = np.asarray(cal["between_spectrum"], np.float64)
    lam_w = np.asarray(cal["within_spectrum"], np.float64)
    if len(lam_b) != d or len(lam_w) != d:
        raise LangDMLError(
            f"calibration spectra have length {len(lam_b)}, not d = {d}; expected a calibration "
            "measured on d-dimensional embeddings"
        )
    rho, m = cal["trace_within_over_between"], cal["mean_sq_over_trace"]
    rng = np.random.default_rng(seed)
    labels, n_classes = class_labels(rng, n, sizes)
    basis = np.linalg.qr(rng.standard_normal((d, d)))[0]
    offset = rng.standard_normal(d)
    offset *= np.sqrt(m * (1 + rho)) / np.linalg.norm(offset)
    scale_b = (basis * np.sqrt(lam_b)).T.astype(np.float32)  # z @ scale_b = U diag(sqrt) z
    scale_w = (basis * np.sqrt(rho * lam_w)).T.astype(np.float32)
    centres = rng.standard_normal((n_classes, d), dtype=np.float32) @ scale_b
    centres += offset.astype(np.float32)
    x = np.empty((n, d), np.float32)
    for s in range(0, n, BLOCK):
        block = labels[s : s + BLOCK]
        x[s : s + len(block)] = centres[block]
        x[s : s + len(block)] += rng.standard_normal((len(block), d), dtype=np.float32) @ scale_w
    return x, labels
