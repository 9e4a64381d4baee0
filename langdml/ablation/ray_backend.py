"""``--backend ray``: every run is one Ray task with ``num_cpus`` / ``num_gpus`` per cell.

``--ray-address`` (or ``backend.ray.address``, else ``$RAY_ADDRESS``) connects to a running
cluster (``auto``, ``HOST:6379`` or ``ray://HOST:10001``); without one a new local Ray instance
is started for the grid and shut down after it. A task whose worker process or node dies is
retried by Ray (``max_retries``) and resumes the run from its checkpoint. The results folder
must be on a filesystem every node sees.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from langdml.ablation.backends import BackendOptions, Record, deliver, lost, require
from langdml.ablation.cells import mark_submitted
from langdml.errors import ConfigError, LangDMLError

# Forwarded to the workers of a remote cluster (a local instance inherits the environment).
_ENV = (
    "LANGDML_CACHE",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "TOKENIZERS_PARALLELISM",
    "LANGDML_ALLOW_DOWNLOAD",
    "HF_HOME",
)


def _cell_task(config: dict, threads: int, cwd: str | None) -> dict:
    import ray

    from langdml.ablation.cells import run_cell

    # the task id stays the same when Ray retries the task, so a retry takes over the run
    task_id = ray.get_runtime_context().get_task_id()
    return run_cell(config, threads, cwd, "ray", task_id)


def _prepare_task(configs: list[dict], cwd: str | None) -> dict:
    from langdml.ablation.cells import prepare_job

    return prepare_job(configs, cwd)


class RayBackend:
    name = "ray"

    def __init__(self, options: BackendOptions, poll_s: float = 1.0) -> None:
        self.ray = require("ray")
        self.options, self.poll_s = options, poll_s
        self.started = False  # this backend started Ray (and shuts it down in close())

    def _connect(self) -> None:
        ray = self.ray
        if ray.is_initialized():
            return
        address = self.options.ray.address or os.environ.get("RAY_ADDRESS")
        kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
        if address:
            env = {k: os.environ[k] for k in _ENV if k in os.environ}
            kwargs["runtime_env"] = {"env_vars": env} if env else None
        else:  # a new instance on this machine, even if another one runs here
            address, kwargs["include_dashboard"] = "local", False
        try:
            ray.init(address=address, **{k: v for k, v in kwargs.items() if v is not None})
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise LangDMLError(f"ray.init(address={address!r}): {exc}".splitlines()[0]) from None
        self.started = True

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()
            self.started = False

    def _options(self) -> dict[str, Any]:
        cpus, gpus = self.options.cpus("ray"), self.options.gpus_per_cell
        total = self.ray.cluster_resources()
        for name, need in (("CPU", cpus), ("GPU", gpus)):
            if need and total.get(name, 0) < need and not self.options.ray.address:
                flag = "--cpus-per-cell" if name == "CPU" else "--gpus-per-cell"
                raise ConfigError(
                    f"{flag} {need:g}: the Ray instance has {total.get(name, 0):g} {name}s"
                )
        return {"num_cpus": cpus, "num_gpus": gpus, "max_retries": self.options.ray.max_retries}

    def prepare(self, configs: list[dict], progress: bool) -> None:
        self._connect()
        task = self.ray.remote(_prepare_task).options(**self._options())
        res = self._get(task.remote(configs, os.getcwd()), "shared preparation")
        if res["status"] != "ok":
            raise LangDMLError(f"shared preparation failed in a Ray task: {res['error']}")

    def run(self, runs: list, record: Record) -> list[str]:
        self._connect()
        task = self.ray.remote(_cell_task).options(**self._options())
        threads, cwd = self.options.cpus("ray"), os.getcwd()
        refs = {}
        for run in runs:
            ref = task.remote(run.config.to_dict(), threads, cwd)
            refs[ref] = run
            mark_submitted(run.config.output_dir, "ray", ref.task_id().hex())
        notes: list[str] = []
        while refs:
            ready, _ = self.ray.wait(list(refs), num_returns=1, timeout=self.poll_s)
            for ref in ready:
                run = refs.pop(ref)
                deliver(run, self._get(ref, f"Ray task of {run.id}"), record, notes)
        return notes

    def _get(self, ref: Any, what: str) -> dict:
        try:
            return self.ray.get(ref)
        except Exception as exc:  # worker or node died more often than max_retries
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            return lost(
                f"{what} ended without a result ({type(exc).__name__}: {first}); "
                "rerun to resume from the checkpoint"
            )
