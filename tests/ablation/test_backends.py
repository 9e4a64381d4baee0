"""Ablation backends: local / submitit (Slurm's executors on this machine) / Ray give the same
table; a killed cell resumes on the next invocation; --status; options; missing extras."""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from langdml.ablation import load_ablation, run_ablation
from langdml.ablation.backends import parse_sbatch_extra, resolve_options, slurm_minutes
from langdml.ablation.cells import MARKER, run_state
from langdml.cli import main
from langdml.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
GRID = {"loss.regularizers": ["none", "language"]}


def _write(tmp_path: Path, folder, cache, name="abl", long=False, **extra) -> Path:
    """The tiny grid of test_runner.py (2 regularizer settings x 2 seeds, 3 short epochs).
    ``long``: one run of 4 longer epochs (~1 s each), long enough to be caught mid-training."""
    train = {"epochs": 3, "batch_size": 16, "m_per_class": 2, "iterations_per_epoch": 15}
    if long:
        train.update(epochs=4, iterations_per_epoch=300)
        extra = {"grid": {"loss.regularizers": ["none"]}, "seeds": [0], **extra}
    base = {
        "name": "tiny",
        "data": {"dataset": f"imagefolder:{folder}", "cache_dir": str(cache)},
        "model": {"image_size": 48, "embedding_dim": 32},
        "train": train,
        "eval": {"every": 3, "clustering": False},
        "optimizer": {"lr": 0.003},
    }
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    abl = {"base": "base.yaml", "output_dir": str(tmp_path / name), "seeds": [0, 1], "grid": GRID}
    abl.update(extra)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(abl))
    return path


def _metrics(out: Path) -> dict[str, dict]:
    """results.csv without the timing column: what must not depend on the backend."""
    rows = list(csv.DictReader((out / "results.csv").open()))
    return {r["run_id"]: {k: v for k, v in r.items() if k != "seconds"} for r in rows}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("backend_cache")


@pytest.fixture(scope="module")
def reference(emoji_subset_folder, cache, tmp_path_factory):
    """The local backend's table for the grid (one thread per cell, like the other backends)."""
    tmp = tmp_path_factory.mktemp("reference")
    path = _write(tmp, emoji_subset_folder, cache)
    result = run_ablation(path, progress=False, backend_flags={"cpus_per_cell": 1})
    assert len(result.rows) == 4 and all(r["status"] == "ok" for r in result.rows)
    return result


@pytest.fixture(scope="module")
def long_reference(emoji_subset_folder, cache, tmp_path_factory):
    """The ``long`` run trained without interruption."""
    tmp = tmp_path_factory.mktemp("long_reference")
    path = _write(tmp, emoji_subset_folder, cache, long=True)
    run_ablation(path, progress=False, backend_flags={"cpus_per_cell": 1})
    return _metrics(tmp / "abl")


@pytest.fixture(scope="module")
def ray_instance():
    import ray  # in the test extra: these tests run in CI, never skip

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _live_marker(out: Path, skip_pid=None, timeout=240, alive=lambda: True) -> tuple[Path, dict]:
    """A run directory whose live attempt (not ``skip_pid``'s) is training: its marker, its log
    has an epoch and the run is not finished."""
    deadline = time.time() + timeout
    while time.time() < deadline and alive():
        for run_dir in (out / "runs").glob("*") if (out / "runs").exists() else []:
            try:
                marker = json.loads((run_dir / MARKER).read_text())
            except (OSError, ValueError):
                continue
            if marker["pid"] != skip_pid and (run_dir / "log.jsonl").exists():
                if not (run_dir / "metrics.json").exists():
                    return run_dir, marker
        time.sleep(0.02)
    raise AssertionError("no run was caught mid-training")


def _attempts(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "attempts.jsonl").read_text().splitlines()]


def test_submitit_debug_executor_gives_the_local_table(
    emoji_subset_folder, cache, tmp_path, reference
):
    """submitit's in-process executor; the kill test below runs its subprocess executor."""
    path = _write(tmp_path, emoji_subset_folder, cache)
    flags = {"slurm.executor": "debug", "cpus_per_cell": 1, "slurm.time": 10}
    result = run_ablation(path, progress=False, backend="slurm", backend_flags=flags)
    assert result.markdown == reference.markdown
    assert _metrics(result.output_dir) == _metrics(reference.output_dir)
    for run_dir in (result.output_dir / "runs").iterdir():
        attempt = json.loads((run_dir / "attempts.jsonl").read_text().splitlines()[0])
        assert attempt["backend"] == "slurm" and attempt["job_id"].startswith("DEBUG_")
        submitted = json.loads((run_dir / "submitted.json").read_text())
        assert submitted["job_id"] == attempt["job_id"]
        assert not (run_dir / MARKER).exists()
    # a rerun on another backend submits nothing and rebuilds the same table
    again = run_ablation(path, progress=False)
    assert again.markdown == reference.markdown


