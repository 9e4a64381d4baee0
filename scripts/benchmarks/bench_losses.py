#!/usr/bin/env python
"""Forward+backward time and peak memory of langdml.losses vs pytorch-metric-learning (PML).

Both implementations run on the same inputs (B L2-unnormalised embeddings of dimension d, 4
samples per class, proxies copied from ours into PML's) in the same process. Timing: one warm-up
call each, then `repeats` interleaved calls (the order of the two alternates every repeat) and
the median of each; the ratio is median(ours) / median(PML).

Beside them, in the same rotation (ours, PML and the floor take turns being first), the loss's
floor: the matrix products and row norms any implementation of its formula must compute at that
shape (scripts/benchmarks/loss_floor.py says exactly what counts: the forward similarity
product; the two backward products only where the gradient is dense for every input, i.e. the
softmax and log-sum-exp losses; the row norms of the batch and of trained proxies; no
elementwise work), run on random float32 operands of those shapes. `ours/floor` is
median(ours) / median(floor): 1 is the bound, and the rest is everything else a loss does.

Peak memory, CPU: torch's CPU allocator does not track a peak and tracemalloc does not see it,
so every (loss, implementation, B) runs in a fresh child process (forked from a forkserver that
has torch and PML preloaded) with glibc's mmap threshold pinned to 64 KiB, so large blocks go
back to the OS on free and RSS follows live tensors. In the child: a warm-up call, then the
kernel's peak-RSS counter is reset (/proc/self/clear_refs), one call runs, and we report
VmHWM - VmRSS(before): the extra resident memory of one forward+backward. CUDA: the
allocator's max_memory_allocated over one call, minus what was allocated before it.

    python scripts/benchmarks/bench_losses.py          # full run
    python scripts/benchmarks/bench_losses.py --quick  # tiny smoke run, prints only
    python scripts/benchmarks/bench_losses.py --sizes 512 --cases proxy_nca npair  # some losses

The full run writes docs/results/benchmarks/bench_losses.md.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from langdml import losses as ours  # noqa: E402
from langdml.io import atomic_write_text  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loss_floor import Floor, case_floor  # noqa: E402

TARGETS = ("multi_similarity", "triplet", "contrastive", "proxy_anchor")
# Losses with class weights: PML keeps them as a (d, C) ``W`` (SoftTriple: ``fc``), ours as the
# (C, d) ``proxies``; copied transposed.
CLASS_WEIGHT_CASES = {
    "arcface": ("ArcFaceLoss", "W"),
    "cosface": ("CosFaceLoss", "W"),
    "normalized_softmax": ("NormalizedSoftmaxLoss", "W"),
    "soft_triple": ("SoftTripleLoss", "fc"),
}
# Cross-batch memory around a pair loss: the queue holds XBM_MEMORY embeddings (or the batch).
XBM_CASES = {"xbm_multi_similarity": "MultiSimilarityLoss", "xbm_contrastive": "ContrastiveLoss"}
XBM_MEMORY = 1024
ALL_CASES = (
    TARGETS
    + ("proxy_nca", "npair", "margin", "circle")
    + tuple(CLASS_WEIGHT_CASES)
    + tuple(XBM_CASES)
)
PER_CLASS = 4


def build(
    name: str, num_classes: int, dim: int, device: str, batch_size: int = 0
) -> tuple[torch.nn.Module, torch.nn.Module]:
    from pytorch_metric_learning import losses as pml

    torch.manual_seed(0)
    if name == "contrastive":
        pair = ours.ContrastiveLoss(), pml.ContrastiveLoss()
    elif name == "triplet":
        pair = ours.TripletLoss(), pml.TripletMarginLoss()
    elif name == "multi_similarity":
        pair = ours.MultiSimilarityLoss(), pml.MultiSimilarityLoss()
    elif name == "npair":
        pair = ours.NPairLoss(), pml.NPairsLoss()
    elif name == "proxy_anchor":
        pair = ours.ProxyAnchorLoss(num_classes, dim), pml.ProxyAnchorLoss(num_classes, dim)
    elif name == "proxy_nca":
        pair = ours.ProxyNCALoss(num_classes, dim), pml.ProxyNCALoss(num_classes, dim)
    elif name == "margin":
        pair = ours.MarginLoss(), pml.MarginLoss()
    elif name == "circle":
        pair = ours.CircleLoss(), pml.CircleLoss()
    elif name in CLASS_WEIGHT_CASES:
        cls_name, weight = CLASS_WEIGHT_CASES[name]
        pair = getattr(ours, cls_name)(num_classes, dim), getattr(pml, cls_name)(num_classes, dim)
    elif name in XBM_CASES:
        inner = XBM_CASES[name]
        memory = max(XBM_MEMORY, batch_size)
        pair = (
            ours.CrossBatchMemory(getattr(ours, inner)(), dim, memory_size=memory),
            pml.CrossBatchMemory(getattr(pml, inner)(), dim, memory_size=memory),
        )
    else:
        raise SystemExit(f"unknown case {name!r}; expected one of {ALL_CASES}")
    a, b = (m.to(device) for m in pair)
    if hasattr(a, "proxies"):
        with torch.no_grad():
            if name in CLASS_WEIGHT_CASES:
                getattr(b, CLASS_WEIGHT_CASES[name][1]).copy_(a.proxies.T)
            else:
                b.proxies.copy_(a.proxies)
    return a, b


def inputs(
    batch: int, dim: int, num_classes: int, device: str
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(batch)
    classes = torch.randperm(num_classes, generator=g)[: batch // PER_CLASS]
    labels = classes.repeat_interleave(PER_CLASS)
    x = torch.randn(len(labels), dim, generator=g)
    return x.to(device).requires_grad_(True), labels.to(device)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def step(loss: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    x.grad = None
    for p in loss.parameters():
        p.grad = None
    loss(x, y).backward()


def time_case(name: str, batch: int, dim: int, device: str, repeats: int) -> dict[str, float]:
    """Medians of wall time ("ours", "pml", "floor") and of process CPU time ("ours_cpu", ...);
    the three run interleaved, their order rotating every repeat."""
    num_classes = max(512, batch // PER_CLASS)
    mine, theirs = build(name, num_classes, dim, device, batch)
    x, y = inputs(batch, dim, num_classes, device)
    operands: dict[Floor, dict[str, torch.Tensor]] = {}

    def floor_call() -> None:
        floor.run(operands[floor])

    impls = {"ours": lambda: step(mine, x, y), "pml": lambda: step(theirs, x, y)}
    impls["floor"] = floor_call
    keys = tuple(impls)
    times: dict[str, list[float]] = {k + s: [] for k in keys for s in ("", "_cpu")}
    for r in range(repeats + 1):  # repeat 0 is the warm-up
        floor = case_floor(name, mine, x, y)  # ours' state before its call (memory fill)
        if floor not in operands:
            operands[floor] = floor.operands(device)
        for key in keys[r % 3 :] + keys[: r % 3]:
            sync(device)
            wall, cpu = time.perf_counter(), time.process_time()
            impls[key]()
            sync(device)
            if r:
                times[key].append(time.perf_counter() - wall)
                times[key + "_cpu"].append(time.process_time() - cpu)
    return {k: statistics.median(v) for k, v in times.items()}


def _status_kib(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.M).group(1))


def peak_extra_bytes(loss: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, device: str) -> int:
    step(loss, x, y)  # warm-up: lazy initialisation is not part of the loss's footprint
    x.grad = None
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step(loss, x, y)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = _status_kib("VmRSS")
    step(loss, x, y)
    return max(0, _status_kib("VmHWM") - before) * 1024


def _memory_task(name: str, impl: str, batch: int, dim: int, device: str, threads: int) -> int:
    torch.set_num_threads(threads)
    num_classes = max(512, batch // PER_CLASS)
    mine, theirs = build(name, num_classes, dim, device, batch)
    x, y = inputs(batch, dim, num_classes, device)
    return peak_extra_bytes(mine if impl == "ours" else theirs, x, y, device)


def measure_memory(batch: int, dim: int, device: str, names: list[str]) -> dict:
    """Each (loss, implementation) in a fresh child forked from a preloaded forkserver, so no
    case inherits another's heap (a fragmented heap hides later allocations from RSS)."""
    os.environ.update(MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "pytorch_metric_learning.losses", "langdml.losses"])
    tasks = [
        (n, impl, batch, dim, device, torch.get_num_threads())
        for n in names
        for impl in ("ours", "pml")
    ]
    with ctx.Pool(1, maxtasksperchild=1) as pool:
        peaks = pool.starmap(_memory_task, tasks, chunksize=1)
    out: dict[str, dict[str, int]] = {}
    for (name, impl, *_), peak in zip(tasks, peaks, strict=True):
        out.setdefault(name, {})[impl] = peak
    return out


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}" if seconds < 10 else f"{seconds:.1f}e3"


