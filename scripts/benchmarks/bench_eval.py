"""Benchmark langdml.eval.retrieval_metrics against pytorch-metric-learning's AccuracyCalculator.

    .venv/bin/python scripts/benchmarks/bench_eval.py [--quick] [--skip-1m] [--skip-clustering]
        [--repeats N]
    .venv/bin/python scripts/benchmarks/bench_eval.py --device cuda
        # GPU: docs/results/benchmarks/bench_eval_gpu.md

Cases (full run; --quick shrinks every size for a smoke test):
* kNN metrics, SOP-sized: 60,000 x 512 embeddings, ~11k classes of 2-9 images (mean 5.5), and
  20,000 x 512 and 20,000 x 128 cases. Ours (recall@1/2/4/8, map@r, r_precision, cosine) vs PML 2.9
  ``AccuracyCalculator(k="max_bin_count")`` (precision_at_1, r_precision,
  mean_average_precision_at_r; ``FaissKNN(IndexFlatIP)``, fed the same L2-normalised float32 array
  that ours searches) in the same process, interleaved (ours/PML, then PML/ours, ...). Reports wall
  times, the ratio ours/PML (target <= 1.0) and the largest difference of the shared numbers.
* clustering at 60k (NMI, AMI; k-means with ~11k clusters), measured separately, once each: ours
  with seed=1234 (PML's faiss default seed) so both cluster identically.
* ours alone at 1,000,000 x 128 (~100k classes of 5-15 images, mean 10), in a child process:
  time and peak RSS (``ru_maxrss``; target <= 16 GiB); plus one k-means iteration at that size in
  another child to price the clustering part (20 iterations are the default).

``--approx``: approximate search only (IVF and HNSW defaults, or one ``--search ivf|hnsw
--search-param KEY=VALUE ...`` configuration, the syntax of ``langdml evaluate``) at
``--approx-n`` x 128 (default 1M) in children like the 1M case: time, peak RSS, metrics,
neighbor_recall, load average before/after; Δ against the exact 1M row of the existing report
(same generator and seed) or, at other sizes, an exact child run. Rewrites only the table of the
"Approximate search" section; the text around it is written by hand in the page and kept.
Data: ``langdml.eval.synthetic`` (the "isotropic" and "calibrated" sets).

``--device cuda``: ours alone on the GPU (faiss-gpu, or the exact torch backend without it) at
1,000,000 x 128 (time, peak GPU memory, peak RSS), and GPU vs CPU faiss at 60,000 x 512.

Writes docs/results/benchmarks/bench_eval.md (or docs/results/benchmarks/bench_eval_gpu.md)
atomically and prints it.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
REPORTS = ROOT / "docs" / "results" / "benchmarks"  # the pages this script writes
sys.path.insert(0, str(ROOT))

from langdml.eval.synthetic import calibrated_embeddings, isotropic_embeddings  # noqa: E402

SHARED = (
    ("recall@1", "precision_at_1"),
    ("r_precision", "r_precision"),
    ("map@r", "mean_average_precision_at_r"),
)
KNN = ("recall", "map_r")


CALIBRATION = ROOT / "docs" / "results" / "embedding_spectrum.json"


def make_set(spec: dict):
    """The synthetic set a child spec names: "isotropic" (default) or "calibrated"."""
    if spec.get("data", "isotropic") == "calibrated":
        return calibrated_embeddings(spec["n"], spec["d"], tuple(spec["sizes"]), CALIBRATION)
    return isotropic_embeddings(spec["n"], spec["d"], tuple(spec["sizes"]), noise=spec["noise"])


def ours_knn(x, y):
    from langdml.eval import retrieval_metrics

    return retrieval_metrics(x, y, metric="cosine", include=KNN, device="cpu")


def pml_knn(xn, y):
    import faiss
    import torch
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import FaissKNN

    calc = AccuracyCalculator(
        include=tuple(p for _, p in SHARED),
        k="max_bin_count",
        device=torch.device("cpu"),
        knn_func=FaissKNN(index_init_fn=faiss.IndexFlatIP),
    )
    return calc.get_accuracy(xn, y)


def timed(fn, *args):
    gc.collect()
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def knn_case(n: int, d: int, sizes, noise: float, repeats: int) -> dict:
    from langdml.eval import l2_normalize

    wx, wy = isotropic_embeddings(
        2000, d, sizes, seed=1, noise=noise
    )  # warm-up: imports, first calls
    ours_knn(wx, wy), pml_knn(l2_normalize(wx), wy)
    x, y = isotropic_embeddings(n, d, sizes, noise=noise)
    xn = l2_normalize(x)  # exactly the array ours searches, so both see the same float32 input
    t_ours, t_pml = [], []
    ours = pml = None
    for r in range(repeats):
        order = ("ours", "pml") if r % 2 == 0 else ("pml", "ours")
        for who in order:
            if who == "ours":
                dt, ours = timed(ours_knn, x, y)
                t_ours.append(dt)
            else:
                dt, pml = timed(pml_knn, xn, y)
                t_pml.append(dt)
            print(f"  {n} x {d}: {who} {dt:.1f} s", flush=True)
    diff = max(abs(ours[a] - pml[b]) for a, b in SHARED)
    return {
        "n": n,
        "d": d,
        "classes": int(len(np.unique(y))),
        "repeats": repeats,
        "ours_s": statistics.median(t_ours),
        "pml_s": statistics.median(t_pml),
        "ratio": statistics.median(t_ours) / statistics.median(t_pml),
        "pair_ratios": [a / b for a, b in zip(t_ours, t_pml, strict=True)],
        "max_abs_diff": diff,
        "ours": ours,
    }


def clustering_case(n: int, d: int, sizes, noise: float) -> dict:
    import torch
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    from langdml.eval import l2_normalize, retrieval_metrics

    x, y = isotropic_embeddings(n, d, sizes, noise=noise)
    xn = l2_normalize(x)
    dt_ours, ours = timed(
        lambda: retrieval_metrics(x, y, include=("clustering",), seed=1234, device="cpu")
    )
    print(f"  clustering {n} x {d}: ours {dt_ours:.1f} s", flush=True)
    calc = AccuracyCalculator(include=("NMI", "AMI"), device=torch.device("cpu"))
    dt_pml, pml = timed(calc.get_accuracy, xn, y)
    print(f"  clustering {n} x {d}: PML {dt_pml:.1f} s", flush=True)
    return {
        "n": n,
        "d": d,
        "classes": int(len(np.unique(y))),
        "ours_s": dt_ours,
        "pml_s": dt_pml,
        "ratio": dt_ours / dt_pml,
        "ours": ours,
        "max_abs_diff": max(abs(ours["nmi"] - pml["NMI"]), abs(ours["ami"] - pml["AMI"])),
    }


def gpu_vs_cpu_case(
    n: int, d: int, sizes, noise: float, repeats: int, include=KNN, seed: int = 0
) -> dict:
    """Ours on the GPU vs ours on CPU faiss, same process, interleaved; metric differences."""
    import torch

    from langdml.eval import retrieval_metrics

    def run(device):
        m = retrieval_metrics(x, y, metric="cosine", include=include, device=device, seed=seed)
        if device != "cpu":
            torch.cuda.synchronize()
        return m

    x, y = isotropic_embeddings(2000, d, sizes, seed=1, noise=noise)
    run("cpu"), run("cuda")  # warm-up
    x, y = isotropic_embeddings(n, d, sizes, noise=noise)
    times: dict[str, list[float]] = {"cpu": [], "cuda": []}
    res = {}
    for r in range(repeats):
        for device in ("cuda", "cpu") if r % 2 == 0 else ("cpu", "cuda"):
            dt, res[device] = timed(run, device)
            times[device].append(dt)
            print(f"  {n} x {d} {'+'.join(include)}: {device} {dt:.2f} s", flush=True)
    return {
        "n": n,
        "d": d,
        "classes": int(len(np.unique(y))),
        "repeats": repeats,
        "what": "kNN metrics" if tuple(include) == KNN else "NMI + AMI",
        "cpu_s": statistics.median(times["cpu"]),
        "cuda_s": statistics.median(times["cuda"]),
        "max_abs_diff": max(abs(res["cpu"][k] - res["cuda"][k]) for k in res["cpu"]),
        "cpu": res["cpu"],
        "cuda": res["cuda"],
    }


def render_gpu(res: dict) -> str:
    import faiss
    import torch

    first = res["big"][0][1]
    lines = [
        "# Evaluation benchmark on a GPU",
        "",
        "Generated by `python scripts/benchmarks/bench_eval.py --device cuda` — "
        f"{first['gpu_name']}, "
        f"torch {torch.__version__}, faiss {faiss.__version__} "
        f"({'GPU' if hasattr(faiss, 'StandardGpuResources') else 'CPU only'}), "
        f"{os.cpu_count()} CPU cores, {_mem_gib():.0f} GiB RAM. Search backend: "
        f"{first['backend']}.",
        "",
        "Same synthetic data as `docs/results/benchmarks/bench_eval.md` (same generator and "
        "seeds), cosine metric, "
        '`retrieval_metrics(x, y, include=..., device="cuda")` in a fresh child process, timed '
        "from numpy input to the returned metrics (upload, exact search or k-means, metric "
        "bookkeeping). Clustering: 20 k-means iterations (the default) with as many clusters as "
        "classes; on the torch backend k-means is `langdml.eval.kmeans` (faiss's recipe, its "
        "own random stream).",
        "",
        "| case | N × d | classes | time | peak GPU memory | peak RSS | metrics |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for name, c in res["big"]:
        lines.append(
            f"| {name} | {c['n']:,} × {c['d']} | {c['classes']:,} | {_dur(c['seconds'])} | "
            f"{c['gpu_peak_bytes'] / 2**30:.2f} GiB | {c['peak_rss_kib'] / 2**20:.2f} GiB | "
            f"{fmt_metrics(c['metrics'])} |"
        )
    lines += [
        "",
        "GPU vs CPU faiss on this machine (same process, interleaved, medians):",
        "",
        "| case | N × d | classes | repeats | GPU s | CPU s | speed-up | largest metric "
        "difference | GPU | CPU |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for c in res["vs_cpu"]:
        lines.append(
            f"| {c['what']} | {c['n']:,} × {c['d']} | {c['classes']:,} | {c['repeats']} | "
            f"{c['cuda_s']:.2f} | {c['cpu_s']:.2f} | {c['cpu_s'] / c['cuda_s']:.1f}× | "
            f"{c['max_abs_diff']:.1e} | {fmt_metrics(c['cuda'])} | {fmt_metrics(c['cpu'])} |"
        )
    lines += [
        "",
        "kNN metrics differ by float rounding of the scores only (`langdml/eval/knn.py`); "
        "NMI/AMI differ by k-means' seed-to-seed variation (different random streams).",
        "",
    ]
    return "\n".join(lines)


def big_spec(n: int, d: int) -> dict:
    """A child's spec for the large synthetic sets: classes of 5-15, kNN metrics only."""
    return {"n": n, "d": d, "sizes": [5, 15], "noise": 1.4, "include": list(KNN)}


