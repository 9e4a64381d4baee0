"""Two writers, one folder: a run directory held by a live process refuses a second writer in one
line naming the holder; a killed holder's lock is detected as stale and taken over; an ablation
table holds every finished run on disk (whichever driver trained it) and names the runs still
running, in results.md and in `langdml report`."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from faultkit import ROOT, make_folder, one_line, python, tiny_cfg, write_cfg

from langdml.cli import main
from langdml.locks import HOLDER, FolderBusy, folder_lock, read_holder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("locks_images"))


def _holder(folder: Path, claim_run: bool = False) -> subprocess.Popen:
    """A child holding ``folder``'s lock (with ``claim_run``, also an ablation run's marker, as
    a cell being trained by another driver)."""
    code = f"""
        import time
        from pathlib import Path
        from langdml.ablation.cells import claim, owner
        from langdml.locks import folder_lock
        with folder_lock({str(folder)!r}):
            if {claim_run!r}:
                claim(Path({str(folder)!r}), owner("local"))
            print("held", flush=True)
            time.sleep(300)
    """
    proc = python(code)
    assert proc.stdout.readline().strip() == "held", proc.stderr.read()
    return proc


def test_second_train_on_a_held_run_dir_is_refused_naming_the_holder(folder, tmp_path, capsys):
    run = tmp_path / "run"
    cfg = write_cfg(tiny_cfg(folder, tmp_path), tmp_path / "c.yaml")
    proc = _holder(run)
    try:
        assert main(["train", str(cfg), "--output-dir", str(run)]) == 2
        line = one_line(capsys.readouterr().err)
        assert f"run directory '{run}' is in use by pid {proc.pid} on host " in line
        assert socket.gethostname() in line and not (run / "checkpoint.pt").exists()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # the killed holder left its record: a stale lock, taken over with one warning
    assert read_holder(run)["pid"] == proc.pid
    with pytest.warns(UserWarning, match=f"stale lock of pid {proc.pid} on host"):
        assert main(["train", str(cfg), "--output-dir", str(run)]) == 0
    assert (run / "metrics.json").is_file() and not (run / HOLDER).exists()


def test_lock_is_reentrant_in_one_process_and_released_after(tmp_path):
    with folder_lock(tmp_path / "d"), folder_lock(tmp_path / "d"):
        assert read_holder(tmp_path / "d")["pid"] == os.getpid()
    assert read_holder(tmp_path / "d") is None
    with folder_lock(tmp_path / "d"):  # free again
        pass


def test_waiting_writer_gets_the_lock_when_the_holder_ends(tmp_path):
    proc = _holder(tmp_path / "d")
    with pytest.raises(FolderBusy, match=f"pid {proc.pid}"):
        with folder_lock(tmp_path / "d", wait_s=0.2):
            pass
    proc.send_signal(signal.SIGTERM)  # ends without running its finally: a stale record
    proc.wait()
    with pytest.warns(UserWarning, match="stale lock"), folder_lock(tmp_path / "d", wait_s=5):
        assert read_holder(tmp_path / "d")["pid"] == os.getpid()


def _ablation(folder: Path, tmp_path: Path, out: Path) -> Path:
    base = {
        "name": "tiny",
        "data": {"dataset": f"imagefolder:{folder}", "cache_dir": str(tmp_path / "cache")},
        "model": {"image_size": 32, "embedding_dim": 16},
        "train": {"epochs": 2, "batch_size": 8, "m_per_class": 2, "iterations_per_epoch": 2},
        "eval": {"clustering": False, "every": 2},
    }
    abl = {"base": base, "output_dir": str(out), "seeds": [0, 1]}
    abl["grid"] = {"optimizer.lr": [0.002, 0.001]}
    path = tmp_path / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(abl))
    return path


def _csv(out: Path) -> list[dict]:
    with open(out / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_ablation_table_names_a_run_held_elsewhere_and_completes_later(folder, tmp_path, capsys):
    from langdml.ablation import load_ablation

    out = tmp_path / "abl"
    path = _ablation(folder, tmp_path, out)
    runs = load_ablation(path).runs
    held = runs[1]
    proc = _holder(Path(held.config.output_dir), claim_run=True)
    try:
        assert main(["ablate", str(path), "--no-progress"]) == 0
        md = (out / "results.md").read_text()
        assert (
            f"**Incomplete**: 3 of 4 runs finished; not in this table: 1 running ({held.id})" in md
        )
        assert [r["run_id"] for r in _csv(out)] == [r.id for r in runs if r is not held]
        assert main(["report", str(out)]) == 0
        page = (out / "report.html").read_text()
        assert "Incomplete ablation" in page and f"1 running: {held.id}" in page
        (out / "plan.json").rename(tmp_path / "plan.json")  # a folder from before plans
        assert main(["report", str(out)]) == 0
        page = (out / "report.html").read_text()
        assert "Incomplete ablation" in page and f"1 running: {held.id}" in page
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    capsys.readouterr()
    assert main(["ablate", str(path), "--no-progress"]) == 0
    assert "Incomplete" not in (out / "results.md").read_text()
    assert [r["status"] for r in _csv(out)] == ["ok"] * 4
    assert main(["report", str(out)]) == 0
    assert "Incomplete" not in (out / "report.html").read_text()


@pytest.mark.slow
def test_two_drivers_on_one_grid_train_each_run_once_and_the_last_table_holds_all(folder, tmp_path):
    out = tmp_path / "abl"
    path = _ablation(folder, tmp_path, out)
    cmd = [sys.executable, "-m", "langdml", "ablate", str(path), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errs = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    rows = _csv(out)
    assert len(rows) == 4 and {r["status"] for r in rows} == {"ok"}
    for run_dir in (out / "runs").iterdir():
        attempts = (run_dir / "attempts.jsonl").read_text().splitlines()
        assert len(attempts) == 1, (run_dir, attempts)  # no run trained twice
    assert [r["run_id"] for r in json.loads((out / "results.json").read_text())] == [
        r["run_id"] for r in rows
    ]


def test_report_of_an_ablation_before_its_first_run_finished(tmp_path, capsys):
    out = tmp_path / "abl"
    plan = {"name": "x", "runs": [{"run_id": "a", "epochs": 2}, {"run_id": "b", "epochs": 2}]}
    (out / "runs").mkdir(parents=True)
    (out / "plan.json").write_text(json.dumps(plan))
    proc = _holder(out / "runs" / "a", claim_run=True)
    try:
        assert main(["report", str(out)]) == 0
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    page = (out / "report.html").read_text()
    assert "0 of 2 runs finished (1 running: a; 1 pending: b)" in page
