"""CUDA paths: every loss and miner on the GPU equals the CPU (value and gradients), losses under
bf16 autocast stay fp32, exact GPU search equals CPU faiss. Skipped where no GPU is visible (CI);
run on a GPU machine by scripts/tools/gpu_check.sh."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from langdml.eval import knn_search, resolve_backend, retrieval_metrics
from langdml.losses import build_loss
from langdml.losses.registry import LOSSES, MINERS

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CLASSES, DIM = 24, 32


def batch(seed=0, n=96):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % CLASSES
    return torch.randn(n, DIM, generator=g), y[torch.randperm(n, generator=g)]


def value_and_grads(loss, x, y):
    x = x.clone().requires_grad_(True)
    value = loss(x, y)
    value.backward()
    grads = [x.grad] + [p.grad for p in loss.parameters()]
    return value.detach().cpu(), [g.cpu() for g in grads if g is not None]


def spec(base):
    text = torch.randn(CLASSES, 16, generator=torch.Generator().manual_seed(9))
    cfg = {
        "base": base,
        "regularizers": [
            {"name": "language", "weight": 2.0},
            {"name": "direction", "form": "orthogonal"},
        ],
    }
    return cfg, text


@pytest.mark.parametrize(
    "base",
    sorted(n for n, e in LOSSES.items() if e.kind in ("pair", "proxy"))
    + [{"name": "triplet", "miner": m} for m in sorted(MINERS)],
    ids=str,
)
def test_loss_on_cuda_equals_cpu(base):
    cfg, text = spec(base)
    torch.manual_seed(0)
    cpu = build_loss(cfg, CLASSES, DIM, text)
    gpu = copy.deepcopy(cpu).cuda()
    x, y = batch()
    v1, g1 = value_and_grads(cpu, x, y)
    v2, g2 = value_and_grads(gpu, x.cuda(), y.cuda())
    assert len(g1) == len(g2)
    if isinstance(base, dict) and base["miner"] == "distance_weighted":
        # samples negatives from the device's own random stream: only the run itself is compared
        assert torch.isfinite(v2) and all(torch.isfinite(g).all() for g in g2)
        return
    torch.testing.assert_close(v2, v1, rtol=1e-4, atol=1e-5)
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-5 * max(1.0, float(a.abs().max())))


@pytest.mark.parametrize("base", ["multi_similarity", "proxy_anchor"])
def test_loss_of_bf16_autocast_embeddings_is_fp32(base):
    """The trainer's AMP step: the model runs under bf16 autocast, the loss on .float()."""
    cfg, text = spec(base)
    loss = build_loss(cfg, CLASSES, DIM, text).cuda()
    head = torch.nn.Linear(DIM, DIM).cuda()
    x, y = batch(1)
    x, y = x.cuda(), y.cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        z = head(x)
    assert z.dtype == torch.bfloat16
    value = loss(z.float(), y)
    assert value.dtype == torch.float32 and torch.isfinite(value)
    value.backward()
    assert head.weight.grad.dtype == torch.float32 and torch.isfinite(head.weight.grad).all()
    exact = build_loss(cfg, CLASSES, DIM, text).cuda()
    exact.load_state_dict(loss.state_dict())
    # bf16 keeps 8 bits of mantissa: the loss moves by well under a percent
    assert float(value) == pytest.approx(float(exact(head(x), y)), rel=2e-2)


def test_cuda_search_equals_cpu_faiss():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 500, 20_000)
    x = rng.standard_normal((500, 64)).astype(np.float32)[y]
    x += rng.standard_normal(x.shape).astype(np.float32)
    assert resolve_backend("cuda").kind in ("faiss-gpu", "torch")
    for metric in ("cosine", "euclidean"):
        Dc, Ic = knn_search(x, k=20, metric=metric, device="cpu", exclude_self=True)
        Dg, Ig = knn_search(x, k=20, metric=metric, device="cuda", exclude_self=True)
        np.testing.assert_allclose(Dg, Dc, rtol=1e-4, atol=1e-4)
        assert (Ig == Ic).mean() > 0.999
        a = retrieval_metrics(x, y, metric=metric, device="cpu", include=("recall", "map_r"))
        b = retrieval_metrics(x, y, metric=metric, device="cuda", include=("recall", "map_r"))
        assert b == pytest.approx(a, abs=1e-3)


def test_cuda_kmeans_clustering_agrees_with_cpu_faiss():
    from langdml.eval.kmeans import torch_kmeans_assign

    rng = np.random.default_rng(3)
    y = rng.integers(0, 200, 8000)
    x = rng.standard_normal((200, 32)).astype(np.float32)[y]
    x += 0.7 * rng.standard_normal(x.shape).astype(np.float32)
    cpu = retrieval_metrics(x, y, include=("clustering",), device="cpu", seed=1)
    gpu = retrieval_metrics(x, y, include=("clustering",), device="cuda", seed=1)
    assert abs(cpu["nmi"] - gpu["nmi"]) < 0.02 and abs(cpu["ami"] - gpu["ami"]) < 0.05
    # the same seeded algorithm on the CPU and the GPU: the same partition up to rounding
    a = torch_kmeans_assign(x, 200, seed=2, niter=10, device="cpu")
    b = torch_kmeans_assign(x, 200, seed=2, niter=10, device="cuda")
    assert (a == b).mean() > 0.99


def test_cuda_search_keeps_the_documented_tie_order():
    base = np.random.default_rng(1).standard_normal((50, 8)).astype(np.float32)
    x = np.concatenate([np.repeat(base[:1], 12, axis=0), base[1:]])
    for metric in ("cosine", "euclidean"):
        _, I = knn_search(x, k=5, metric=metric, device="cuda")
        np.testing.assert_array_equal(I[:12], np.tile(np.arange(5), (12, 1)))


@pytest.mark.parametrize("amp_dtype", ["bfloat16", "float16"])
def test_fine_tuning_under_autocast(amp_dtype, tmp_path):
    """Full fine-tuning on CUDA under bf16 / fp16 autocast (fp16 with a GradScaler whose state is
    checkpointed), on a synthetic imagefolder of coloured shapes."""
    from PIL import Image, ImageDraw

    from langdml.config import load_config
    from langdml.train import train

    rng = np.random.default_rng(0)
    for c in range(16):
        folder = tmp_path / "data" / f"{c:02d}.shape {c}"
        folder.mkdir(parents=True)
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        for i in range(4):
            img = Image.new("RGB", (48, 48), (255, 255, 255))
            x, y = (int(v) for v in rng.integers(4, 20, 2))
            draw = ImageDraw.Draw(img)
            (draw.ellipse if c % 2 else draw.rectangle)((x, y, x + 20, y + 20), fill=colour)
            img.save(folder / f"{i}.png")
    cfg = load_config(
        None,
        {
            "data.dataset": f"imagefolder:{tmp_path / 'data'}",
            "data.cache_dir": str(tmp_path / "cache"),
            "model.weights": "none",
            "model.frozen_trunk": False,
            "model.image_size": 48,
            "model.embedding_dim": 32,
            "train.device": "cuda",
            "train.amp": True,
            "train.amp_dtype": amp_dtype,
            "train.epochs": 2,
            "train.batch_size": 16,
            "train.progress": False,
            "eval.every": 1,
            "output_dir": str(tmp_path / "run"),
        },
    )
    result = train(cfg)
    assert all(np.isfinite(v) for v in result.metrics.values())
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert bool(state["scaler"]) == (amp_dtype == "float16")
