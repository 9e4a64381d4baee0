"""Data-parallel training on CPU with gloo and 2 processes equals the 1-process run of the same
global batch: loss value and gradients of one step (head and loss parameters, for pair, proxy and
language-regularized losses), and the metrics of a short torchrun training run."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from langdml.config import dump_yaml, load_config
from langdml.errors import ConfigError
from langdml.losses import build_loss
from langdml.models import EmbeddingHead, EmbeddingModel
from langdml.train import distributed as dd
from langdml.train.sampler import MPerClassSampler

ROOT = Path(__file__).resolve().parents[2]
IN_DIM, DIM, CLASSES, BATCH, M = 24, 8, 10, 16, 2

SPECS = {
    "multi_similarity": {"base": {"name": "multi_similarity"}, "regularizers": []},
    "proxy_anchor": {"base": {"name": "proxy_anchor"}, "regularizers": []},
    "multi_similarity+language": {
        "base": {"name": "multi_similarity"},
        "regularizers": [{"name": "language", "weight": 2.0, "temperature": 0.5}],
    },
}


def _problem(spec: dict):
    """Model, loss and one global m-per-class batch, identical in every process (seeded)."""
    torch.manual_seed(0)
    text = torch.nn.functional.normalize(torch.randn(CLASSES, 12), dim=-1)
    model = EmbeddingModel(EmbeddingHead(IN_DIM, DIM, "mlp", hidden_dim=16))
    loss = build_loss(spec, num_classes=CLASSES, embedding_size=DIM, class_text_embeddings=text)
    labels = np.repeat(np.arange(CLASSES), 5)
    batch = MPerClassSampler(labels, BATCH, M, seed=3).epoch(0)[0]
    x = torch.randn(len(labels), IN_DIM)[batch]
    y = torch.as_tensor(labels[batch])
    return model, loss, x, y


def _grads(model, loss) -> dict[str, torch.Tensor]:
    out = {f"model.{k}": p.grad.clone() for k, p in model.named_parameters()}
    out.update(
        {f"loss.{k}": p.grad.clone() for k, p in loss.named_parameters() if p.grad is not None}
    )
    return out


def _worker(rank: int, world: int, init_file: str, out: str) -> None:
    """One spawn runs every check (process start-up dominates the cost)."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        ctx = dd.DistContext(rank, world, rank)
        results = {}
        for name, spec in SPECS.items():
            model, loss, x, y = _problem(spec)
            ddp = dd.wrap_model(model, ctx, torch.device("cpu"))
            dd.broadcast_parameters(loss, ctx)
            z = dd.all_gather_with_grad(ddp(dd.shard(x, ctx)).float())
            labels = dd.all_gather_tensor(dd.shard(y, ctx))
            value = loss(z, labels)
            value.backward()
            dd.average_gradients(loss.parameters())
            results[name] = {
                "loss": value.detach(),
                "labels": labels,
                "z": z.detach(),
                "grads": _grads(model, loss),
            }
        # The gather's backward alone: L = Σ w ⊙ Z over the gathered (4, 2) batch.
        local = torch.randn(2, 2, requires_grad=True)
        (dd.all_gather_with_grad(local) * torch.arange(8.0).reshape(4, 2)).sum().backward()
        results["gather_grad"] = local.grad
        torch.save(results, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_process(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    out = str(tmp / "step")
    mp.spawn(_worker, args=(2, str(tmp / "init"), out), nprocs=2, join=True)
    return [torch.load(f"{out}.{rank}", weights_only=True) for rank in range(2)]


@pytest.mark.parametrize("name", list(SPECS))
def test_two_process_step_equals_one_process_step(name, two_process):
    model, loss, x, y = _problem(SPECS[name])
    z = model(x)
    reference = loss(z, y)
    reference.backward()
    expected = _grads(model, loss)
    assert any(k.startswith("loss.") for k in expected) == (name == "proxy_anchor")
    for results in two_process:
        got = results[name]
        assert torch.equal(got["labels"], y)  # the gathered batch is the global batch, in order
        torch.testing.assert_close(got["z"], z.detach(), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(got["loss"], reference.detach(), rtol=1e-6, atol=1e-6)
        assert set(got["grads"]) == set(expected)
        for key, grad in expected.items():
            assert grad.abs().max() > 0, key  # a zero gradient would make the check vacuous
            torch.testing.assert_close(got["grads"][key], grad, rtol=1e-5, atol=1e-6, msg=key)


def test_gather_backward_returns_world_times_local_slice(two_process):
    """Without DDP the gather's backward gives W × the rank's rows of ∂L/∂Z (DDP's ÷W undoes it)."""
    weights = torch.arange(8.0).reshape(4, 2)
    for rank, results in enumerate(two_process):
        torch.testing.assert_close(results["gather_grad"], 2 * weights[2 * rank : 2 * rank + 2])


def test_shard_and_batch_size_rule():
    ctx = dd.DistContext(1, 4, 1)
    assert dd.shard(list(range(8)), ctx) == [2, 3]
    assert dd.shard(list(range(8)), dd.DistContext()) == list(range(8))
    dd.check_batch_size(64, 4)
    with pytest.raises(ConfigError, match="batch_size 30 .* not divisible by the 4 processes"):
        dd.check_batch_size(30, 4)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_process_training_matches_one_process(emoji_subset_folder, tmp_path):
    over = {
        "data.dataset": f"imagefolder:{emoji_subset_folder}",
        "data.cache_dir": str(tmp_path / "cache"),
        "model.image_size": 48,
        "model.embedding_dim": 32,
        "model.augment_views": 1,  # two cached views: the per-sample view draw must match too
        "loss.base.name": "proxy_anchor",
        "train.epochs": 3,
        "train.batch_size": 16,
        "train.m_per_class": 2,
        "train.iterations_per_epoch": 8,
        "train.progress": False,
        "eval.every": 1,
        "optimizer.lr": 0.003,
    }
    from langdml.train import train

    one = train(load_config(None, {**over, "output_dir": str(tmp_path / "one")}))

    cfg = load_config(None, {**over, "output_dir": str(tmp_path / "two")})
    cfg_path = tmp_path / "two.yaml"
    cfg_path.write_text(dump_yaml(cfg))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    cmd += ["--master_addr", "127.0.0.1", "--master_port", str(_free_port())]
    cmd += ["-m", "langdml", "train", str(cfg_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]

    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert two["config"]["train"]["batch_size"] == 16
    for key, value in one.metrics.items():
        assert two["final"][key] == pytest.approx(value, abs=1e-4), key
    log1 = [json.loads(line) for line in (tmp_path / "one" / "log.jsonl").read_text().splitlines()]
    log2 = [json.loads(line) for line in (tmp_path / "two" / "log.jsonl").read_text().splitlines()]
    assert len(log1) == len(log2) == 3
    for a, b in zip(log1, log2, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
        assert b["recall@1"] == pytest.approx(a["recall@1"], abs=1e-4)
    assert log1[-1]["loss"] < log1[0]["loss"]  # it actually trained
    for which in ("raw_features", "untrained"):
        for key, value in one.extra["baselines"][which].items():
            assert two["baselines"][which][key] == pytest.approx(value, abs=1e-6), (which, key)
    # rank 0 wrote the run directory (the other rank writes nothing; same files as 1 process)
    names = {
        "checkpoint.pt",
        "config.yaml",
        "log.csv",
        "log.jsonl",
        "metrics.json",
        "provenance.json",
    }  # no best.pt: no validation split (no selection on test classes)
    assert names <= {p.name for p in (tmp_path / "two").iterdir()}
