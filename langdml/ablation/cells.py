"""One ablation run as a unit any backend executes: claim the run directory, train, record.

Besides the trainer's files, a run directory holds:

- ``running.json``: written when an attempt starts and removed when it ends (host, pid, job id,
  backend, start time); its modification time is refreshed every ``HEARTBEAT_S`` seconds. A
  marker is *stale* when its process is gone (same host) or its heartbeat is older than
  ``STALE_AFTER_S`` (another host): that attempt was killed and the next one resumes from the
  run's checkpoint. A live marker of another owner makes other attempts step aside.
- ``attempts.jsonl``: one line per attempt (who, when, the epoch it resumed from).
- ``cell.json``: written atomically when an attempt ends: status, seconds, host, job id.
- ``error.txt``: the traceback of a failed attempt (removed when the next attempt starts).
- ``submitted.json``: the cluster job that was submitted for the run (backend, job id, time).
- ``.langdml.lock`` / ``.langdml.lock.json``: the run directory's lock and its holder
  (``langdml.locks``), held for the whole attempt.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langdml.io import atomic_write_json, atomic_write_text, verify_checksum
from langdml.locks import FolderBusy, describe_holder, folder_lock

MARKER = "running.json"
ATTEMPTS = "attempts.jsonl"
CELL = "cell.json"
ERROR = "error.txt"
SUBMITTED = "submitted.json"
HEARTBEAT_S = 30.0
STALE_AFTER_S = 600.0
# In the ablation folder: every run of the grid (id, epochs), so `langdml report` tells
# finished, running and pending runs apart while the ablation is under way.
PLAN = "plan.json"
STATES = ("done", "running", "stale", "failed", "pending")


def extra_columns(summary: dict) -> dict:
    """A finished run's table columns beyond the retrieval metrics: cross-modal (``xmodal``)
    and mistake-severity (``hierarchy``) results, when it has them."""
    return {**(summary.get("xmodal") or {}), **(summary.get("hierarchy") or {})}


def execute(config: dict, threads: int) -> dict:
    """Train one run (in a worker process or in-process); never raises."""
    import torch

    from langdml.config import validate_config
    from langdml.pipeline import train_experiment

    torch.set_num_threads(max(1, threads))
    t0 = time.perf_counter()
    try:
        cfg = validate_config(config)
        cfg.train.progress = False
        result = train_experiment(cfg)
        extra = extra_columns(result.extra)
        return {
            "status": "ok",
            "metrics": result.metrics,
            "extra": extra,
            "seconds": time.perf_counter() - t0,
        }
    except Exception as exc:  # a failed cell must not stop the grid
        msg = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        return {
            "status": "failed",
            "error": msg,
            "traceback": traceback.format_exc(),
            "seconds": time.perf_counter() - t0,
        }


def owner(backend: str = "local", job_id: str | None = None) -> dict[str, Any]:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "job_id": job_id or _env_job_id(),
        "backend": backend,
    }


def _env_job_id() -> str | None:
    env = os.environ
    if env.get("SLURM_ARRAY_JOB_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env.get('SLURM_ARRAY_TASK_ID', '0')}"
    return env.get("SLURM_JOB_ID") or env.get("SUBMITIT_LOCAL_JOB_ID")


def mark_submitted(run_dir: Path, backend: str, job_id: str) -> None:
    payload = {"backend": backend, "job_id": job_id, "submitted": time.time()}
    atomic_write_json(Path(run_dir) / SUBMITTED, payload)


def _submitted(run_dir: Path) -> str:
    try:
        sub = json.loads((Path(run_dir) / SUBMITTED).read_text())
        return f"; submitted as {sub['backend']} job {sub['job_id']}"
    except (OSError, ValueError, KeyError):
        return ""


def read_marker(run_dir: Path) -> dict | None:
    """The run's marker with ``age_s`` (seconds since its last heartbeat), or None."""
    path = Path(run_dir) / MARKER
    try:
        marker = json.loads(path.read_text())
        marker["age_s"] = max(0.0, time.time() - path.stat().st_mtime)
    except (OSError, json.JSONDecodeError):
        return None
    return marker


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def stale_reason(marker: dict) -> str | None:
    """Why a marker no longer stands for a live attempt, or None when it does."""
    if marker.get("host") == socket.gethostname():
        pid = int(marker.get("pid", -1))
        return None if pid > 0 and _pid_alive(pid) else f"process {pid} is gone"
    if marker["age_s"] > STALE_AFTER_S:
        return f"no heartbeat for {_duration(marker['age_s'])}"
    return None


