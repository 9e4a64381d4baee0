"""Covariance spectra of trained embeddings: how far from isotropic real DML embeddings are.

    langdml embed RUN_DIR --dataset emoji --split test -o E.safetensors   # once per run
    .venv/bin/python scripts/studies/embedding_spectrum.py E1.safetensors [E2 ...] [--out J.json]

Per file (``embeddings`` (N, d) and ``labels`` (N,) as ``langdml embed`` writes them): the
statistics of ``langdml.eval.spectrum`` (within- and between-class covariance spectra, their
participation ratios and effective ranks, tr W / tr B, the shared offset).

With ``--out``, the mean normalised spectra (eigenvalues / trace, sorted) over the files and the
numbers above go to a JSON file: ``langdml.eval.synthetic.calibrated_embeddings`` reads it
(the benchmarks' "calibrated" set).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from langdml.eval.spectrum import embedding_spectrum  # noqa: E402


def analyse(path: Path) -> dict:
    from safetensors.numpy import load_file

    data = load_file(str(path))
    return embedding_spectrum(data["embeddings"], data["labels"], path.name)


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
