"""The open training loop: parameter groups, schedules (against torch's schedulers), the
callback API and the experiment trackers (MLflow read back with its own client, W&B offline read
from its run file) on tiny frozen-trunk runs of a 24-class emoji folder."""

import json
import math
import re
import sys
from pathlib import Path

import pytest
import torch
from runkit import imagefolder_cfg
from torch import nn
from wandbkit import read_run

from langdml._extras import MissingExtraError
from langdml.config import load_config
from langdml.config.training import TRACKING_KEYS
from langdml.errors import ConfigError
from langdml.models import EmbeddingHead, EmbeddingModel
from langdml.train import Callback, train
from langdml.train.optim import lr_factor, parameter_groups
from langdml.train.trackers import check_trackers, mlflow_key, summary_metrics, tracking_names

SETTINGS = {
    "model.image_size": 48,
    "model.embedding_dim": 16,
    "train.epochs": 3,
    "train.batch_size": 16,
    "train.iterations_per_epoch": 4,
    "train.progress": False,
    "eval.every": 2,
    "eval.clustering": False,
}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("loop_cache")


def _cfg(folder, cache, out, **over):
    return imagefolder_cfg(folder, cache, out, SETTINGS, **over)


# ---------------------------------------------------------------------------------------------
# parameter groups and schedules


