#!/usr/bin/env python
"""How long a user waits for ``langdml search``: one query, a batch, and per query in Python.

A frozen-trunk emoji run (EfficientNet-Lite0, 128 px, linear 128-d head; trained here for one
epoch unless ``--run`` names one) indexes the emoji test classes; queries are images of that
gallery saved as PNG files. Measured, each in a fresh child process (interpreter start
included), interleaved over ``--repeats`` rounds, medians:

* ``python -c "import torch"``: the floor every torch program pays;
* ``langdml search INDEX --image Q -k 5``: one query through the tower the index folder carries;
* the same with ``--run-dir RUN``: the run reopened (timm, torchvision, the experiment assembly);
* ``langdml search INDEX --images DIR``: ``--batch`` queries in one call.

In-process (one process, after loading): milliseconds per query of ``load_run(...).embed`` +
``GalleryIndex.search`` for one query at a time and for a batch.

    python scripts/benchmarks/bench_search.py           # → docs/results/benchmarks/bench_search.md
    python scripts/benchmarks/bench_search.py --quick   # smoke run, prints only
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
PY = sys.executable


def ensure_run(work: Path) -> Path:
    run = work / "run"
    if (run / "checkpoint.pt").is_file():
        return run
    cmd = [
        PY,
        "-m",
        "langdml",
        "train",
        str(ROOT / "configs" / "emoji_demo.yaml"),
        "--output-dir",
        str(run),
        "train.epochs=1",
        "train.progress=false",
    ]
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return run


def ensure_index(run: Path, work: Path) -> Path:
    index = work / "index"
    if not (index / "manifest.json").is_file():
        cmd = [
            PY,
            "-m",
            "langdml",
            "index",
            str(run),
            "--dataset",
            "emoji",
            "--no-progress",
            "-o",
            str(index),
        ]
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return index


def query_images(work: Path, n: int) -> list[Path]:
    from langdml.inference.index import load_embeddings

    folder = work / f"queries{n}"
    if len(list(folder.glob("*.png"))) == n:
        return sorted(folder.glob("*.png"))
    from langdml.data import load_dataset

    folder.mkdir(parents=True, exist_ok=True)
    table = load_embeddings(work / "index" / "gallery.safetensors")
    ds = load_dataset("emoji")
    rows = [int(p.rsplit("#", 1)[1]) for p in table.paths[:: max(1, len(table.paths) // n)][:n]]
    for i, row in enumerate(rows):
        ds.image(row).save(folder / f"q{i:03d}.png")
    return sorted(folder.glob("*.png"))


def wall(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def in_process(run: Path, index: Path, queries: list[Path], repeats: int) -> dict:
    import torch

    from langdml.inference import GalleryIndex, load_run

    t0 = time.perf_counter()
    loaded, gallery = load_run(run), GalleryIndex.load(index)
    tower = gallery.portable_tower()
    load_s = time.perf_counter() - t0
    out = {"load_s": load_s}
    with torch.no_grad():
        for name, embed in (("run", loaded.embed), ("tower", tower.embed)):
            embed(queries[:2])  # warm-up
            one, batch = [], []
            for _ in range(repeats):
                for q in queries[:10]:
                    t = time.perf_counter()
                    gallery.search(embed([q]), 5)
                    one.append(time.perf_counter() - t)
                t = time.perf_counter()
                gallery.search(embed(queries), 5)
                batch.append((time.perf_counter() - t) / len(queries))
            out[name] = {
                "one_ms": 1e3 * statistics.median(one),
                "batch_ms": 1e3 * statistics.median(batch),
            }
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="runs/bench_search")
    p.add_argument("--run", help="a trained frozen-trunk emoji run (default: train one epoch)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default="docs/results/benchmarks/bench_search.md")
    a = p.parse_args()
    if a.quick:
        a.repeats, a.batch = 1, 4
    work = (ROOT / a.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    run = Path(a.run).resolve() if a.run else ensure_run(work)
    index = ensure_index(run, work)
    queries = query_images(work, a.batch)
    base = [PY, "-m", "langdml", "search", str(index), "-k", "5"]
    cases = {
        "import torch": [PY, "-c", "import torch"],
        "search, one query (index tower)": [*base, "--image", str(queries[0])],
        "search, one query (--run-dir: run reopened)": [
            *base,
            "--image",
            str(queries[0]),
            "--run-dir",
            str(run),
        ],
        f"search, {a.batch} queries (--images DIR)": [*base, "--images", str(queries[0].parent)],
    }
    load0 = os.getloadavg()[0]
    times: dict[str, list[float]] = {k: [] for k in cases}
    for r in range(a.repeats):  # interleaved; the order turns every round
        names = list(cases)[r % len(cases) :] + list(cases)[: r % len(cases)]
        for name in names:
            times[name].append(wall(cases[name]))
    inproc = in_process(run, index, queries, a.repeats)
    load1 = os.getloadavg()[0]
    text = report(a, times, inproc, (load0, load1))
    print(text)
    if not a.quick:
        out = ROOT / a.out
        out.write_text(text)
        print(f"→ {out}")


def report(a, times: dict, inproc: dict, load: tuple[float, float]) -> str:
    import torch

    lines = [
        "# Search latency: `langdml search` from the shell, and per query in Python",
        "",
        f"Generated by `python scripts/benchmarks/bench_search.py` — torch {torch.__version__}, "
        f"{os.cpu_count()} CPU cores ({platform.machine()}), load average {load[0]:.1f} before, "
        f"{load[1]:.1f} after; {a.repeats} interleaved rounds, medians. The index: the emoji "
        "test classes (frozen EfficientNet-Lite0 run, 128 px, 128-d). Wall times include the "
        "interpreter's start.",
        "",
        "| command | wall s (median) | min | max |",
        "|---|---:|---:|---:|",
    ]
    for name, ts in times.items():
        lines.append(f"| {name} | {statistics.median(ts):.2f} | {min(ts):.2f} | {max(ts):.2f} |")
    lines += [
        "",
        f"In one process after loading (`load_run` + `GalleryIndex.load`: "
        f"{inproc['load_s']:.2f} s), milliseconds per query, embedding + search (k = 5):",
        "",
        "| embedder | one query at a time | in a batch of " + f"{a.batch} |",
        "|---|---:|---:|",
        f"| `load_run(...).embed` | {inproc['run']['one_ms']:.1f} | "
        f"{inproc['run']['batch_ms']:.1f} |",
        f"| the index's tower | {inproc['tower']['one_ms']:.1f} | "
        f"{inproc['tower']['batch_ms']:.1f} |",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