def test_ray_local_instance_gives_the_local_table(
    emoji_subset_folder, cache, tmp_path, reference, ray_instance
):
    path = _write(tmp_path, emoji_subset_folder, cache)
    result = run_ablation(path, progress=False, backend="ray", backend_flags={"cpus_per_cell": 1})
    assert ray_instance.is_initialized()  # an instance the caller started is left running
    assert result.markdown == reference.markdown
    assert _metrics(result.output_dir) == _metrics(reference.output_dir)
    for run_dir in (result.output_dir / "runs").iterdir():
        attempt = _attempts(run_dir)[0]
        assert attempt["backend"] == "ray" and attempt["pid"] != os.getpid()


def test_ray_retries_a_killed_worker_and_the_run_resumes(
    emoji_subset_folder, cache, tmp_path, long_reference, ray_instance
):
    path = _write(tmp_path, emoji_subset_folder, cache, long=True)
    out, killed = tmp_path / "abl", []

    def kill_one_worker() -> None:
        run_dir, marker = _live_marker(out)
        os.kill(marker["pid"], signal.SIGKILL)
        killed.append((run_dir, marker))

    watcher = threading.Thread(target=kill_one_worker, daemon=True)
    watcher.start()
    result = run_ablation(path, progress=False, backend="ray", backend_flags={"cpus_per_cell": 1})
    watcher.join(timeout=10)
    ((run_dir, marker),) = killed
    assert result.rows[0]["status"] == "ok"  # Ray retried the task in the same invocation
    first, second = _attempts(run_dir)
    assert first["pid"] == marker["pid"] and second["pid"] != marker["pid"]
    assert second["job_id"] == first["job_id"]  # a retried task keeps its id
    assert second["from_epoch"] >= 1
    epochs = [json.loads(x)["epoch"] for x in (run_dir / "log.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3, 4]
    assert _metrics(out) == long_reference  # resume is exact


def test_preempted_job_requeues_and_killed_cell_resumes_next_invocation(
    emoji_subset_folder, cache, tmp_path, long_reference, capsys
):
    """submitit's subprocess executor: SIGUSR2 (Slurm's preemption/timeout signal) requeues the
    job, which resumes its run; SIGKILL of the requeued worker leaves a stale marker, and the
    next invocation (another backend) resumes the run from its checkpoint."""
    path = _write(tmp_path, emoji_subset_folder, cache, long=True)
    out = tmp_path / "abl"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "langdml", "ablate", str(path), "--no-progress", "--backend"]
    cmd += ["slurm", "--slurm-executor", "local", "--cpus-per-cell", "1", "--prepare", "here"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    running = lambda: proc.poll() is None  # noqa: E731
    victim, first = _live_marker(out, alive=running)
    assert first["host"] == socket.gethostname() and first["job_id"]
    os.kill(first["pid"], signal.SIGUSR2)  # preempted: submitit checkpoints and requeues
    _, second = _live_marker(out, skip_pid=first["pid"], alive=running)
    assert second["job_id"] == first["job_id"]
    os.kill(second["pid"], signal.SIGKILL)  # the job's worker process, not the driver
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err.decode()[-2000:]  # a failed run fails the command
    assert "langdml: error: 1 of 1 runs failed" in err.decode()
    (row,) = csv.DictReader((out / "results.csv").open())
    assert row["status"] == "failed" and "ended without a result" in row["error"]

    assert main(["ablate", str(path), "--status"]) == 0
    status = capsys.readouterr().out
    assert "1 run: 1 stale" in status
    line = next(x for x in status.splitlines() if victim.name in x)
    assert line.startswith("stale") and f"process {second['pid']} is gone" in line

    # the next invocation (any backend) resumes the killed run from its checkpoint
    run_ablation(path, progress=False, backend_flags={"cpus_per_cell": 1})
    attempts = _attempts(victim)
    assert [a["backend"] for a in attempts] == ["slurm", "slurm", "local"]
    assert attempts[1]["from_epoch"] >= 1  # the requeued job resumed
    assert attempts[2]["from_epoch"] >= attempts[1]["from_epoch"]
    epochs = [json.loads(x)["epoch"] for x in (victim / "log.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3, 4]
    assert _metrics(out) == long_reference  # resume is exact
    assert main(["ablate", str(path), "--status"]) == 0
    assert "1 run: 1 done" in capsys.readouterr().out


def test_local_workers_a_killed_worker_fails_only_runs_in_flight(
    emoji_subset_folder, cache, tmp_path, long_reference
):
    """--workers 2: SIGKILL of one worker breaks the process pool; the runs that were training
    are recorded as failed (stale markers), and the next invocation resumes them exactly."""
    path = _write(tmp_path, emoji_subset_folder, cache, long=True, seeds=[0, 1, 2])
    out, killed = tmp_path / "abl", []

    def kill_one_worker() -> None:
        killed.append(_live_marker(out))
        os.kill(killed[0][1]["pid"], signal.SIGKILL)

    watcher = threading.Thread(target=kill_one_worker, daemon=True)
    watcher.start()
    flags = {"cpus_per_cell": 1}
    result = run_ablation(path, workers=2, progress=False, backend_flags=flags)
    watcher.join(timeout=10)
    status = {r["seed"]: r["status"] for r in result.rows}
    # the killed run and the one training beside it die with the pool; the run that was still
    # queued goes to a fresh pool
    assert sorted(status.values()) == ["failed", "failed", "ok"]
    assert all("worker process died" in r["error"] for r in result.rows if r["status"] != "ok")
    states = [run_state(r.id, Path(r.config.output_dir), 4) for r in load_ablation(path).runs]
    assert sorted(s.status for s in states) == ["done", "stale", "stale"]

    run_ablation(path, progress=False, backend_flags=flags)
    rows = _metrics(out)
    assert all(r["status"] == "ok" for r in rows.values())
    assert {k: rows[k] for k in long_reference} == long_reference  # seed 0 resumed exactly
    assert _attempts(killed[0][0])[-1]["from_epoch"] >= 1


def test_status_states_and_live_markers_are_not_resubmitted(
    emoji_subset_folder, cache, tmp_path, capsys
):
    path = _write(tmp_path, emoji_subset_folder, cache, grid={"loss.regularizers": ["none"]})
    runs = load_ablation(path).runs
    dirs = [Path(r.config.output_dir) for r in runs]
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        marker = {"host": socket.gethostname(), "pid": sleeper.pid, "backend": "slurm"}
        dirs[0].mkdir(parents=True)
        (dirs[0] / MARKER).write_text(json.dumps({**marker, "job_id": "77_0"}))
        dirs[1].mkdir(parents=True)
        (dirs[1] / "error.txt").write_text("Traceback ...\nRuntimeError: CUDA out of memory\n")
        states = [run_state(r.id, d, 3).status for r, d in zip(runs, dirs)]
        assert states == ["running", "failed"]
        assert main(["ablate", str(path), "--status"]) == 0
        text = capsys.readouterr().out
        assert "slurm on" in text and f"pid {sleeper.pid} job 77_0" in text
        assert "RuntimeError: CUDA out of memory" in text and "1 running, 1 failed" in text

        # another host's marker: live while its heartbeat is fresh, stale once it stops
        (dirs[0] / MARKER).write_text(json.dumps({**marker, "host": "node-elsewhere"}))
        assert run_state(runs[0].id, dirs[0], 3).status == "running"
        old = time.time() - 3600
        os.utime(dirs[0] / MARKER, (old, old))
        state = run_state(runs[0].id, dirs[0], 3)
        assert state.status == "stale" and "no heartbeat for 60 min" in state.detail
        os.utime(dirs[0] / MARKER)

        # a driver leaves a live run alone and says so; it retries the failed one
        result = run_ablation(path, progress=False, backend_flags={"cpus_per_cell": 1})
        assert [r["run_id"] for r in result.rows] == [runs[1].id]
        assert result.rows[0]["status"] == "ok" and not (dirs[1] / "error.txt").exists()
        assert any("running elsewhere" in n and runs[0].id in n for n in result.notes)
        assert not (dirs[0] / "metrics.json").exists()
        (dirs[0] / MARKER).write_text(json.dumps(marker))
    finally:
        sleeper.kill()
        sleeper.wait()
    state = run_state(runs[0].id, dirs[0], 3)  # same host: its process is gone now
    assert state.status == "stale" and f"process {sleeper.pid} is gone" in state.detail


def test_backend_options_from_file_and_flags(tmp_path):
    section = {
        "cpus_per_cell": 6,
        "gpus_per_cell": 1,
        "slurm": {"partition": "gpu", "time": "1-02:00:00", "mem": "64GB"},
        "ray": {"address": "auto"},
    }
    path = _write(tmp_path, tmp_path / "images", tmp_path / "cache", backend=section)
    load_ablation(path)  # the section is a known ablation key
    opts = resolve_options("slurm", path, {"slurm.partition": "a100", "cpus_per_cell": None})
    assert (opts.slurm.partition, opts.slurm.time, opts.slurm.mem) == ("a100", 26 * 60, "64G")
    assert (
        opts.cpus("slurm") == 6 and opts.gpus_per_cell == 1 and opts.prepare_mode("slurm") == "job"
    )
    extra = parse_sbatch_extra(["account=lab,qos=high", "--exclusive"])
    assert extra == {"account": "lab", "qos": "high", "exclusive": True}
    opts = resolve_options("slurm", path, {"slurm.sbatch_extra": extra, "slurm.time": "90"})
    assert opts.slurm.sbatch_extra["qos"] == "high" and opts.slurm.time == 90
    assert [slurm_minutes(t) for t in (5, "30", "2:30", "01:00:01", "2-0", "1-1:30")] == [
        5,
        30,
        3,
        61,
        2880,
        1530,
    ]
    assert resolve_options("local", path).prepare_mode("local") == "here"
    assert resolve_options("ray", path).cpus("ray") == 6


@pytest.mark.parametrize(
    "section, backend, flags, message",
    [
        ({"slurm": {"partiton": "gpu"}}, "slurm", {}, "unknown key 'slurm.partiton'; expected"),
        ({"gpu_per_cell": 1}, "slurm", {}, "unknown key 'gpu_per_cell'"),
        ({"slurm": {"time": "5h"}}, "slurm", {}, "backend.slurm.time: '5h' is not a Slurm time"),
        ({}, "slurm", {"slurm.time": "0"}, "--time: time must be at least 1 minute"),
        ({}, "slurm", {"slurm.mem": "lots"}, "--mem: 'lots' is not a Slurm memory size"),
        ({}, "slurm", {"slurm.sbatch_extra": {"array": "0-3"}}, "--sbatch-extra: --array is set"),
        ({}, "slurm", {"gpus_per_cell": 0.5}, "--gpus-per-cell: Slurm needs a whole number"),
        ({}, "ray", {"slurm.partition": "gpu"}, "--partition is a slurm option"),
        ({"cpus_per_cell": 0}, "ray", {}, "backend.cpus_per_cell: Input should be greater"),
        ({}, "ray", {"prepare": "later"}, "--prepare: Input should be 'here' or 'job'"),
        ("gpu", "slurm", {}, "backend must be a mapping"),
    ],
)
def test_bad_backend_options_are_one_line(tmp_path, section, backend, flags, message):
    path = _write(tmp_path, tmp_path / "images", tmp_path / "cache", backend=section)
    with pytest.raises(ConfigError) as info:
        resolve_options(backend, path, flags)
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("backend, module", [("slurm", "submitit"), ("ray", "ray")])
def test_missing_extra_is_one_line(tmp_path, monkeypatch, capsys, backend, module):
    path = _write(tmp_path, tmp_path / "images", tmp_path / "cache")
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    assert main(["ablate", str(path), "--backend", backend]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"langdml: error: --backend {backend} needs {module}: pip install 'langdml[{backend}]'\n"
    )
    assert not (tmp_path / "abl" / "runs").exists()


def test_slurm_submission_script_and_no_slurm_message(tmp_path, monkeypatch, capsys):
    """The sbatch header the options produce (a stand-in ``srun`` makes submitit believe it is on
    a cluster; nothing is submitted), and one line where there is no Slurm."""
    from langdml.ablation.slurm_backend import SlurmBackend

    section = {
        "gpus_per_cell": 1,
        "slurm": {"partition": "gpu", "mem": "64G", "setup": ["ml cuda"]},
    }
    path = _write(tmp_path, tmp_path / "images", tmp_path / "cache", backend=section)
    flags = {"slurm.time": "1-00:00:00", "slurm.sbatch_extra": parse_sbatch_extra(["account=lab"])}
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    assert main(["ablate", str(path), "--backend", "slurm", "--no-progress"]) == 2
    assert capsys.readouterr().err.startswith("langdml: error: --backend slurm: no Slurm on this")
    assert not (tmp_path / "abl" / "runs").exists()

    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "srun").write_text("#!/bin/sh\nexit 1\n")
    (tmp_path / "bin" / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    backend = SlurmBackend(resolve_options("slurm", path, flags), tmp_path / "abl", "langdml-x")
    script = backend.executor("langdml-x")._executor._make_submission_file_text("CMD", "uid")
    for line in (
        "--partition=gpu",
        "--gpus-per-node=1",
        "--cpus-per-task=4",
        "--mem=64G",
        "--time=1440",
        "--account=lab",
        "--job-name=langdml-x",
        "--signal=USR2@90",  # the timeout/preemption signal that triggers checkpoint + requeue
    ):
        assert f"#SBATCH {line}\n" in script
    assert "\nml cuda\n" in script and f"{tmp_path / 'abl' / 'slurm'}/%j/" in script