class _ProxyLoss(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proxies = nn.Parameter(torch.zeros(3, 4))
        self.scale = nn.Parameter(torch.ones(()))

    def proxy_parameters(self):
        return [self.proxies]


def _model() -> EmbeddingModel:
    return EmbeddingModel(EmbeddingHead(6, 4), backbone=nn.Sequential(nn.Linear(5, 6)))


def _ids(params) -> set[int]:
    return {id(p) for p in params}


def test_default_groups_are_one_model_group_with_the_shared_settings():
    model, loss = _model(), _ProxyLoss()
    cfg = load_config(None, {"model.trainable_blocks": "all", "optimizer.lr": 0.01})
    groups = parameter_groups(cfg, model, loss)
    assert [g["name"] for g in groups] == ["model", "proxies", "loss"]
    assert _ids(groups[0]["params"]) == _ids(model.parameters())
    assert [g["lr"] for g in groups] == [0.01, 0.01 * 100, 0.01]
    assert {g["weight_decay"] for g in groups} == {1e-4}


def test_trunk_and_head_groups_take_their_own_lr_and_weight_decay():
    model, loss = _model(), _ProxyLoss()
    over = {
        "model.trainable_blocks": "all",
        "optimizer.lr": 0.01,
        "optimizer.trunk_lr": 1e-4,
        "optimizer.head_lr": 2e-3,
        "optimizer.trunk_weight_decay": 0.05,
        "optimizer.proxy_lr_multiplier": 10,
    }
    groups = {g["name"]: g for g in parameter_groups(load_config(None, over), model, loss)}
    assert _ids(groups["trunk"]["params"]) == _ids(model.backbone.parameters())
    assert _ids(groups["head"]["params"]) == _ids(model.head.parameters())
    assert (groups["trunk"]["lr"], groups["trunk"]["weight_decay"]) == (1e-4, 0.05)
    assert (groups["head"]["lr"], groups["head"]["weight_decay"]) == (2e-3, 1e-4)
    assert groups["proxies"]["lr"] == pytest.approx(2e-3 * 10)
    assert groups["loss"]["lr"] == 2e-3


def test_trunk_settings_on_a_frozen_trunk_are_refused():
    with pytest.raises(ConfigError, match="trunk_lr / trunk_weight_decay need a trained trunk"):
        load_config(None, {"optimizer.trunk_lr": 1e-4})


def _torch_lrs(scheduler_cls, steps: int, **kwargs) -> list[float]:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = scheduler_cls(opt, **kwargs)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_step_milestones_match_torch_multistep():
    cfg = load_config(
        None,
        {
            "train.epochs": 6,
            "train.scheduler": "step",
            "train.step_milestones": [2, 5],
            "train.step_gamma": 0.5,
        },
    )
    factor = lr_factor(cfg, 3)
    want = _torch_lrs(torch.optim.lr_scheduler.MultiStepLR, 18, milestones=[6, 15], gamma=0.5)
    assert [factor(s) for s in range(18)] == pytest.approx(want, rel=1e-12)


def test_cosine_floor_matches_torch_cosine_annealing():
    cfg = load_config(None, {"train.epochs": 4, "train.min_lr_ratio": 0.1})
    factor = lr_factor(cfg, 5)
    want = _torch_lrs(torch.optim.lr_scheduler.CosineAnnealingLR, 20, T_max=20, eta_min=0.1)
    assert [factor(s) for s in range(20)] == pytest.approx(want, rel=1e-9)
    # warm-up: linear to 1 over the warm-up epochs, then the cosine from 1
    warm = lr_factor(load_config(None, {"train.epochs": 4, "train.warmup_epochs": 1}), 5)
    assert [warm(s) for s in range(5)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert warm(5) == 1.0 and warm(5 + 15) == pytest.approx(0.5 * (1 + math.cos(math.pi)))


def _sequential_lrs(warm: int, steps: int, after_cls, **kwargs) -> list[float]:
    """torch's linear warm-up (1/warm .. 1 over ``warm`` steps), then ``after_cls``."""
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    first = torch.optim.lr_scheduler.LinearLR(opt, 1 / warm, 1.0, total_iters=warm - 1)
    then = after_cls(opt, **kwargs)
    sched = torch.optim.lr_scheduler.SequentialLR(opt, [first, then], milestones=[warm])
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_warm_up_then_cosine_or_step_match_torch_sequential():
    ipe, warm = 4, 2 * 4  # 4 batches an epoch, 2 warm-up epochs, 8 epochs in all
    base = {"train.epochs": 8, "train.warmup_epochs": 2}
    cosine = lr_factor(load_config(None, {**base, "train.min_lr_ratio": 0.05}), ipe)
    want = _sequential_lrs(
        warm, 32, torch.optim.lr_scheduler.CosineAnnealingLR, T_max=32 - warm, eta_min=0.05
    )
    assert [cosine(s) for s in range(32)] == pytest.approx(want, rel=1e-9)
    over = {**base, "train.scheduler": "step", "train.step_milestones": [4, 6]}
    step = lr_factor(load_config(None, {**over, "train.step_gamma": 0.5}), ipe)
    # milestones count epochs from the start of training, warm-up included
    want = _sequential_lrs(
        warm, 32, torch.optim.lr_scheduler.MultiStepLR, milestones=[16 - warm, 24 - warm], gamma=0.5
    )
    assert [step(s) for s in range(32)] == pytest.approx(want, rel=1e-12)


def test_each_group_decays_by_its_own_weight_decay():
    """AdamW's decoupled decay (Loshchilov & Hutter): with a zero gradient one step multiplies
    each parameter by 1 - lr x weight_decay of its group, and Adam's own update is 0."""
    from langdml.train.optim import build_optimizer

    over = {
        "model.trainable_blocks": "all",
        "optimizer.lr": 0.01,
        "optimizer.trunk_lr": 0.1,
        "optimizer.trunk_weight_decay": 0.5,
        "optimizer.head_lr": 0.2,
        "optimizer.head_weight_decay": 0.25,
    }
    model, loss = _model(), _ProxyLoss()
    with torch.no_grad():
        loss.proxies.fill_(0.5)  # nonzero, so the decay shows
    opt = build_optimizer(load_config(None, over), model, loss)
    assert {g["name"]: g["weight_decay"] for g in opt.param_groups} == {
        "trunk": 0.5,
        "head": 0.25,
        "proxies": 0.25,
        "loss": 0.25,
    }
    before = {id(p): p.detach().clone() for p in [*model.parameters(), *loss.parameters()]}
    for p in [*model.parameters(), *loss.parameters()]:
        p.grad = torch.zeros_like(p)
    opt.step()
    for p in model.backbone.parameters():
        assert torch.allclose(p, before[id(p)] * (1 - 0.1 * 0.5), rtol=1e-6, atol=0)
    for p in model.head.parameters():
        assert torch.allclose(p, before[id(p)] * (1 - 0.2 * 0.25), rtol=1e-6, atol=0)
    # proxies: head_lr x proxy_lr_multiplier (100) with the head's decay
    assert torch.allclose(loss.scale, before[id(loss.scale)] * (1 - 0.2 * 0.25), rtol=1e-6)
    assert torch.allclose(loss.proxies, before[id(loss.proxies)] * (1 - 20 * 0.25), rtol=1e-6)


def test_split_groups_at_the_shared_settings_train_exactly_as_one_group(
    emoji_subset_folder, cache, tmp_path
):
    one = train(_cfg(emoji_subset_folder, cache, tmp_path / "one"))
    split = train(
        _cfg(emoji_subset_folder, cache, tmp_path / "split", **{"optimizer.head_lr": 1e-3})
    )
    assert split.metrics == one.metrics  # same lr, same math: identical, not close
    log = [json.loads(x) for x in (tmp_path / "split" / "log.jsonl").read_text().splitlines()]
    assert all(r["lr/head"] == r["lr"] for r in log)
    other = train(
        _cfg(emoji_subset_folder, cache, tmp_path / "other", **{"optimizer.head_lr": 3e-2})
    )
    assert other.metrics != one.metrics


def test_every_training_key_has_a_field_description():
    """The config reference is generated from Field descriptions."""
    from langdml.config import DataConfig, OptimizerConfig, TrainConfig

    fields = [*OptimizerConfig.model_fields.items(), *TrainConfig.model_fields.items()]
    fields += [(k, DataConfig.model_fields[k]) for k in ("augment", "timm_augment")]
    assert [k for k, f in fields if not (f.description or "").strip()] == []


# ---------------------------------------------------------------------------------------------
# callbacks


class Recorder(Callback):
    def __init__(self, fail_at: int | None = None) -> None:
        self.calls, self.fail_at = [], fail_at

    def on_train_start(self, run):
        self.calls.append(("start", run.start_epoch, run.resumed))

    def on_eval(self, run, epoch, metrics):
        self.calls.append(("eval", epoch, metrics["recall@1"]))

    def on_epoch_end(self, run, record):
        assert (run.run_dir / "checkpoint.pt").is_file()  # saved before the hook
        self.calls.append(("epoch", record["epoch"], record["loss"]))
        if record["epoch"] == self.fail_at:
            raise RuntimeError("callback failed")

    def on_train_end(self, run, summary):
        self.calls.append(("end", summary["final"]["recall@1"]))
        return {"mine": {"answer": 42}}

    def teardown(self, run, failed):
        self.calls.append(("teardown", failed))


def test_callbacks_see_every_epoch_evaluation_and_the_end(emoji_subset_folder, cache, tmp_path):
    rec = Recorder()
    result = train(_cfg(emoji_subset_folder, cache, tmp_path / "run"), callbacks=[rec])
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert rec.calls == [
        ("start", 0, False),
        ("epoch", 1, log[0]["loss"]),
        ("eval", 2, log[1]["recall@1"]),
        ("epoch", 2, log[1]["loss"]),
        ("eval", 3, log[2]["recall@1"]),
        ("epoch", 3, log[2]["loss"]),
        ("end", result.metrics["recall@1"]),
        ("teardown", False),
    ]
    assert metrics["mine"] == {"answer": 42}  # on_train_end's entries land in metrics.json
    # a finished run is returned as is: no hook runs
    again = Recorder()
    train(_cfg(emoji_subset_folder, cache, tmp_path / "run"), callbacks=[again])
    assert again.calls == []


def test_a_failing_callback_still_tears_every_callback_down(emoji_subset_folder, cache, tmp_path):
    first, second = Recorder(fail_at=2), Recorder()
    with pytest.raises(RuntimeError, match="callback failed"):
        train(_cfg(emoji_subset_folder, cache, tmp_path / "run"), callbacks=[first, second])
    assert first.calls[-1] == second.calls[-1] == ("teardown", True)
    with pytest.raises(TypeError, match="Callback instances"):
        train(_cfg(emoji_subset_folder, cache, tmp_path / "other"), callbacks=[print])


def test_post_train_is_one_case_of_the_callbacks(emoji_subset_folder, cache, tmp_path):
    from langdml.pipeline import post_train_callbacks
    from langdml.train import PostTrainCallback
    from langdml.train.trainer import train_run as train_loop

    seen, rec = [], Recorder()

    def step(run_dir):
        seen.append(run_dir)
        rec.calls.append(("step", run_dir))
        return {"after": {"n": len(seen)}}

    cfg = _cfg(emoji_subset_folder, cache, tmp_path / "a")
    train_loop(cfg, post_train=step, callbacks=[rec])
    by_kwarg = json.loads((tmp_path / "a" / "metrics.json").read_text())
    # the step ran first at the end of training, then the user's callback
    assert [c[0] for c in rec.calls[-3:]] == ["step", "end", "teardown"]
    cfg_b = _cfg(emoji_subset_folder, cache, tmp_path / "b")
    train_loop(cfg_b, callbacks=[PostTrainCallback(step), Recorder()])
    by_callback = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert seen == [tmp_path / "a", tmp_path / "b"]
    assert by_kwarg["after"] == {"n": 1} and by_callback["after"] == {"n": 2}
    assert by_kwarg["final"] == by_callback["final"]
    # the pipeline hands eval.xmodal to the trainer as such a callback
    assert post_train_callbacks(cfg) == []
    xmodal = cfg.model_copy(deep=True)
    xmodal.eval.xmodal = True
    (hook,) = post_train_callbacks(xmodal)
    assert isinstance(hook, PostTrainCallback)


# ---------------------------------------------------------------------------------------------
# trackers


def test_tracking_names_split_an_ablation_run_name():
    assert tracking_names(load_config(None, {"name": "grid/cell-ab12-seed0-ff"})) == (
        "grid",
        "cell-ab12-seed0-ff",
    )
    assert tracking_names(load_config(None, {"name": "solo"})) == ("solo", "solo")


def test_tracking_keys_name_the_run_and_change_no_result():
    over = {
        "name": "grid/cell-ab12",
        "train.tracking_experiment": "study",
        "train.tracking_run_name": "lr=0.1, seed 0",
    }
    assert tracking_names(load_config(None, over)) == ("study", "lr=0.1, seed 0")
    assert {"tracking_experiment", "tracking_run_name", "tracking_tags"} <= set(TRACKING_KEYS)


def test_wandb_tags_fit_wandb_limit():
    from langdml.train.trackers import wandb_tags

    long = "x" * 80
    cfg = load_config(None, {"train.tracking_tags": {"seed": "0", "grid.loss.base.name": long}})
    tags = wandb_tags(cfg)
    assert tags[0] == "seed=0"
    assert len(tags[1]) == 64 and tags[1].startswith("grid.loss.base.name=xxx")
    assert tags[1].endswith("\u2026")


def test_tracking_keys_never_block_a_resume():
    from langdml.train.checkpoint import same_config

    saved = load_config(None, {}).to_dict()
    current = load_config(
        None,
        {
            "train.loggers": ["mlflow"],
            "train.tracking_run_name": "lr=0.1, seed 0",
            "train.tracking_tags": {"ablation": "grid", "seed": "0"},
        },
    ).to_dict()
    assert same_config(saved, current) == []
    assert same_config(saved, {**current, "seed": 3}) == ["seed"]


def test_ablation_cells_log_under_the_grid(emoji_subset_folder, cache, tmp_path):
    """A 2-cell ablation run for real: each cell is an MLflow run and a W&B run named by its
    key and seed, in the experiment / group of the ablation, holding its metrics.json."""
    from mlflow.tracking import MlflowClient

    from langdml.ablation import load_ablation, run_ablation

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    base = {
        "data": {"dataset": f"imagefolder:{emoji_subset_folder}", "cache_dir": str(cache)},
        "model": {"image_size": 48, "embedding_dim": 16},
        "train": {
            "epochs": 2,
            "batch_size": 16,
            "iterations_per_epoch": 3,
            "progress": False,
            "loggers": ["mlflow", "wandb"],
            "mlflow_uri": uri,
        },
        "eval": {"every": 2, "clustering": False},
    }
    path = tmp_path / "mygrid.yaml"
    path.write_text(
        json.dumps(
            {
                "base": base,
                "output_dir": str(tmp_path / "out"),
                "seeds": [0],
                "grid": {"optimizer.lr": [0.001, 0.003]},
            }
        )
    )
    run_ablation(path, progress=False)
    ablation = load_ablation(path)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("mygrid")
    logged = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert sorted(logged) == ["lr=0.001, seed 0", "lr=0.003, seed 0"]
    for run in ablation.runs:
        label = f"lr={run.cell.get('optimizer.lr')}, seed 0"
        summary = json.loads((Path(run.config.output_dir) / "metrics.json").read_text())
        found = logged[label]
        assert found.data.tags["ablation"] == "mygrid"
        assert found.data.tags["cell"] == run.cell.id and found.data.tags["run_id"] == run.id
        assert found.data.tags["grid.optimizer.lr"] == str(run.cell.get("optimizer.lr"))
        assert found.data.metrics["final/recall_at_1"] == summary["final"]["recall@1"]
        (wb,) = (Path(run.config.output_dir) / "wandb").glob("offline-run-*/run-*.wandb")
        offline = read_run(wb)
        assert offline["run"]["name"] == label
        assert offline["run"]["group"] == offline["run"]["project"] == "mygrid"
        assert f"run_id={run.id}" in offline["run"]["tags"]
        assert offline["summary"]["final/recall@1"] == summary["final"]["recall@1"]
    # the tracking keys leave the run ids as they were without trackers
    plain = {**base, "train": {k: v for k, v in base["train"].items() if k not in TRACKING_KEYS}}
    path.write_text(json.dumps({**json.loads(path.read_text()), "base": plain}))
    assert [r.id for r in load_ablation(path).runs] == [r.id for r in ablation.runs]


@pytest.mark.parametrize("name", ["mlflow", "wandb"])
def test_missing_tracker_extra_is_one_line(name, monkeypatch, tmp_path, capsys):
    from langdml.ablation import run_ablation
    from langdml.cli import main

    monkeypatch.setitem(sys.modules, name, None)
    line = rf"train.loggers {name} needs the '{name}' extra: pip install 'langdml\[{name}\]'$"
    with pytest.raises(MissingExtraError, match=line):
        check_trackers(load_config(None, {"train.loggers": ["csv", name]}))
    # the CLI prints it as one line, before any work (no run folder)
    run = tmp_path / "run"
    assert main(["train", "emoji_demo", f"train.loggers=[{name}]", f"output_dir={run}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(line.rstrip("$"), err[0]) and not run.exists()
    # an ablation checks its runs' loggers before the first one starts
    path = tmp_path / "abl.yaml"
    path.write_text(
        json.dumps(
            {
                "base": {"train": {"loggers": [name]}},
                "output_dir": str(tmp_path / "out"),
                "grid": {"optimizer.lr": [0.001, 0.003]},
            }
        )
    )
    with pytest.raises(MissingExtraError, match=line):
        run_ablation(path, progress=False)
    assert not (tmp_path / "out" / "runs").exists()


def test_mlflow_tracker_on_a_file_store(tmp_path, monkeypatch):
    """A plain-folder store (file:) works once MLflow is told to allow it, and without that is
    one line naming the setting; the tracker's records read back with MLflow's client."""
    from mlflow.tracking import MlflowClient

    from langdml.errors import LangDMLError
    from langdml.train.callbacks import RunInfo
    from langdml.train.trackers import MlflowTracker

    uri = (tmp_path / "mlruns").as_uri()
    cfg = load_config(None, {"name": "study/one", "train.mlflow_uri": uri})
    (tmp_path / "run").mkdir()
    info = RunInfo(cfg, tmp_path / "run", model=nn.Linear(1, 1))
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    with pytest.raises(
        LangDMLError, match=r"^train.loggers mlflow \(file:.*MLFLOW_ALLOW_FILE_STORE"
    ):
        MlflowTracker().on_train_start(info)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    tracker = MlflowTracker()
    tracker.on_train_start(info)
    tracker.on_epoch_end(info, {"epoch": 1, "loss": 0.5, "recall@1": 0.25})
    tracker.on_train_end(info, {"final": {"recall@1": 0.25}, "config": {"x": 1}})
    tracker.teardown(info, failed=False)
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("study").experiment_id])
    assert run.info.run_name == "one" and run.info.status == "FINISHED"
    assert run.data.metrics == {"loss": 0.5, "recall_at_1": 0.25, "final/recall_at_1": 0.25}


def test_mlflow_run_holds_the_run_metrics(emoji_subset_folder, cache, tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    over = {"name": "grid/cell-1", "train.loggers": ["mlflow"], "train.mlflow_uri": uri}
    train(_cfg(emoji_subset_folder, cache, tmp_path / "run", **over))
    assert not (tmp_path / "run" / "log.csv").exists()  # csv not asked for
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("grid")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "cell-1" and run.info.status == "FINISHED"
    assert run.data.params["optimizer.lr"] == "0.001"
    assert run.data.params["train.iterations_per_epoch"] == "4"
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    want = {mlflow_key(k): v for k, v in summary_metrics(summary).items()}
    assert "final/recall_at_1" in want and "baselines/untrained/recall_at_1" in want
    got = {k: v for k, v in run.data.metrics.items() if k in want}
    assert got == want  # the same numbers as metrics.json, exactly
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    history = client.get_metric_history(run.info.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(r["epoch"], r["loss"]) for r in log]
    r1 = client.get_metric_history(run.info.run_id, "recall_at_1")
    assert [(m.step, m.value) for m in r1] == [(2, log[1]["recall@1"]), (3, log[2]["recall@1"])]


def test_wandb_offline_run_holds_the_run_metrics(emoji_subset_folder, cache, tmp_path):
    over = {"name": "grid/cell-2", "train.loggers": ["csv", "wandb"]}
    train(_cfg(emoji_subset_folder, cache, tmp_path / "run", **over))
    (path,) = (tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb")
    found = read_run(path)
    assert found["run"] == {"name": "cell-2", "project": "grid", "group": "grid", "tags": []}
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    want = summary_metrics(summary)
    assert {k: found["summary"][k] for k in want} == want
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    steps = {row["_step"]: row for row in found["history"]}
    for record in log:
        row = steps[record["epoch"]]
        assert {k: row[k] for k in record if k != "epoch"} == {
            k: v for k, v in record.items() if k != "epoch"
        }


# ---------------------------------------------------------------------------------------------
# samplers in a run


def test_class_balanced_and_hierarchical_samplers_train(emoji_subset_folder, cache, tmp_path):
    from langdml.data import load_dataset
    from langdml.experiment import prepare_data
    from langdml.train.sampler import HierarchicalSampler, build_sampler

    names = load_dataset(f"imagefolder:{emoji_subset_folder}").class_names
    hierarchy = tmp_path / "groups.csv"
    hierarchy.write_text("".join(f"{n},g{i % 3}/s{i % 6}\n" for i, n in enumerate(names)))
    base = train(_cfg(emoji_subset_folder, cache, tmp_path / "base"))
    balanced = _cfg(
        emoji_subset_folder,
        cache,
        tmp_path / "cb",
        **{"train.sampler": "class_balanced", "train.n_classes": 8, "train.n_per_class": 2},
    )
    # with iterations_per_epoch given, n_classes x n_per_class = batch_size / m x m draws
    # exactly m-per-class's batches (the same round-robin); only the epoch length differs
    assert train(balanced).metrics == base.metrics
    own_length = balanced.model_copy(deep=True)
    own_length.train.iterations_per_epoch = None
    assert len(build_sampler(own_length, prepare_data(own_length).train)) == 2  # ceil(12 / 8)
    over = {
        "eval.hierarchy": str(hierarchy),
        "train.sampler": "hierarchical",
        "train.n_categories": 2,
        "train.n_classes": 4,  # 12 training classes, 4 in each of the 3 groups
    }
    cfg = _cfg(emoji_subset_folder, cache, tmp_path / "h", **over)
    sampler = build_sampler(cfg, prepare_data(cfg).train)
    assert isinstance(sampler, HierarchicalSampler) and sampler.batch_size == 16
    result = train(cfg)
    saved = json.loads((tmp_path / "h" / "metrics.json").read_text())["config"]["train"]
    assert (saved["batch_size"], saved["n_classes"], saved["n_per_class"]) == (16, 4, 2)
    assert result.metrics != base.metrics


@pytest.mark.slow
def test_a_killed_run_resumes_into_the_same_mlflow_run(
    emoji_subset_folder, cache, tmp_path, train_killed_mid_run
):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    over = {
        "train.epochs": 8,
        "train.iterations_per_epoch": 40,
        "train.loggers": ["mlflow"],
        "train.mlflow_uri": uri,
        "name": "killed",
    }
    cfg = _cfg(emoji_subset_folder, cache, tmp_path / "run", **over)
    train_killed_mid_run(cfg, 8)
    train(cfg)
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("killed").experiment_id])
    assert run.info.status == "FINISHED"
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    history = client.get_metric_history(run.info.run_id, "loss")
    assert sorted((m.step, m.value) for m in history) == [(r["epoch"], r["loss"]) for r in log]


def test_hierarchical_run_on_a_split_file_category_column(emoji_subset_folder, cache, tmp_path):
    """A split file's category column is the hierarchical sampler's categories: every batch
    holds n_categories categories x n_classes classes of each."""
    import csv

    from langdml.data import load_dataset
    from langdml.experiment import prepare_data
    from langdml.train.sampler import build_sampler

    ds = load_dataset(f"imagefolder:{emoji_subset_folder}")
    category = {c: f"g{c % 3}" for c in range(ds.num_classes)}
    split_file = tmp_path / "split.csv"
    with open(split_file, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "category"])
        for item, label in zip(ds.images.items, ds.labels.tolist()):
            rel = Path(item).relative_to(emoji_subset_folder).as_posix()
            writer.writerow([rel, ds.class_names[label], category[label]])
    over = {
        "data.split_file": str(split_file),
        "eval.hierarchy": "none",
        "train.sampler": "hierarchical",
        "train.n_categories": 2,
        "train.n_classes": 4,  # 12 training classes, 4 in each of the 3 categories
    }
    cfg = _cfg(emoji_subset_folder, cache, tmp_path / "run", **over)
    train_part = prepare_data(cfg).train
    cat_of = {c: category[ds.class_names.index(n)] for c, n in enumerate(train_part.class_names)}
    for batch in build_sampler(cfg, train_part).epoch(0):
        classes = set(train_part.labels[batch].tolist())
        cats = {cat_of[c] for c in classes}
        assert len(classes) == 8 and len(cats) == 2
        assert all(sum(cat_of[c] == g for c in classes) == 4 for g in cats)
    result = train(cfg)
    assert result.epochs == 3 and "recall@1" in result.metrics
