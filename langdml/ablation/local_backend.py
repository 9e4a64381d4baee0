"""``--backend local`` (the default): cells in this process, or in ``--workers N`` spawned
processes on this machine."""

from __future__ import annotations

import os
import time
from pathlib import Path

from langdml.ablation.backends import Record, deliver, lost
from langdml.ablation.cells import (
    cell_record,
    extra_columns,
    finished,
    prepare_shared,
    read_marker,
    run_cell,
)


class LocalBackend:
    name = "local"

    def __init__(self, workers: int = 1, threads: int | None = None) -> None:
        self.workers, self.threads = workers, threads

    def close(self) -> None:
        pass

    def prepare(self, configs: list[dict], progress: bool) -> None:
        prepare_shared(configs, progress)

    def run(self, runs: list, record: Record) -> list[str]:
        threads = self.threads or max(1, (os.cpu_count() or 1) // max(1, self.workers))
        notes: list[str] = []
        if self.workers <= 1:
            for run in runs:
                deliver(run, run_cell(run.config.to_dict(), threads), record, notes)
            return notes
        remaining, since = list(runs), time.time()
        while remaining:
            broken = self._pool(remaining, threads, record, notes)
            retry = [run for run in broken if not self._settle(run, since, record, notes)]
            if len(retry) == len(remaining):  # the pool breaks before any run starts
                for run in retry:
                    deliver(run, lost("the worker processes could not start"), record, notes)
                break
            remaining = retry
        return notes

    def _pool(self, runs: list, threads: int, record: Record, notes: list[str]) -> list:
        """Run ``runs`` in a process pool; return those a broken pool left without a result."""
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed
        from concurrent.futures.process import BrokenProcessPool

        broken = []
        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx) as pool:
            futures = {pool.submit(run_cell, run.config.to_dict(), threads): run for run in runs}
            for fut in as_completed(futures):
                try:
                    deliver(futures[fut], fut.result(), record, notes)
                except BrokenProcessPool:  # a worker died; the pool stops the others
                    broken.append(futures[fut])
        return broken

    @staticmethod
    def _settle(run, since: float, record: Record, notes: list[str]) -> bool:
        """After a pool broke: record ``run`` if it finished or its attempt was killed (the next
        invocation resumes it); False when it never started (it goes to a fresh pool)."""
        run_dir, epochs = Path(run.config.output_dir), run.config.train.epochs
        done = finished(run_dir, epochs)
        if done is not None:
            seconds = cell_record(run_dir).get("seconds")
            extra = extra_columns(done)
            res = {"status": "ok", "metrics": done["final"], "extra": extra, "seconds": seconds}
            deliver(run, res, record, notes)
            return True
        marker = read_marker(run_dir)
        if marker is not None and marker.get("started", 0) >= since:
            message = "its worker process died or was stopped; rerun to resume from the checkpoint"
            deliver(run, lost(message), record, notes)
            return True
        return False