def _same_owner(a: dict, b: dict) -> bool:
    if a.get("job_id") and a.get("job_id") == b.get("job_id"):
        return True  # a requeued Slurm job or a retried Ray task keeps its id
    return a.get("host") == b.get("host") and a.get("pid") == b.get("pid")


def claim(run_dir: Path, me: dict) -> dict | None:
    """Write our marker unless a live attempt of another owner holds the run; return that one's
    marker when it does. :func:`run_cell` calls it holding the run directory's lock
    (``langdml.locks``), so of two drivers started together only one wins."""
    held = read_marker(run_dir)
    if held and not _same_owner(held, me) and stale_reason(held) is None:
        return held
    atomic_write_json(Path(run_dir) / MARKER, {**me, "started": time.time()})
    return None


def release(run_dir: Path, me: dict) -> None:
    held = read_marker(run_dir)
    if held and _same_owner(held, me):
        with contextlib.suppress(FileNotFoundError):
            (Path(run_dir) / MARKER).unlink()


class _Heartbeat:
    """Refreshes the marker's modification time while the attempt runs."""

    def __init__(self, path: Path) -> None:
        self.path, self.stop_event = path, threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True, name="langdml-heartbeat")

    def _beat(self) -> None:
        while not self.stop_event.wait(HEARTBEAT_S):
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def __enter__(self) -> _Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_event.set()
        self.thread.join(timeout=5)


@contextlib.contextmanager
def _working_dir(cwd: str | None):
    """Relative paths in a config (cache, output, dataset) mean the submitting directory."""
    if not cwd or os.path.abspath(cwd) == os.getcwd():
        yield
        return
    previous = os.getcwd()
    os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(previous)


def run_cell(
    config: dict,
    threads: int,
    cwd: str | None = None,
    backend: str = "local",
    job_id: str | None = None,
) -> dict:
    """Claim the run directory, train (resuming from its checkpoint), record; never raises.

    Returns the ``execute`` result, or ``{"status": "skipped", ...}`` when a live attempt
    elsewhere holds the run."""
    with _working_dir(cwd):
        run_dir = Path(config["output_dir"])
        run_dir.mkdir(parents=True, exist_ok=True)
        me = owner(backend, job_id)
        with contextlib.ExitStack() as stack:
            try:  # the lock: two drivers started together cannot both win the claim
                stack.enter_context(folder_lock(run_dir, "ablation run"))
            except FolderBusy as busy:
                who = describe_holder(busy.holder)
                return {"status": "skipped", "error": f"running elsewhere: {who}"}
            held = claim(run_dir, me)
            if held is not None:
                return {"status": "skipped", "error": "running elsewhere: " + describe_owner(held)}
            return _attempt(run_dir, config, threads, me)


def _attempt(run_dir: Path, config: dict, threads: int, me: dict) -> dict:
    """One claimed attempt at a run: train (or report it finished), record, release."""
    try:
        done = finished(run_dir, config.get("train", {}).get("epochs"))
        if done is not None:  # e.g. a duplicate job of a run that finished meanwhile
            seconds = cell_record(run_dir).get("seconds")
            metrics, extra = done["final"], extra_columns(done)
            return {"status": "ok", "metrics": metrics, "extra": extra, "seconds": seconds}
        _append_attempt(run_dir, me, config)
        with contextlib.suppress(FileNotFoundError):
            (run_dir / ERROR).unlink()
        with _Heartbeat(run_dir / MARKER):
            res = execute(config, threads)
        if res["status"] != "ok":
            atomic_write_text(run_dir / ERROR, res.get("traceback", res.get("error", "")))
        atomic_write_json(
            run_dir / CELL,
            {"status": res["status"], "seconds": res["seconds"], "error": res.get("error", "")}
            | {k: me[k] for k in ("host", "job_id", "backend")},
        )
        return res
    finally:
        release(run_dir, me)


def _append_attempt(run_dir: Path, me: dict, config: dict) -> None:
    record = {**me, "started": time.time(), "from_epoch": last_epoch(run_dir)}
    record["epochs"] = config.get("train", {}).get("epochs")
    with (run_dir / ATTEMPTS).open("a") as fh:
        fh.write(json.dumps(record) + "\n")


