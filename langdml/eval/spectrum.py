"""Covariance spectra of labelled embeddings: how far from isotropic a set of DML embeddings is.

On L2-normalised rows (what the cosine metric compares):

* within-class covariance W: the pooled scatter of each row around its class mean, / (N - C);
* between-class covariance B: the covariance of the class means minus the part the within-class
  noise puts there (W times the mean of 1 / n_c), its eigenvalues clipped at 0 -- the spread of
  the true centres;
* for each: participation ratio (sum l)^2 / sum l^2, effective rank exp(entropy of l / sum l)
  (Roy & Vetterli 2007) and the share of the trace in the top 8 / 16 / 32 eigenvalues;
* tr(W) / tr(B) (the noise-to-signal ratio), |mean row|^2 / (tr W + tr B) (a shared offset: all
  rows in a cone) and the share of W's trace lying in B's top-16 / top-32 eigenvectors (whether
  noise and centres share directions).

``langdml.eval.synthetic.calibrated_embeddings`` generates sets with given spectra; this module
measures them (on trained embeddings, and on generated sets to check the generator).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from langdml.eval.knn import l2_normalize


def spectrum_stats(lam: np.ndarray) -> dict[str, float]:
    """Participation ratio, effective rank and top-k trace shares of eigenvalues ``lam``."""
    lam = np.clip(np.sort(lam)[::-1], 0, None)
    p = lam / lam.sum()
    nz = p[p > 0]
    return {
        "participation_ratio": float(lam.sum() ** 2 / (lam**2).sum()),
        "effective_rank": float(np.exp(-(nz * np.log(nz)).sum())),
        **{f"top{k}_share": float(p[:k].sum()) for k in (8, 16, 32)},
    }


def class_covariances(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(W, B): pooled within-class and noise-corrected between-class covariance (docstring)."""
    x = x.astype(np.float64)
    classes, inv, counts = np.unique(y, return_inverse=True, return_counts=True)
    means = np.zeros((len(classes), x.shape[1]))
    np.add.at(means, inv, x)
    means /= counts[:, None]
    resid = x - means[inv]
    W = resid.T @ resid / (len(x) - len(classes))
    mc = means - means.mean(axis=0)
    B_raw = mc.T @ mc / (len(classes) - 1)
    B = B_raw - W * float(np.mean(1.0 / counts))
    lam, vec = np.linalg.eigh(B)
    B = (vec * np.clip(lam, 0, None)) @ vec.T  # PSD: the correction can push small ones below 0
    return W, B


def embedding_spectrum(x: Any, y: Any, name: str = "") -> dict[str, Any]:
    """The statistics of the module docstring for embeddings ``x`` (N, d) with labels ``y``;
    ``within_spectrum`` / ``between_spectrum`` are the sorted eigenvalues over their trace."""
    x = l2_normalize(np.asarray(x, dtype=np.float32))
    y = np.asarray(y)
    W, B = class_covariances(x, y)
    lw, lb = np.linalg.eigvalsh(W)[::-1], np.linalg.eigvalsh(B)[::-1]
    _, vb = np.linalg.eigh(B)
    vb = vb[:, ::-1]
    in_top = {
        f"within_in_between_top{k}": float(np.trace(vb[:, :k].T @ W @ vb[:, :k]) / np.trace(W))
        for k in (16, 32)
    }
    sizes = np.unique(y, return_counts=True)[1]
    mean = x.mean(axis=0)
    return {
        "file": name,
        "n": len(x),
        "d": x.shape[1],
        "classes": len(sizes),
        "mean_class_size": float(sizes.mean()),
        "within": spectrum_stats(lw),
        "between": spectrum_stats(lb),
        "total": spectrum_stats(np.linalg.eigvalsh(np.cov(x.T))),
        "trace_within_over_between": float(lw.sum() / lb.clip(0).sum()),
        "mean_sq_over_trace": float(mean @ mean / (lw.sum() + lb.clip(0).sum())),
        **in_top,
        "within_spectrum": (np.clip(lw, 0, None) / lw.sum()).tolist(),
        "between_spectrum": (np.clip(lb, 0, None) / lb.clip(0).sum()).tolist(),
    }
