"""Benchmark `langdml precompute`: cold vs warm (cache-hit), whole CLI vs in-process function.

    .venv/bin/python scripts/benchmarks/bench_precompute.py [--model minilm] [--dataset emoji]
        [--plg]

Uses a fresh temporary text cache (so "cold" really computes) and the default dataset cache
(builds the emoji benchmark first if it is missing). Target: a warm call does ≤ 1 s of work.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_cli(args: list[str]) -> tuple[float, str, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "langdml", *args], capture_output=True, text=True, cwd=ROOT
    )
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"command failed ({proc.returncode}): langdml {' '.join(args)}\n{proc.stderr}")
    return dt, proc.stdout.strip(), proc.stderr


def fresh_process_call(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    return proc.stdout.strip().splitlines()[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="emoji")
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--plg", action="store_true", help="also time pseudo-label guidance (k=5)")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from langdml.data import class_disjoint_split, load_dataset
    from langdml.errors import DataError

    try:
        ds = load_dataset(args.dataset)
    except DataError:
        if args.dataset != "emoji":
            raise
        print("building the emoji benchmark first (langdml data build emoji) ...", flush=True)
        run_cli(["data", "build", "emoji"])
        ds = load_dataset(args.dataset)
    t0 = time.perf_counter()
    ds = load_dataset(args.dataset)
    load_s = time.perf_counter() - t0
    train = class_disjoint_split(ds).train
    names = train.class_names
    print(
        f"dataset {args.dataset}: {ds.num_classes} classes, {len(names)} train; "
        f"load_dataset {load_s:.3f} s"
    )

    rows: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="langdml-bench-text-") as tmp:
        cli = ["precompute", "--dataset", args.dataset, "--model", args.model, "--cache-dir", tmp]
        cold, path, _ = run_cli(cli)
        warm_runs = [run_cli(cli) for _ in range(args.repeats)]
        assert all(p == path and "cache hit" in err for _, p, err in warm_runs), "warm run missed"
        rows.append(("CLI cold (load model, embed, write)", cold))
        rows.append(
            (
                f"CLI warm, median of {args.repeats} (whole process)",
                statistics.median(t for t, _, _ in warm_runs),
            )
        )
        # Whole-process time is dominated by interpreter + library imports; time those alone.
        base, _, _ = run_cli(["--version"])
        rows.append(("  of which `langdml --version` (CLI imports only)", base))

        call = (
            "import time, sys; t0 = time.perf_counter(); {pre}"
            "from langdml.text import precompute_text_embeddings as f; t1 = time.perf_counter(); "
            f"r = f({names!r}, model={args.model!r}, cache_dir={tmp!r}); "
            "t2 = time.perf_counter(); assert r.cache_hit; print(t2 - t1, t2 - t0)"
        )
        fn_cold_import, total = map(float, fresh_process_call(call.format(pre="")).split())
        rows.append(("function warm, fresh process (incl. torch import)", fn_cold_import))
        fn_torch_ready, _ = map(
            float, fresh_process_call(call.format(pre="import torch; ")).split()
        )
        rows.append(("function warm, fresh process, torch already imported", fn_torch_ready))

        from langdml.text import precompute_text_embeddings

        precompute_text_embeddings(names, model=args.model, cache_dir=tmp)
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            r = precompute_text_embeddings(names, model=args.model, cache_dir=tmp)
            times.append(time.perf_counter() - t0)
            assert r.cache_hit
        rows.append(
            (f"function warm, same process, median of {args.repeats}", statistics.median(times))
        )
        with tempfile.TemporaryDirectory(prefix="langdml-bench-text-cold-") as tmp2:
            t0 = time.perf_counter()
            r = precompute_text_embeddings(names, model=args.model, cache_dir=tmp2)
            rows.append(
                (
                    "function cold, same process (model load + embed + write)",
                    time.perf_counter() - t0,
                )
            )
        shape = tuple(r.embeddings.shape)

        if args.plg:
            from langdml.text import pseudo_label_embeddings

            t0 = time.perf_counter()
            p = pseudo_label_embeddings(train, model=args.model, k=5, cache_dir=tmp)
            rows.append(
                (f"PLG cold ({len(train)} images: classifier + embed)", time.perf_counter() - t0)
            )
            t0 = time.perf_counter()
            p2 = pseudo_label_embeddings(train, model=args.model, k=5, cache_dir=tmp)
            rows.append(("PLG warm, same process", time.perf_counter() - t0))
            assert p2.cache_hit
            plg_cli, _, err = run_cli([*cli, "--plg"])
            assert "cache hit" in err
            rows.append(("PLG CLI warm (whole process, incl. dataset load)", plg_cli))
            print(f"PLG {tuple(p.embeddings.shape)}; first classes' pseudo-labels:")
            for c in range(6):
                print(f"  {p.class_names[c]!r}: {p.meta['pseudo_labels'][c]}")

    print(f"\nmodel {args.model}, {shape} float32, cache file {Path(path).name}")
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v:8.3f} s")


if __name__ == "__main__":
    main()
