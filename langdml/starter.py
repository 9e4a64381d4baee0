"""``langdml init SPEC -o my_experiment.yaml``: a commented starter config for a dataset and a
machine, with a split file beside it.

The config is what the README's "own images" section trains: on a CPU the packaged
EfficientNet-Lite0 trunk (offline) frozen, its features cached once, or its last N stages
fine-tuned on cached activations (``--trainable-blocks N``); with ``--gpu`` full fine-tuning of
DINOv2 ViT-S/14 at 224 px with AMP (hub weights). The split file (``langdml data split``'s
format) fixes the class-disjoint train / val / test classes, seeded, so every run of the
experiment sees the same protocol; the validation classes pick the best epoch. The batch fits
the number of train classes. The written config is validated before anything is written.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from langdml.errors import LangDMLError

_CPU = """\
# Starter experiment for {spec}: {classes} classes, {images} images.
# Written by `langdml init`; edit freely. Every key: the config reference of the docs.
#   train:  langdml train {config}
#   report: langdml report {run_dir} -o {run_dir}/report.html
name: {name}
seed: 0
data:
  dataset: {spec}
  split_file: {split}   # class-disjoint train/val/test classes (langdml data split)
model:
  backbone: tf_efficientnet_lite0
  weights: packaged        # EfficientNet-Lite0 ImageNet weights shipped in a package (offline)
  trainable_blocks: {blocks}      # 0: frozen trunk, features cached once (fast on a CPU);
                           # N: fine-tune the last N stages on cached activations; all: everything
  image_size: 128
  embedding_dim: 128
  head: linear
loss:
  base: {{name: multi_similarity}}
  regularizers: none       # language: guidance by the class names (text.text_model, offline MiniLM)
text:
  text_model: minilm
  prompts: ["a photo of a {{}}"]
optimizer:
  name: adamw
  lr: 0.001
  weight_decay: 0.0001
train:
  epochs: 30
  batch_size: {batch}          # {m} images of each of {per_batch} train classes per batch
  m_per_class: {m}
  scheduler: cosine
  device: cpu
  num_workers: 2
eval:
  every: 5
  best_metric: recall@1    # picked on the validation classes of the split file
output_dir: {run_dir}
"""

_GPU = """\
# Starter experiment for {spec} on a GPU: {classes} classes, {images} images.
# Written by `langdml init --gpu`; edit freely. Every key: the config reference of the docs.
# Full fine-tuning of DINOv2 ViT-S/14 (not a literature recipe; no accuracy is claimed for it).
# The weights come from the hub (timm/vit_small_patch14_dinov2.lvd142m); without hub access set
# model.weights to the downloaded model.safetensors.
#   train:  langdml train {config}
#   report: langdml report {run_dir} -o {run_dir}/report.html
name: {name}
seed: 0
data:
  dataset: {spec}
  split_file: {split}   # class-disjoint train/val/test classes (langdml data split)
model:
  backbone: vit_small_patch14_dinov2.lvd142m
  weights: hub              # or /path/to/model.safetensors
  preprocessing: pretrained # mean/std and interpolation of DINOv2's pretrained config
  image_size: 224
  crop_pct: 0.875           # eval: short side to 256, center crop 224
  trainable_blocks: {blocks}     # 2: the last two blocks only, on cached activations
  embedding_dim: 384
  head: linear
loss:
  base: {{name: multi_similarity}}
  regularizers: none        # language: guidance by the class names (text.text_model)
text:
  text_model: minilm
  prompts: ["a photo of a {{}}"]
optimizer:
  name: adamw
  lr: 0.00001
  weight_decay: 0.05
train:
  epochs: 40
  batch_size: {batch}           # {m} images of each of {per_batch} train classes per batch
  m_per_class: {m}
  scheduler: cosine
  warmup_epochs: 1
  device: cuda
  amp: true                 # bfloat16 autocast
  num_workers: 8
eval:
  every: 5
  best_metric: recall@1     # picked on the validation classes of the split file