def child(spec: dict) -> None:
    """Runs in a subprocess: generate the data, time one retrieval_metrics call, report RSS."""
    import faiss  # noqa: F401  (libraries count in "RSS before", the call's own memory does not)
    import sklearn.metrics  # noqa: F401

    from langdml.eval import retrieval_metrics
    from langdml.eval.index_cache import IndexCache

    device = spec.get("device", "cpu")
    cuda = device.startswith("cuda")
    if cuda:  # imported (and the GPU initialised) before the clock starts
        import torch

        torch.zeros(1, device=device)
    x, y = make_set(spec)
    if spec.get("mmap"):  # read back memory-mapped: the call must not copy it whole
        path = Path(spec["mmap"])
        np.save(path, x)
        del x
        x = np.load(path, mmap_mode="r")
    rss_before = _status_kib("VmRSS:")
    sampler = _RssSampler() if spec.get("call_peak") else None
    search = spec.get("search", "exact")
    # An approximate search with a query sample is timed over ALL queries (the target's
    # measure); its metrics on the sampled queries (for Δ against exact on the same queries)
    # come from a second, untimed call that reuses the index the timed call built.
    sampled = spec.get("query_sample") if search != "exact" else None
    call = functools.partial(
        retrieval_metrics,
        x,
        y,
        metric="cosine",
        include=tuple(spec["include"]),
        device=device,
        kmeans_iters=spec.get("kmeans_iters", 20),
        search=search,
        search_params=spec.get("search_params"),
        index_cache=IndexCache() if sampled else None,
    )
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = usage.ru_utime + usage.ru_stime
    t0 = time.perf_counter()
    m = call(query_sample=None if sampled else spec.get("query_sample"))
    dt = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak = usage.ru_maxrss  # KiB on Linux
    call_peak = sampler.stop() if sampler else None
    if sampled:
        m, m_all = call(query_sample=sampled), m
    out = {
        "seconds": dt,
        # CPU seconds of the call (all threads): on a shared machine, time / cores is what it
        # would take with the cores to itself
        "cpu_s": usage.ru_utime + usage.ru_stime - cpu0,
        "peak_rss_kib": peak,
        "rss_before_kib": rss_before,
        "vmhwm_kib": _status_kib("VmHWM:"),
        "classes": int(len(np.unique(y))),
        "metrics": m,
    }
    if sampled:
        out["metrics_all"] = m_all
    if call_peak:
        out |= call_peak
    if cuda:
        from langdml.eval import resolve_backend

        out["gpu_peak_bytes"] = torch.cuda.max_memory_allocated()
        out["backend"] = str(resolve_backend(device))
        out["gpu_name"] = torch.cuda.get_device_name()
    print(json.dumps(out))