def last_epoch(run_dir: Path) -> int:
    """The last epoch the run's log records (0 when it has not finished one)."""
    try:
        lines = (Path(run_dir) / "log.jsonl").read_text().splitlines()
        return int(json.loads(lines[-1])["epoch"]) if lines else 0
    except (OSError, ValueError, KeyError, IndexError):
        return 0


def finished(run_dir: Path, epochs: int) -> dict | None:
    """The run's metrics.json when it finished all ``epochs``, else None."""
    path = Path(run_dir) / "metrics.json"
    if not path.is_file() or verify_checksum(path):
        return None  # a damaged one: training again recomputes it from the checkpoint
    try:
        done = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    return done if done.get("epochs") == epochs else None


def cell_record(run_dir: Path) -> dict:
    try:
        return json.loads((Path(run_dir) / CELL).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


@dataclass
class RunState:
    run_id: str
    status: str  # one of STATES
    detail: str
    epoch: int = 0
    epochs: int = 0
    marker: dict | None = field(default=None, repr=False)


def run_state(run_id: str, run_dir: Path, epochs: int) -> RunState:
    """done / running / stale / failed / pending, from the run directory alone."""
    run_dir = Path(run_dir)
    epoch = last_epoch(run_dir)
    done = finished(run_dir, epochs)
    if done is not None:
        r1 = done.get("final", {}).get("recall@1")
        seconds = cell_record(run_dir).get("seconds")
        detail = (f"R@1 {r1 * 100:.2f}" if r1 is not None else "finished") + (
            f", {seconds:.1f} s" if isinstance(seconds, int | float) else ""
        )
        return RunState(run_id, "done", detail, epochs, epochs)
    marker = read_marker(run_dir)
    progress = f"epoch {epoch}/{epochs}"
    if marker is not None:
        reason = stale_reason(marker)
        who = describe_owner(marker)
        if reason is None:
            beat = _duration(marker["age_s"])
            detail = f"{who}, {progress}, heartbeat {beat} ago"
            return RunState(run_id, "running", detail, epoch, epochs, marker)
        return RunState(
            run_id,
            "stale",
            f"marker of {who} is stale ({reason}); resumes from {progress}",
            epoch,
            epochs,
            marker,
        )
    error = _last_error(run_dir)
    if error is not None:
        return RunState(run_id, "failed", error, epoch, epochs)
    detail = (f"resumes from {progress}" if epoch else "not started") + _submitted(run_dir)
    return RunState(run_id, "pending", detail, epoch, epochs)


def _last_error(run_dir: Path) -> str | None:
    path = run_dir / ERROR
    if not path.is_file():
        return None
    lines = [x for x in path.read_text(errors="replace").splitlines() if x.strip()]
    return (lines[-1].strip()[:200] if lines else "failed") or "failed"


def describe_owner(marker: dict) -> str:
    text = f"{marker.get('backend', '?')} on {marker.get('host', '?')} pid {marker.get('pid', '?')}"
    return text + (f" job {marker['job_id']}" if marker.get("job_id") else "")


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def prepare_shared(configs: list[dict], progress: bool = False) -> None:
    """Datasets, frozen features and text embeddings the runs need, each built once, so runs
    only read caches (N cells never extract the same features N times)."""
    from langdml.config import validate_config
    from langdml.experiment import class_text_embeddings, prepare_data
    from langdml.io import stable_hash

    done_data, done_text = {}, set()
    for config in configs:
        cfg = validate_config(config)
        cfg.train.progress = progress
        data_key = stable_hash([cfg.data.model_dump(), cfg.model.model_dump()])
        if data_key not in done_data:
            done_data[data_key] = prepare_data(cfg)
        # class names or pseudo-labels through the text model (None when the run uses neither)
        text_key = stable_hash(
            [data_key, cfg.text.model_dump(), cfg.loss.language.model_dump(), cfg.loss.base.name]
        )
        if text_key not in done_text:
            class_text_embeddings(cfg, done_data[data_key].train)
            done_text.add(text_key)


def prepare_job(configs: list[dict], cwd: str | None = None) -> dict:
    """``prepare_shared`` as a cluster job: returns ``{"status", "error", "seconds"}``."""
    t0 = time.perf_counter()
    with _working_dir(cwd):
        try:
            prepare_shared(configs, progress=False)
            return {"status": "ok", "seconds": time.perf_counter() - t0}
        except Exception as exc:
            msg = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            return {"status": "failed", "error": msg, "seconds": time.perf_counter() - t0}
