"""``--backend slurm``: every run is one task of a Slurm job array, submitted through submitit.

A job that times out or is preempted is requeued by submitit (``CellJob.checkpoint``) and resumes
its run from the last epoch checkpoint (resume is exact). Logs and submitit's pickles go to
``<output_dir>/slurm/``. ``executor: local`` / ``debug`` runs the same submission on this
machine (subprocesses / in-process), which is how it is tested without a cluster.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from langdml.ablation.backends import BackendOptions, Record, deliver, lost, require
from langdml.ablation.cells import mark_submitted
from langdml.errors import LangDMLError, first_line
from langdml.paths import has_control


class CellJob:
    """The submitted callable. submitit calls ``checkpoint`` on timeout or preemption and requeues
    what it returns: the same call, which resumes the run from its checkpoint."""

    def __call__(self, config: dict, threads: int, cwd: str | None) -> dict:
        from langdml.ablation.cells import run_cell

        return run_cell(config, _slurm_threads(threads), cwd, "slurm", _job_id())

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)


def _job_id() -> str | None:
    try:
        import submitit

        return str(submitit.JobEnvironment().job_id)
    except Exception:  # not inside a submitit job
        return None


def _slurm_threads(requested: int) -> int:
    return int(os.environ.get("SLURM_CPUS_PER_TASK") or requested)


class SlurmBackend:
    name = "slurm"

    def __init__(
        self,
        options: BackendOptions,
        output_dir: Path,
        job_name: str,
        detach: bool = False,
        poll_s: float | None = None,
    ) -> None:
        self.submitit = require("slurm")
        self.options, self.job_name, self.detach = options, job_name, detach
        self.folder = Path(output_dir).resolve() / "slurm"
        for what, text in (("output folder", str(self.folder)), ("job name", job_name)):
            if has_control(text):  # it becomes #SBATCH lines and the srun line of the script
                raise LangDMLError(
                    f"--backend slurm: the {what} {text!r} holds a newline or another control "
                    "character, which cannot be written into a job script; choose another"
                )
        on_cluster = options.slurm.executor == "slurm"
        if on_cluster and shutil.which("srun") is None:
            raise LangDMLError(
                "--backend slurm: no Slurm on this machine (srun not found); submit from a "
                "cluster login node, or try the submission here with --slurm-executor local"
            )
        self.poll_s = poll_s if poll_s is not None else (15.0 if on_cluster else 0.2)

    def close(self) -> None:
        pass

    def executor(self, name: str) -> Any:
        s, o = self.options.slurm, self.options
        ex = self.submitit.AutoExecutor(
            folder=self.folder / "%j",
            cluster=s.executor,
            slurm_max_num_timeout=s.max_requeues,
            local_max_num_timeout=s.max_requeues,
        )
        ex.update_parameters(
            name=name,
            timeout_min=s.time,
            cpus_per_task=o.cpus("slurm"),
            gpus_per_node=int(o.gpus_per_cell),
            slurm_partition=s.partition,
            slurm_mem=s.mem,
            slurm_additional_parameters=dict(s.sbatch_extra) or None,
            slurm_setup=list(s.setup) or None,
            slurm_array_parallelism=s.array_parallelism,
        )
        return ex

    def prepare(self, configs: list[dict], progress: bool) -> None:
        """Shared features and text embeddings in one job (on a compute node, with the cells'
        resources) before any cell is submitted."""
        from langdml.ablation.cells import prepare_job

        job = self.executor(f"{self.job_name}-prepare").submit(prepare_job, configs, os.getcwd())
        if progress:
            print(f"shared preparation: Slurm job {job.job_id}", file=sys.stderr)
        try:
            res = job.result()
        except Exception as exc:
            res = {"status": "failed", "error": first_line(exc)}
        if res["status"] != "ok":
            raise LangDMLError(
                f"shared preparation failed in Slurm job {job.job_id}: {res['error']} "
                f"(log: {self.folder / str(job.job_id)})"
            )

    def run(self, runs: list, record: Record) -> list[str]:
        ex = self.executor(self.job_name)
        threads, cwd = self.options.cpus("slurm"), os.getcwd()
        with ex.batch():
            jobs = [ex.submit(CellJob(), run.config.to_dict(), threads, cwd) for run in runs]
        for job, run in zip(jobs, runs):
            mark_submitted(Path(run.config.output_dir), "slurm", str(job.job_id))
            if self.options.slurm.executor != "slurm":
                # submitit waits 15 s for a killed job's result file (shared-filesystem caches);
                # this machine's own files need no such wait
                job._results_timeout_s = 1
        notes = [f"submitted {len(jobs)} Slurm job(s): {_id_range(jobs)}; logs in {self.folder}"]
        if self.detach:
            return notes + ["detached: `--status` shows progress; rerun to rebuild the table"]
        pending = list(zip(jobs, runs))
        try:
            while pending:
                waiting = []
                for job, run in pending:
                    if job.done():
                        deliver(run, _result(job), record, notes)
                    else:
                        waiting.append((job, run))
                pending = waiting
                if pending:
                    time.sleep(self.poll_s)
        except KeyboardInterrupt:
            if self.options.slurm.executor == "slurm":
                print(
                    "langdml: the Slurm jobs keep running; `langdml ablate ... --status` shows "
                    "them, rerunning the same command collects the table",
                    file=sys.stderr,
                )
            raise
        return notes


def _result(job: Any) -> dict:
    try:
        return job.result()
    except Exception as exc:  # killed, cancelled, node failure, out of requeues
        return lost(
            f"Slurm job {job.job_id} ended without a result ({first_line(exc)}); "
            "rerun to resume from the checkpoint"
        )


def _id_range(jobs: list) -> str:
    ids = [str(j.job_id) for j in jobs]
    arrays = sorted({i.split("_")[0] for i in ids})
    if len(ids) > 1 and len(arrays) == 1 and all("_" in i for i in ids):
        return f"array {arrays[0]} ({len(ids)} tasks)"
    return ", ".join(ids[:6]) + (f" … ({len(ids)})" if len(ids) > 6 else "")