class _RssSampler:
    """The call's own memory peak: resets the kernel's peak-RSS mark (VmHWM) at start and samples
    anonymous vs file-backed RSS (a memory-mapped input's pages are file-backed: page cache the
    kernel can drop) every 50 ms in a thread (faiss releases the GIL)."""

    def __init__(self) -> None:
        import threading

        Path("/proc/self/clear_refs").write_text("5")  # Linux >= 4.0: VmHWM := VmRSS
        self.anon = self.file = self.total = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(0.05):
            anon, file = _status_kib("RssAnon:"), _status_kib("RssFile:")
            self.anon, self.file = max(self.anon, anon), max(self.file, file)
            self.total = max(self.total, anon + file)

    def stop(self) -> dict:
        self._done.set()
        self._thread.join()
        return {
            "call_vmhwm_kib": _status_kib("VmHWM:"),
            "call_anon_peak_kib": self.anon,
            "call_file_peak_kib": self.file,
        }


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return -1


def run_child(spec: dict) -> dict:
    print(f"  child: {spec['n']} x {spec['d']} include={spec['include']} ...", flush=True)
    load_before = os.getloadavg()[0]
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if proc.returncode != 0:
        sys.exit(f"child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    print(
        f"  child: {out['seconds']:.1f} s, peak RSS {out['peak_rss_kib'] / 2**20:.2f} GiB",
        flush=True,
    )
    return {**spec, **out, "load": (load_before, os.getloadavg()[0])}


