#!/usr/bin/env python
"""Training throughput of ``langdml train`` against the loop a researcher writes by hand.

The same experiment — EfficientNet-Lite0 (the packaged ImageNet weights), a linear 128-d head,
multi-similarity loss, AdamW 1e-3, batches of 64 with 4 images per class, a fixed number of
iterations per epoch, evaluated at the end on the held-out half of the classes (R@1) — is run
two ways on an image folder exported from the emoji benchmark:

* ``ours``: ``langdml.train.train`` with the matching config (frozen trunk: pooled features
  cached once; ``trainable_blocks: 2``: the frozen prefix's activations cached once; ``all``:
  every step runs the whole trunk);
* ``hand``: ``hand_loop`` below, written from the public APIs of timm (``create_model``),
  pytorch-metric-learning (``MultiSimilarityLoss``, ``MPerClassSampler``,
  ``AccuracyCalculator``) and torchvision (``ImageFolder``, ``DataLoader``), as a user would:
  the trunk runs on every batch in every mode (under ``no_grad`` for its frozen part).

Both keep the trunk's BatchNorm frozen (langdml's default ``model.frozen_bn``; the hand loop puts
every ``BatchNorm2d`` in eval mode without gradients), so in every mode they compute the same
network.

Both train on the eval transform (resize) in the frozen and partial modes — langdml's caches
hold the un-augmented view by default (``model.augment_views: 0``) — and on
RandomResizedCrop + flip in full fine-tuning. Each (mode, implementation, repeat) runs in a
fresh child process (peak RSS = that process's ``ru_maxrss``), with a cold feature cache;
implementations alternate order every repeat; medians over repeats. Reported per mode: wall time
of the whole run (set-up, cache, training, evaluation), the median epoch time after the first
epoch, images/s of training, peak RSS, final R@1, and the ratio ours / hand.

    python scripts/benchmarks/bench_train.py          # CPU: results/benchmarks/bench_train.md
    python scripts/benchmarks/bench_train.py --quick   # smoke run, prints only
    python scripts/benchmarks/bench_train.py --device cuda --image-size 224 --amp \\
        --channels-last --out docs/results/benchmarks/bench_train_gpu.md   # the GPU variant
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

MODES = {"frozen": 0, "partial": 2, "full": "all"}
MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)  # tf_efficientnet_lite0's pretrained config


def export_folder(dest: Path, n_classes: int, cache: Path) -> Path:
    """The first ``n_classes`` emoji classes as an image folder (``000.name/style.png``), so both
    implementations read the same files; natural folder order puts the first half in train."""
    from langdml.data import load_dataset
    from langdml.data.emoji import build_emoji

    if (dest / ".done").is_file():
        return dest
    build_emoji(cache_dir=cache)  # a no-op when built
    ds = load_dataset("emoji", cache_dir=cache)
    dest.mkdir(parents=True, exist_ok=True)
    for i in range(len(ds)):
        label = int(ds.labels[i])
        if label >= n_classes:
            continue
        folder = dest / f"{label:04d}"
        folder.mkdir(exist_ok=True)
        ds.image(i).save(folder / f"{ds.extras['style'][i]}.png")
    (dest / ".done").write_text("")
    return dest


def ours(a: argparse.Namespace, cache: Path, out: Path) -> dict:
    from langdml.config import load_config
    from langdml.train import train

    cfg = load_config(
        None,
        {
            "seed": a.seed,
            "data.dataset": f"imagefolder:{a.folder}",
            "data.cache_dir": str(cache),
            "model.weights": "packaged",
            "model.trainable_blocks": MODES[a.mode],
            "model.image_size": a.image_size,
            "model.embedding_dim": 128,
            "loss.base.name": "multi_similarity",
            "loss.regularizers": "none",
            "optimizer.name": "adamw",
            "optimizer.lr": 1e-3,
            "train.epochs": a.epochs,
            "train.iterations_per_epoch": a.iters,
            "train.batch_size": a.batch,
            "train.m_per_class": a.m,
            "train.scheduler": "none",
            "train.device": a.device,
            "train.amp": a.amp,
            "train.channels_last": a.channels_last,
            "train.num_workers": a.workers,
            "train.progress": False,
            "eval.every": a.epochs,
            "eval.clustering": False,
            "output_dir": str(out),
        },
    )
    t0 = time.perf_counter()
    result = train(cfg)
    wall = time.perf_counter() - t0
    log = (Path(result.run_dir) / "log.jsonl").read_text().splitlines()
    epochs = [float(json.loads(line)["seconds"]) for line in log if line.strip()]
    return {"wall": wall, "epochs": epochs, "r1": float(result.metrics["recall@1"])}


def hand_loop(a: argparse.Namespace) -> dict:
    """The hand-written loop: timm + PML + torchvision, nothing from langdml but the weights."""
    import timm
    import torch
    import torchvision.transforms as T
    from pytorch_metric_learning import losses, samplers
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from torch.utils.data import DataLoader, Subset
    from torchvision.datasets import ImageFolder

    from langdml.models.efficientnet_lite import load_packaged_state_dict

    t0 = time.perf_counter()
    torch.manual_seed(a.seed)
    device = torch.device(a.device)
    interp = T.InterpolationMode.BICUBIC
    norm = [T.ToTensor(), T.Normalize(MEAN, STD)]
    resize = T.Compose([T.Resize((a.image_size, a.image_size), interpolation=interp), *norm])
    augment = T.Compose(
        [
            T.RandomResizedCrop(a.image_size, scale=(0.35, 1.0), interpolation=interp),
            T.RandomHorizontalFlip(),
            *norm,
        ]
    )
    full = ImageFolder(a.folder)
    half = len(full.classes) // 2
    train_rows = [i for i, y in enumerate(full.targets) if y < half]
    test_rows = [i for i, y in enumerate(full.targets) if y >= half]
    train_tf = augment if a.mode == "full" else resize
    train_set = Subset(ImageFolder(a.folder, transform=train_tf), train_rows)
    labels = [full.targets[i] for i in train_rows]
    sampler = samplers.MPerClassSampler(
        labels, a.m, batch_size=a.batch, length_before_new_iter=a.iters * a.batch
    )
    pin = device.type == "cuda"
    loader = DataLoader(
        train_set,
        batch_size=a.batch,
        sampler=sampler,
        num_workers=a.workers,
        pin_memory=pin,
        drop_last=True,
        persistent_workers=a.workers > 0,
    )
    trunk = timm.create_model("tf_efficientnet_lite0", num_classes=0)
    trunk.load_state_dict(load_packaged_state_dict(), strict=False)
    head = torch.nn.Linear(trunk.num_features, 128)
    trunk.requires_grad_(False)
    if a.mode == "partial":
        for part in (trunk.blocks[-2:], trunk.conv_head, trunk.bn2):
            part.requires_grad_(True)
    elif a.mode == "full":
        trunk.requires_grad_(True)
    # Frozen BatchNorm, as langdml's default (model.frozen_bn) and the DML literature: running
    # statistics and affine parameters fixed, in every mode.
    norms = [m for m in trunk.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for norm_layer in norms:
        norm_layer.requires_grad_(False)
    model = torch.nn.Sequential(trunk, head).to(device)
    if a.channels_last:
        model = model.to(memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-4)
    loss_fn = losses.MultiSimilarityLoss()
    prefix = list(trunk.blocks[:-2]) if a.mode == "partial" else []

    def set_train() -> None:
        model.train()
        if a.mode == "frozen":
            trunk.eval()
        for block in [trunk.conv_stem, *prefix, *norms]:
            block.eval()

    epochs = []
    for _ in range(a.epochs):
        set_train()
        start = time.perf_counter()
        for x, y in loader:
            x = x.to(device, non_blocking=pin)
            if a.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, enabled=a.amp, dtype=torch.bfloat16):
                emb = head(trunk(x))
            loss = loss_fn(emb.float(), y.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        epochs.append(time.perf_counter() - start)
    model.eval()
    test = DataLoader(
        Subset(ImageFolder(a.folder, transform=resize), test_rows),
        batch_size=128,
        num_workers=a.workers,
    )
    parts, ys = [], []
    with torch.no_grad():
        for x, y in test:
            parts.append(model(x.to(device)).float().cpu())
            ys.append(y)
    emb, y = torch.cat(parts), torch.cat(ys)
    acc = AccuracyCalculator(include=("precision_at_1",), k=1)
    r1 = acc.get_accuracy(emb, y, emb, y, ref_includes_query=True)["precision_at_1"]
    return {"wall": time.perf_counter() - t0, "epochs": epochs, "r1": float(r1)}


def worker(a: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        if a.impl == "ours":
            out = ours(a, Path(tmp) / "cache", Path(tmp) / "runs")
        else:
            out = hand_loop(a)
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(out))


def trial(a: argparse.Namespace, impl: str, mode: str) -> dict:
    argv = [sys.executable, __file__, "--worker", impl, "--mode", mode, "--folder", str(a.folder)]
    for key in ("epochs", "iters", "batch", "m", "image_size", "seed", "workers", "threads"):
        argv += [f"--{key.replace('_', '-')}", str(getattr(a, key))]
    argv += ["--device", a.device] + ["--amp"] * a.amp + ["--channels-last"] * a.channels_last
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{impl}/{mode} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][7:])


def summarise(runs: list[dict], images_per_epoch: int) -> dict:
    steady = [statistics.median(r["epochs"][1:] or r["epochs"]) for r in runs]
    epoch = statistics.median(steady)
    return {
        "wall": statistics.median(r["wall"] for r in runs),
        "epoch": epoch,
        "images_s": images_per_epoch / epoch,
        "rss": statistics.median(r["peak_rss_mib"] for r in runs),
        "r1": statistics.median(r["r1"] for r in runs),
    }


def table(a: argparse.Namespace, results: dict, load: tuple[float, float]) -> str:
    head = (
        "| mode | impl | run wall s | epoch s | train img/s | peak RSS MiB | R@1 |\n"
        "|---|---|---:|---:|---:|---:|---:|\n"
    )
    rows, ratios = [], []
    for mode in a.modes:
        o, h = results[mode]["ours"], results[mode]["hand"]
        for name, s in (("langdml", o), ("hand-written", h)):
            rows.append(
                f"| {mode} | {name} | {s['wall']:.1f} | {s['epoch']:.2f} | {s['images_s']:.0f} "
                f"| {s['rss']:.0f} | {100 * s['r1']:.2f} |"
            )
        ratios.append(
            f"| {mode} | {o['wall'] / h['wall']:.2f} | {o['epoch'] / h['epoch']:.2f} "
            f"| {o['rss'] / h['rss']:.2f} |"
        )
    return (
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch threads {a.threads}, device {a.device}; load average before / after "
        f"{load[0]:.1f} / {load[1]:.1f}. Emoji image folder, {a.n_classes} classes "
        f"(half train, half test), {a.image_size} px, batch {a.batch} ({a.m} per class), "
        f"{a.iters} iterations x {a.epochs} epochs, {a.repeats} interleaved repeats, medians; "
        f"workers {a.workers}, AMP {a.amp}, channels-last (both) {a.channels_last}.\n\n"
        + head
        + "\n".join(rows)
        + "\n\nRatios langdml / hand-written (below 1: langdml faster or smaller):\n\n"
        "| mode | run wall | epoch | peak RSS |\n|---|---:|---:|---:|\n" + "\n".join(ratios) + "\n"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", choices=["ours", "hand"], default=None)
    p.add_argument("--mode", choices=list(MODES), default="frozen")
    p.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    p.add_argument("--folder", type=Path, default=None)
    p.add_argument("--n-classes", type=int, default=400)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--iters", type=int, default=12)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--m", type=int, default=4)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", action="store_true")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="a tiny smoke run, prints only")
    p.add_argument("--out", type=Path, default=ROOT / "docs/results/benchmarks/bench_train.md")
    a = p.parse_args()
    if a.worker:
        a.impl = a.worker
        worker(a)
        return
    if a.quick:
        a.n_classes, a.epochs, a.iters, a.batch, a.repeats = 40, 2, 2, 16, 1
        a.modes = list(MODES)
    if a.folder is None:
        where = ROOT / "cache" / "bench_train"
        a.folder = export_folder(where / f"emoji{a.n_classes}", a.n_classes, where / "cache")
    load0 = os.getloadavg()[0]
    runs: dict = {m: {"ours": [], "hand": []} for m in a.modes}
    for rep in range(a.repeats):
        for mode in a.modes:
            order = ("ours", "hand") if rep % 2 == 0 else ("hand", "ours")
            for impl in order:
                r = trial(a, impl, mode)
                runs[mode][impl].append(r)
                epochs = [round(e, 2) for e in r["epochs"]]
                print(f"rep {rep} {mode} {impl} wall {r['wall']:.1f}s epochs {epochs}", flush=True)
    per_epoch = a.iters * a.batch
    results = {m: {k: summarise(v, per_epoch) for k, v in d.items()} for m, d in runs.items()}
    text = table(a, results, (load0, os.getloadavg()[0]))
    print(text)
    if not a.quick:
        from langdml.io import atomic_write_text

        doc = "# Training throughput: langdml train vs a hand-written loop\n\n"
        doc += "Written by `scripts/benchmarks/bench_train.py`; rerun it to refresh.\n\n" + text
        atomic_write_text(a.out, doc)
        atomic_write_text(a.out.with_suffix(".json"), json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