output_dir: {run_dir}
"""


def write_starter(
    spec: str,
    out: str | Path,
    *,
    gpu: bool = False,
    trainable_blocks: int | str | None = None,
    seed: int = 0,
    cache_dir: str | None = None,
    force: bool = False,
) -> tuple[Path, Path]:
    """Write the starter config ``out`` and its split file (``<stem>_split.csv`` beside it);
    returns both paths. Existing files are kept unless ``force``."""
    from langdml.config import validate_config
    from langdml.data import class_splits, load_dataset
    from langdml.data.split_writer import write_split_file
    from langdml.io import atomic_write_text, check_writable

    out = Path(out)
    if out.suffix not in (".yaml", ".yml"):
        raise LangDMLError(f"-o {str(out)!r}: expected a .yaml file for the config")
    split = out.with_name(out.stem + "_split.csv")
    for path in (out, split):
        if path.exists() and not force:
            raise LangDMLError(f"{str(path)!r} exists; pass --force to replace it")
        check_writable(path, "-o")
    dataset = load_dataset(spec, cache_dir=cache_dir)
    classes = len(dataset.class_names)
    val = 0.1 if classes >= 20 else 0.0
    train_classes = len(class_splits(dataset, 0.5, val).train.class_names)
    m = 4 if gpu else 2
    per_batch = min(30 if gpu else 32, train_classes)
    if per_batch < 2:
        raise LangDMLError(
            f"{spec} has {classes} classes, {train_classes} of them for training; metric "
            "learning needs at least 2 train classes per batch (4 classes or more in all)"
        )
    blocks = trainable_blocks if trainable_blocks is not None else ("all" if gpu else 0)
    values = {
        "spec": spec,
        "classes": classes,
        "images": len(dataset),
        "config": str(out),
        "name": out.stem,
        "split": str(split),
        "blocks": blocks,
        "batch": m * per_batch,
        "m": m,
        "per_batch": per_batch,
        "run_dir": str(Path("runs") / out.stem),
    }
    text = (_GPU if gpu else _CPU).format(**values)
    validate_config(yaml.safe_load(text))  # a starter that does not load is our bug, not theirs
    write_split_file(dataset, split, seed=seed, train_fraction=0.5, validation_fraction=val)
    atomic_write_text(out, text)
    return out, split


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "init",
        help="write a commented starter config (and its split file) for a dataset and machine",
    )
    p.add_argument("spec", help="dataset spec, e.g. imagefolder:my_photos")
    p.add_argument("-o", "--output", default="my_experiment.yaml", help="the config to write")
    p.add_argument(
        "--gpu",
        action="store_true",
        help="a GPU fine-tuning config (DINOv2 ViT-S/14, 224 px, AMP) instead of a CPU one",
    )
    p.add_argument(
        "--trainable-blocks",
        default=None,
        metavar="N",
        help="model.trainable_blocks: 0 frozen, N the last N stages, all (default: 0 on a CPU, "
        "all with --gpu)",
    )
    p.add_argument("--seed", type=int, default=0, help="seeds the split file's class order")
    p.add_argument("--cache-dir", default=None, help="dataset cache (built benchmarks)")
    p.add_argument("--force", action="store_true", help="replace existing files")
    p.set_defaults(func=_init)


def _init(args: argparse.Namespace) -> int:
    blocks = args.trainable_blocks
    if blocks is not None and blocks != "all":
        from langdml.errors import check_int

        blocks = check_int(_as_int(blocks), "--trainable-blocks", low=0, meaning="stages")
    config, split = write_starter(
        args.spec,
        args.output,
        gpu=args.gpu,
        trainable_blocks=blocks,
        seed=args.seed,
        cache_dir=args.cache_dir,
        force=args.force,
    )
    print(f"wrote {config} and its split file {split}")
    print(f"next: langdml train {config}")
    return 0


def _as_int(value: str) -> int | str:
    try:
        return int(value)
    except ValueError:
        raise LangDMLError(
            f"--trainable-blocks {value!r}: expected 0, a number of stages or all"
        ) from None