def fmt_metrics(m: dict) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in m.items())


def render(res: dict, args) -> str:
    import faiss
    import pytorch_metric_learning
    import sklearn
    import torch

    flags = [
        f
        for f, on in (
            ("--quick", args.quick),
            ("--skip-1m", args.skip_1m),
            ("--skip-clustering", args.skip_clustering),
        )
        if on
    ]
    lines = [
        "# Evaluation benchmark: langdml vs pytorch-metric-learning",
        "",
        "Generated by `python scripts/benchmarks/bench_eval.py"
        f"{''.join(' ' + f for f in flags)}` — "
        f"faiss {faiss.__version__} (CPU), pytorch-metric-learning "
        f"{pytorch_metric_learning.__version__}, scikit-learn {sklearn.__version__}, "
        f"torch {torch.__version__}, {os.cpu_count()} CPU cores ({platform.machine()}), "
        f"{_mem_gib():.0f} GiB RAM.",
        "",
        "Synthetic clustered embeddings (class centres + Gaussian noise), cosine metric. Ours: "
        '`retrieval_metrics(x, y, metric="cosine", include=("recall", "map_r"))` — '
        "Recall@1/2/4/8, MAP@R, R-precision, including L2 normalisation and input checks. PML: "
        '`AccuracyCalculator(k="max_bin_count", knn_func=FaissKNN(IndexFlatIP))` on the same '
        "normalised float32 array (precision_at_1, r_precision, mean_average_precision_at_r). "
        "Same process, after a warm-up, interleaved (ours/PML then PML/ours); median wall time; "
        "ratio = ours / PML, below 1 is faster. Both spend most of their time in the same exact "
        "faiss search (same call shape, bit-identical neighbours), so the ratio measures the "
        "bookkeeping around it. Timings on a shared 2-core machine are noisy.",
        "",
        "## kNN metrics",
        "",
        "| N × d | classes | repeats | ours s | PML s | ratio ours/PML | per-pair ratios | "
        "max abs diff vs PML |",
        "|---|---:|---:|---:|---:|---:|---|---:|",
    ]
    for c in res["knn"]:
        lines.append(
            f"| {c['n']:,} × {c['d']} | {c['classes']:,} | {c['repeats']} | {c['ours_s']:.1f} | "
            f"{c['pml_s']:.1f} | **{c['ratio']:.2f}** | "
            f"{', '.join(f'{r:.2f}' for r in c['pair_ratios'])} | {c['max_abs_diff']:.1e} |"
        )
    lines.append("")
    for c in res["knn"]:
        lines.append(f"Our numbers at {c['n']:,} × {c['d']}: {fmt_metrics(c['ours'])}.")
    lines.append("")
    if res.get("clustering"):
        c = res["clustering"]
        lines += [
            "## Clustering (NMI, AMI), measured separately",
            "",
            "faiss k-means (20 iterations) on the query embeddings with as many clusters as "
            "classes, then NMI and AMI. Ours with seed=1234 (PML's faiss default), so both "
            "cluster identically. Ours computes AMI's expected mutual information over the "
            "distinct class/cluster *sizes*; sklearn (used by PML) loops over all "
            "class × cluster pairs. Both spend most of the time in k-means.",
            "",
            "| N × d | clusters | ours s | PML s | ratio ours/PML | max abs diff vs PML | ours |",
            "|---|---:|---:|---:|---:|---:|---|",
            f"| {c['n']:,} × {c['d']} | {c['classes']:,} | {c['ours_s']:.1f} | {c['pml_s']:.1f} | "
            f"**{c['ratio']:.2f}** | {c['max_abs_diff']:.1e} | {fmt_metrics(c['ours'])} |",
            "",
        ]
    if res.get("big"):
        lines += [
            "## Ours alone at scale",
            "",
            "One `retrieval_metrics` call in a fresh child process, started before anything "
            "else (PML is not run: its label bookkeeping alone would build a classes × N boolean "
            "matrix, ~100 GB here). Peak RSS = `ru_maxrss` of the child (VmHWM in brackets), "
            "including the input array and its generation; RSS before = after importing faiss, "
            "scikit-learn and langdml and generating the data, just before the call (torch is "
            "not imported).",
            "",
            "| case | N × d | classes | time | peak RSS | RSS before call | metrics |",
            "|---|---|---:|---:|---:|---:|---|",
        ]
        for name, c in res["big"]:
            lines.append(
                f"| {name} | {c['n']:,} × {c['d']} | {c['classes']:,} | {_dur(c['seconds'])} | "
                f"{c['peak_rss_kib'] / 2**20:.2f} GiB ({c['vmhwm_kib'] / 2**20:.2f}) | "
                f"{c['rss_before_kib'] / 2**20:.2f} GiB | {fmt_metrics(c['metrics'])} |"
            )
        lines.append("")
        for _, c in res["big"]:
            it = c.get("kmeans_iters")
            if it:
                # faiss k-means = it Lloyd iterations (one N x clusters search each) + our final
                # assignment search: it + 1 searches measured, 21 for the default 20 iterations.
                est = c["seconds"] * 21 / (it + 1)
                lines += [
                    f"Clustering cost at this size: {it} k-means iteration(s) plus the final "
                    f"assignment (and NMI/AMI) took {_dur(c['seconds'])}; each is an exact "
                    f"{c['n']:,} × {c['classes']:,}-centroid search, so the default 20 iterations "
                    f"would take about {_dur(est)} here (extrapolated, not measured). The "
                    'clustering part is optional: `include=("recall", "map_r")`.',
                    "",
                ]
    return "\n".join(lines) + "\n"