def fmt_floor_ms(seconds: float) -> str:
    """The floor is often well under a millisecond at small shapes: two decimals there."""
    return f"{seconds * 1e3:.2f}" if seconds < 1e-3 else fmt_ms(seconds)


def _load() -> str:
    try:
        return "/".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def run(args: argparse.Namespace) -> str:
    from pytorch_metric_learning import __version__ as pml_version

    devices = args.devices or (
        ["cpu"] + (["cuda"] if torch.cuda.is_available() and not args.cpu_only else [])
    )
    if "cuda" in devices and not torch.cuda.is_available():
        sys.exit("--devices cuda: torch sees no CUDA GPU")
    load_before = _load()
    rows = []
    for device in devices:
        for batch in args.sizes:
            repeats = args.repeats if batch < 2048 else max(1, args.repeats // 3)
            memory = {} if args.no_memory else measure_memory(batch, args.dim, device, args.cases)
            for threads in args.threads if device == "cpu" else [torch.get_num_threads()]:
                torch.set_num_threads(threads)
                for name in args.cases:
                    t = time_case(name, batch, args.dim, device, repeats)
                    m = memory.get(name, {})
                    rows.append((device, threads, name, batch, repeats, t, m))
                    line = f"{device} threads={threads} {name:>16} B={batch:<5} "
                    line += f"ours {fmt_ms(t['ours'])} ms  pml {fmt_ms(t['pml'])} ms  "
                    line += (
                        f"ratio {t['ours'] / t['pml']:.2f}  floor {fmt_floor_ms(t['floor'])} ms  "
                    )
                    line += f"ours/floor {t['ours'] / t['floor']:.2f}"
                    if m:
                        line += (
                            f"  peak MiB ours {m['ours'] / 2**20:.1f} pml {m['pml'] / 2**20:.1f}"
                        )
                    print(line, file=sys.stderr, flush=True)
    cpu = platform.processor() or platform.machine()
    command = " ".join(["python scripts/benchmarks/bench_losses.py", *args.argv])
    lines = [
        "# Loss benchmark: langdml vs pytorch-metric-learning",
        "",
        f"Generated by `{command}` — torch {torch.__version__}, pytorch-metric-learning "
        f"{pml_version}, {os.cpu_count()} CPU cores ({cpu})"
        + (f", CUDA {torch.cuda.get_device_name()}" if "cuda" in devices else "")
        + f"; load average (1/5/15 min) {load_before} before, {_load()} after.",
        "",
        f"Forward+backward of one batch: B embeddings of dimension d = {args.dim}, "
        f"{PER_CLASS} per class, default hyperparameters, proxy and class-weight losses with "
        "max(512, B/4) classes and PML's proxies / class weights copied from ours, xbm_* rows "
        f"a cross-batch memory of max({XBM_MEMORY}, B) entries around the pair loss (filling "
        "over the repeats). Wall: median wall time of "
        "interleaved repeats after one warm-up each (fewer repeats at B = 2048); CPU: median "
        "process CPU time of the same calls (all threads), less sensitive to other processes "
        "on a shared machine; ratios are ours / PML, below 1 is better. Peak: extra memory of "
        "one call (CPU: peak-RSS growth in a fresh child process with glibc's mmap threshold "
        "pinned; CUDA: allocator peak). A load average above the core count means the wall "
        "times are inflated by other processes; compare ratios, not absolute times. "
        "Floor: the median wall time, timed in the same rotation, of the matrix products and "
        "row norms any implementation of the loss's formula must compute at that shape "
        "(scripts/benchmarks/loss_floor.py): the forward similarity product; the backward "
        "products only for losses whose gradient is dense for every input (softmax and "
        "log-sum-exp losses; hinge and mined losses, the xbm_* rows included, count the "
        "forward product alone); row norms of the batch and of trained proxies / class "
        "weights; no elementwise work. ours/floor is ours / floor (wall), 1 is the bound.",
        "",
        "| device | threads | loss | B | repeats | ours wall ms | PML wall ms | wall ratio "
        "| floor ms | ours/floor "
        "| ours CPU ms | PML CPU ms | CPU ratio | ours peak MiB | PML peak MiB | memory ratio |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for device, threads, name, batch, repeats, t, m in rows:
        mem = ["–", "–", "–"]
        if m:
            ratio = f"{m['ours'] / m['pml']:.2f}" if m["pml"] > 0 else "–"
            mem = [f"{m['ours'] / 2**20:.1f}", f"{m['pml'] / 2**20:.1f}", ratio]
        cpu_ratio = f"{t['ours_cpu'] / t['pml_cpu']:.2f}" if t["pml_cpu"] > 0 else "–"
        cells = [
            device,
            str(threads),
            name,
            str(batch),
            str(repeats),
            fmt_ms(t["ours"]),
            fmt_ms(t["pml"]),
            f"{t['ours'] / t['pml']:.2f}",
            fmt_floor_ms(t["floor"]),
            f"{t['ours'] / t['floor']:.2f}",
            fmt_ms(t["ours_cpu"]),
            fmt_ms(t["pml_cpu"]),
            cpu_ratio,
            *mem,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, few repeats, no file")
    parser.add_argument("--sizes", type=int, nargs="+", default=None)
    parser.add_argument("--dim", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--cases", nargs="+", default=list(ALL_CASES), choices=ALL_CASES)
    parser.add_argument("--cpu-only", action="store_true", help="skip CUDA even if available")
    parser.add_argument(
        "--devices", nargs="+", choices=("cpu", "cuda"), help="default: cpu, and cuda if present"
    )
    parser.add_argument(
        "--threads", type=int, nargs="+", default=None, help="torch CPU thread counts to time"
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory children")
    parser.add_argument("--out", type=Path, default=None, help="markdown output file")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.threads = args.threads or [torch.get_num_threads()]
    if args.quick:
        args.sizes = args.sizes or [16, 64]
        args.dim = args.dim or 32
        args.repeats = args.repeats or 3
    else:
        args.sizes = args.sizes or [128, 512, 2048]
        args.dim = args.dim or 512
        args.repeats = args.repeats or 9
        args.out = args.out or ROOT / "docs" / "results" / "benchmarks" / "bench_losses.md"
    table = run(args)
    print(table, end="")
    if args.out is not None:
        atomic_write_text(args.out, table)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
