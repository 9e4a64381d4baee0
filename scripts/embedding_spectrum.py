"""Covariance spectra of trained embeddings: how far from isotropic real DML embeddings are.

    langdml embed RUN_DIR --dataset emoji --split test -o E.safetensors   # once per run
    .venv/bin/python scripts/embedding_spectrum.py E1.safetensors [E2 ...] [--out J.json]

Per file (``embeddings`` (N, d) and ``labels`` (N,) as ``langdml embed`` writes them), on the
L2-normalised rows (the cosine metric evaluation uses):

* within-class covariance W: pooled scatter of each row around its class mean, / (N - C);
* between-class covariance B: covariance of the class means minus the part the within-class noise
  puts there (W times the mean of 1 / n_c), clipped at 0 -- the spread of the true centres;
* for each: participation ratio (sum l)^2 / sum l^2, effective rank exp(entropy of l / sum l)
  (Roy & Vetterli 2007), and the share of the trace in the top 8 / 16 / 32 eigenvalues;
* tr(W) / tr(B) (the noise-to-signal ratio a generator must match), |mean row|^2 / (tr W + tr B)
  (a shared offset: all rows in a cone) and the share of W's trace that
  lies in B's top-16 / top-32 eigenvectors (whether noise and centres share directions).

With ``--out``, the mean normalised spectra (eigenvalues / trace, sorted) over the files and the
numbers above go to a JSON file: ``scripts/bench_eval.py``'s "calibrated" generator reads it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def spectrum_stats(lam: np.ndarray) -> dict:
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


def analyse(path: Path) -> dict:
    from safetensors.numpy import load_file

    data = load_file(str(path))
    return analyse_arrays(data["embeddings"], data["labels"], path.name)


def analyse_arrays(x: np.ndarray, y: np.ndarray, name: str) -> dict:
    """The statistics of the module docstring for embeddings ``x`` (N, d) with labels ``y``."""
    from langdml.eval import l2_normalize

    x = l2_normalize(np.asarray(x, dtype=np.float32))
    W, B = class_covariances(x, y)
    lw, lb = np.linalg.eigvalsh(W)[::-1], np.linalg.eigvalsh(B)[::-1]
    _, vb = np.linalg.eigh(B)
    vb = vb[:, ::-1]
    in_top = {
        f"within_in_between_top{k}": float(np.trace(vb[:, :k].T @ W @ vb[:, :k]) / np.trace(W))
        for k in (16, 32)
    }
    sizes = np.unique(y, return_counts=True)[1]
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
        # a shared offset (all rows in a cone): |mean|^2 / (tr W + tr B)
        "mean_sq_over_trace": float(
            x.mean(axis=0) @ x.mean(axis=0) / (lw.sum() + lb.clip(0).sum())
        ),
        **in_top,
        "within_spectrum": (np.clip(lw, 0, None) / lw.sum()).tolist(),
        "between_spectrum": (np.clip(lb, 0, None) / lb.clip(0).sum()).tolist(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, help="write the mean spectra and stats here (JSON)")
    args = ap.parse_args()
    rows = [analyse(f) for f in args.files]
    print(
        "| file | N | classes | PR within | erank within | PR between | erank between | "
        "PR total | tr W / tr B | mean² / trace | W in B top-16 |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['file']} | {r['n']} | {r['classes']} | "
            f"{r['within']['participation_ratio']:.1f} | {r['within']['effective_rank']:.1f} | "
            f"{r['between']['participation_ratio']:.1f} | {r['between']['effective_rank']:.1f} | "
            f"{r['total']['participation_ratio']:.1f} | {r['trace_within_over_between']:.3f} | "
            f"{r['mean_sq_over_trace']:.3f} | "
            f"{r['within_in_between_top16']:.2f} |"
        )
    if args.out:
        from langdml.io import atomic_write_text

        mean = {
            key: np.mean([r[key] for r in rows], axis=0).tolist()
            for key in ("within_spectrum", "between_spectrum")
        }
        for key in ("trace_within_over_between", "mean_sq_over_trace"):
            mean[key] = float(np.mean([r[key] for r in rows]))
        summary = {
            "files": [{k: v for k, v in r.items() if not k.endswith("_spectrum")} for r in rows],
            "mean": mean,
        }
        atomic_write_text(args.out, json.dumps(summary, indent=1) + "\n")
        print(f"→ {args.out}")


if __name__ == "__main__":
    main()