BIG_HEAD = "## Ours alone at scale"
APPROX_HEAD = "## Approximate search"


def _section(text: str, head: str) -> str:
    """The section of ``text`` starting at ``head``, up to the next ``## `` heading."""
    if head not in text:
        return ""
    start = text.index(head)
    end = text.find("\n## ", start + len(head))
    return text[start : end + 1 if end >= 0 else len(text)].rstrip("\n") + "\n"


def _kept_big_section(out: Path) -> str:
    """With --skip-1m, the 1M section of the previous report (it takes ~100 min on 2 cores)."""
    old = out.read_text() if out.is_file() else ""
    kept = _section(old, BIG_HEAD)
    if not kept:
        return ""
    if "(kept from the previous full run)" not in kept:
        kept = kept.replace(BIG_HEAD, BIG_HEAD + " (kept from the previous full run)", 1)
    return "\n" + kept


def _quoted_exact(out: Path, n: int, d: int) -> dict | None:
    """The exact kNN row at n x d of the existing report's 1M section, if there is one."""
    import re

    old = out.read_text() if out.is_file() else ""
    for line in _section(old, BIG_HEAD).splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 7 and cells[0] == "kNN metrics" and cells[1] == f"{n:,} × {d}":
            metrics = {k: float(v) for k, v in re.findall(r"([\w@]+) ([\d.]+)", cells[6])}
            secs = float(cells[3].split()[0]) * (60 if cells[3].endswith("min") else 1)
            rss = float(cells[4].split()[0])
            return {
                "seconds": secs,
                "peak_rss_kib": rss * 2**20,
                "metrics": metrics,
                "quoted": True,
                "n": n,
                "d": d,
                "load": None,
                "search": "exact",
                "search_params": {},
            }
    return None


def approx_rows(args, out: Path) -> list[dict]:
    """The approximate children at --approx-n x 128, after the exact reference (quoted or run)."""
    import tempfile

    configs = search_configs(args.search, args.search_param)  # checked before any child runs
    n, d = args.approx_n or (50_000 if args.quick else 1_000_000), 128
    spec = big_spec(n, d) | {"data": args.approx_data, "query_sample": args.approx_query_sample}
    exact = None
    if args.approx_data == "isotropic" and not args.approx_query_sample:
        exact = _quoted_exact(out, n, d)
    if exact is None:
        exact = {**run_child(spec), "quoted": False, "search": "exact", "search_params": {}}
    rows = [exact]
    with tempfile.TemporaryDirectory() as tmp:
        for search, params in configs:
            extra = {"mmap": str(Path(tmp) / "x.npy")} if args.approx_mmap else {}
            rows.append(run_child({**spec, **extra, "search": search, "search_params": params}))
            Path(tmp, "x.npy").unlink(missing_ok=True)
    return rows


def _merge_rows(section: str, previous: str) -> str:
    """``section`` plus the previous section's table rows at other sizes (ordered by N)."""

    def key(row: str) -> tuple[str, int]:  # (set, N): the table's order
        cells = row.split("|")
        return cells[1].strip(), int(cells[4].split("×")[0].replace(",", ""))

    def same(row: str) -> tuple[str, ...]:  # (set, N, search, parameters): a rerun replaces it
        return (*map(str, key(row)), *(c.strip() for c in row.split("|")[2:4]))

    def is_row(line: str) -> bool:
        return line.startswith("| ") and line.split("|")[4].strip()[:1].isdigit()

    lines = section.splitlines()
    rows = [i for i, line in enumerate(lines) if is_row(line)]
    done = {same(lines[i]) for i in rows}
    kept = [r for r in previous.splitlines() if is_row(r)]
    table = [lines[i] for i in rows] + [r for r in kept if same(r) not in done]
    table.sort(key=key)  # stable: a run's rows stay in their order
    return "\n".join(lines[: rows[0]] + table + lines[rows[-1] + 1 :]) + "\n"


def search_configs(search: str | None, items: list[str]) -> list[tuple[str, dict]]:
    """The approximate configurations of ``--search KIND --search-param KEY=VALUE ...`` (the
    syntax of ``langdml evaluate`` / ``langdml index``): that one, or IVF and HNSW defaults."""
    from langdml.errors import LangDMLError
    from langdml.eval.ann import check_search
    from langdml.eval.commands import parse_search_params

    try:
        params = parse_search_params(items)
        if search is None:
            if params:
                raise LangDMLError("--search-param needs --search ivf or --search hnsw")
            return [("ivf", {}), ("hnsw", {})]
        if search == "exact":
            raise LangDMLError(
                "--approx --search exact: expected ivf or hnsw (exact is the reference)"
            )
        check_search(search, params)
    except LangDMLError as exc:
        sys.exit(str(exc))
    return [(search, params)]


TABLE_HEAD = "| set | search |"


def _approx_prose(previous: str) -> tuple[list[str], list[str]]:
    """The hand-written text of the previous "Approximate search" section: what stands between
    its generated first paragraph and the table (the sets, the commands), and what follows the
    table (the reading against the target, how to choose the parameters). A rerun keeps both;
    they are edited in the docs page itself."""
    lines = previous.splitlines()
    heads = [i for i, line in enumerate(lines) if line.startswith(TABLE_HEAD)]
    if not heads:
        return [], []
    start = heads[0]
    end = start
    while end + 1 < len(lines) and lines[end + 1].startswith("|"):
        end += 1
    return lines[4:start], lines[end + 1 :]


def render_approx(rows: list[dict], previous: str = "") -> str:
    import faiss

    from langdml.eval.ann import check_search

    exact = rows[0]["metrics"]
    before, after = _approx_prose(previous)
    lines = [
        f'{APPROX_HEAD} (`search="ivf"` / `"hnsw"`)',
        "",
        "Generated by `python scripts/benchmarks/bench_eval.py --approx ...` (the commands below; "
        "a run replaces the rows of the same set, N, search and parameters) — faiss "
        f"{faiss.__version__} (CPU), {os.cpu_count()} CPU cores, {_mem_gib():.0f} GiB RAM. "
        "Child-process measurement as the 1M case above: "
        '`retrieval_metrics(x, y, include=("recall", "map_r"), search=..., search_params=..., '
        "query_sample=...)`; the time includes building the index (IVF: k-means on a seeded "
        "sample; HNSW: the graph) and `neighbor_recall` (1,000 seeded queries searched exactly as "
        "well). Δ = approximate − exact in points (× 100), exact on the same set and the same "
        "queries. Queries: all, or a seeded sample (`query_sample`; the same rows for every "
        "search of a set, every row still in the gallery), where exact over all is too slow. Load "
        "= the machine's 1-minute load average before → after the run; above 2 (the core count) "
        "other work shared the CPU and the wall time is pessimistic: CPU time (all threads) / 2 is "
        'what the call needs with both cores to itself. Input: `np.load(mmap_mode="r")` of the '
        "saved array where the command says `--approx-mmap`. The text around the table is "
        "written by hand in this page; a rerun keeps it.",
        "",
        *before,
        f"{TABLE_HEAD} parameters | N × d | queries | time | CPU time | peak RSS | "
        "recall@1 (Δ) | MAP@R (Δ) | neighbor recall | load |",
        "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        m = r["metrics"]
        if r["search"] == "exact":
            params = "quoted from the run above" if r.get("quoted") else "measured here"
        else:
            resolved = check_search(r["search"], r["search_params"]).resolve(r["n"])
            params = ", ".join(f"{k} {v:,}" for k, v in resolved.items() if k != "recall_queries")
        d1 = 100 * (m["recall@1"] - exact["recall@1"])
        dm = 100 * (m["map@r"] - exact["map@r"])
        load = f"{r['load'][0]:.1f} → {r['load'][1]:.1f}" if r.get("load") else ""
        queries = "all"
        if r.get("query_sample") and r["search"] == "exact":
            queries = f"{r['query_sample']:,} sampled (time: these only)"
        elif r.get("query_sample"):
            queries = f"all timed (R@1 {r['metrics_all']['recall@1']:.4f}); Δ on the sample"
        lines.append(
            f"| {r.get('data', 'isotropic')} | {r['search']} | {params} | {r['n']:,} × {r['d']} | "
            f"{queries} | {_dur(r['seconds'])} | {_dur(r['cpu_s']) if 'cpu_s' in r else ''} | "
            f"{r['peak_rss_kib'] / 2**20:.2f} GiB | "
            f"{m['recall@1']:.4f} ({d1:+.2f}) | {m['map@r']:.4f} ({dm:+.2f}) | "
            f"{m.get('neighbor_recall', 1.0):.4f} | {load} |"
        )
    lines += after or [""]
    return "\n".join(lines).rstrip("\n") + "\n"


def _dur(s: float) -> str:
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


def _mem_gib() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def _parser() -> argparse.ArgumentParser:
    from langdml.eval.commands import add_search_args

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    ap.add_argument("--skip-1m", action="store_true", help="skip the 1M x 128 case")
    ap.add_argument("--skip-clustering", action="store_true", help="skip NMI/AMI timing")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved repeats per kNN case")
    ap.add_argument(
        "--clustering-1m-iters",
        type=int,
        default=1,
        help="k-means iterations to time at 1M (0: skip)",
    )
    ap.add_argument(
        "--device",
        default="cpu",
        choices=("cpu", "cuda"),
        help="cuda: ours on the GPU only (1M case, and GPU vs CPU at 60k); no PML",
    )
    ap.add_argument("--approx", action="store_true", help="approximate-search rows only")
    ap.add_argument("--approx-n", type=int, default=None, help="rows for --approx (default 1M)")
    add_search_args(ap, default="--approx runs ivf and hnsw with their defaults")
    ap.add_argument("--approx-mmap", action="store_true", help="--approx input memory-mapped")
    ap.add_argument(
        "--approx-data",
        default="isotropic",
        choices=("isotropic", "calibrated"),
        help="--approx synthetic set (calibrated: spectra of trained embeddings)",
    )
    ap.add_argument(
        "--approx-query-sample",
        type=int,
        default=None,
        metavar="Q",
        help="--approx: metrics over Q seeded queries (exact run on the same queries)",
    )
    ap.add_argument(
        "--out", default=None, help="default docs/results/benchmarks/bench_eval[_gpu].md"
    )
    ap.add_argument("--child", help=argparse.SUPPRESS)
    return ap


def _run_approx(args) -> None:
    """--approx: the approximate rows, merged into the report's "Approximate search" section."""
    from langdml.io import atomic_write_text

    out = Path(args.out or REPORTS / "bench_eval.md")
    old = out.read_text() if out.is_file() else ""
    kept = _section(old, APPROX_HEAD)
    section = render_approx(approx_rows(args, out), kept)
    section = _merge_rows(section, kept)
    text = old.replace(kept, section) if kept else old.rstrip("\n") + "\n\n" + section
    atomic_write_text(out, text)
    print(section)


def main() -> None:
    args = _parser().parse_args()
    if args.child:
        child(json.loads(args.child))
        return

    from langdml.io import atomic_write_text

    noise = 2.4  # calibrated so Recall@1 is mid-range (~0.5) at 60k x 512
    if args.device == "cuda":
        n, d = (50_000, 32) if args.quick else (1_000_000, 128)
        spec = big_spec(n, d)
        cuda = {**spec, "device": "cuda"}
        res = {"big": [("kNN metrics", run_child(cuda))]}
        if not args.skip_clustering:
            cspec = {**cuda, "include": ["clustering"]}
            res["big"].append(("clustering (NMI, AMI)", run_child(cspec)))
        print("GPU vs CPU", flush=True)
        vs = (6000, 64) if args.quick else (60_000, 512)
        res["vs_cpu"] = [gpu_vs_cpu_case(*vs, (2, 9), noise, args.repeats)]
        if not args.skip_clustering:
            c = gpu_vs_cpu_case(*vs, (2, 9), noise, 1, ("clustering",), seed=1234)
            res["vs_cpu"].append(c)
        text = render_gpu(res)
        atomic_write_text(args.out or REPORTS / "bench_eval_gpu.md", text)
        print(text)
        return
    if args.approx:
        _run_approx(args)
        return
    if args.quick:
        knn_sizes, clus, big = [(6000, 64)], (6000, 64), (50_000, 32)
    else:
        knn_sizes = [(60_000, 512), (20_000, 512), (20_000, 128)]
        clus, big = (60_000, 512), (1_000_000, 128)
    res: dict = {"knn": []}
    if not args.skip_1m:
        # First, while this process is still small: a forked child's ru_maxrss also counts the
        # parent pages it inherited at fork time.
        spec = big_spec(*big)
        res["big"] = [("kNN metrics", run_child(spec))]
        if args.clustering_1m_iters > 0:
            it = args.clustering_1m_iters
            cspec = {**spec, "include": ["clustering"], "kmeans_iters": it}
            res["big"].append((f"clustering, {it} k-means iteration(s)", run_child(cspec)))
    for n, d in knn_sizes:
        print(f"kNN case {n} x {d}", flush=True)
        res["knn"].append(knn_case(n, d, (2, 9), noise, args.repeats))
    if not args.skip_clustering:
        print(f"clustering case {clus[0]} x {clus[1]}", flush=True)
        res["clustering"] = clustering_case(*clus, (2, 9), noise)
    text = render(res, args)
    out = Path(args.out or REPORTS / "bench_eval.md")
    if args.skip_1m and not args.quick:
        text += _kept_big_section(out)
    previous = _section(out.read_text(), APPROX_HEAD) if out.is_file() else ""
    if previous and not args.quick:  # --approx rows are run separately
        text += "\n" + previous
    atomic_write_text(out, text)
    print(text)


if __name__ == "__main__":
    main()
