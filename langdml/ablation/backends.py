"""Where the cells of an ablation run: ``local`` (this machine), ``slurm`` (submitit), ``ray``.

Every backend executes the same unit (``cells.run_cell``) against the same results folder, so a
grid can be started on one backend and finished on another. Resources come from the ablation
file's ``backend:`` section, overridden by command-line flags:

.. code-block:: yaml

    backend:
      cpus_per_cell: 8        # slurm: --cpus-per-task (default 4); ray: num_cpus (default 1);
                              # local: torch threads per cell (default: cores / workers)
      gpus_per_cell: 1        # slurm: --gpus-per-node; ray: num_gpus (may be fractional)
      prepare: job            # job (default on slurm/ray): shared features in one job first;
                              # here: in the submitting process
      slurm:
        partition: gpu
        time: "04:00:00"      # per job; timed-out jobs requeue and resume
        mem: 64G
        sbatch_extra: {account: mylab, constraint: a100}
        setup: ["module load cuda/12.4"]
        array_parallelism: 16 # at most this many cells at once
        max_requeues: 10      # timeouts per cell before giving up (preemptions do not count)
        executor: slurm       # local / debug: the same submission on this machine
      ray:
        address: auto         # default: a local Ray instance
        max_retries: 3        # a cell whose worker or node dies is retried (and resumes)
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from langdml.errors import ConfigError, LangDMLError
from langdml.paths import has_control

BACKENDS = ("local", "slurm", "ray")
EXTRAS = {"slurm": ("submitit", "slurm"), "ray": ("ray", "ray")}
# Command-line flags and the ablation-file key each one overrides.
FLAGS = {
    "cpus_per_cell": "--cpus-per-cell",
    "gpus_per_cell": "--gpus-per-cell",
    "prepare": "--prepare",
    "slurm.partition": "--partition",
    "slurm.time": "--time",
    "slurm.mem": "--mem",
    "slurm.sbatch_extra": "--sbatch-extra",
    "slurm.executor": "--slurm-executor",
    "ray.address": "--ray-address",
}
# sbatch options submitit sets itself: overriding them would break logs, arrays or requeueing.
_PARTITION = re.compile(r"[A-Za-z0-9_.-]+(,[A-Za-z0-9_.-]+)*")
_OPTION = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
_RESERVED_SBATCH = {"array", "output", "error", "signal", "open-mode", "job-name"}


class MissingExtraError(LangDMLError):
    """A backend whose optional dependency is not installed."""


def require(backend: str) -> Any:
    """Import the backend's engine, or one line naming the extra to install."""
    module, extra = EXTRAS[backend]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(
            f"--backend {backend} needs {module}: pip install 'langdml[{extra}]'"
        ) from None


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SlurmSection(_Section):
    partition: str | None = None
    time: int = 240  # minutes
    mem: str | None = None
    sbatch_extra: dict[str, str | int | bool] = Field(default_factory=dict)
    setup: list[str] = Field(default_factory=list)
    array_parallelism: int = Field(256, ge=1)
    max_requeues: int = Field(10, ge=0)
    executor: Literal["slurm", "local", "debug"] = "slurm"

    @field_validator("partition", mode="before")
    @classmethod
    def _partition(cls, value: Any) -> Any:
        if value is not None and not _PARTITION.fullmatch(str(value)):
            raise ValueError(
                f"{value!r} is not a Slurm partition name (letters, digits, '_', '-', '.'; "
                "several separated by ',')"
            )
        return value

    @field_validator("time", mode="before")
    @classmethod
    def _time(cls, value: Any) -> int:
        return slurm_minutes(value)

    @field_validator("mem", mode="before")
    @classmethod
    def _mem(cls, value: Any) -> str | None:
        if value is None:
            return None
        match = re.fullmatch(r"(\d+)\s*([KMGT]?)B?", str(value).strip(), re.IGNORECASE)
        if not match or int(match.group(1)) < 1:
            raise ValueError(f"{value!r} is not a Slurm memory size such as 64G or 32000M")
        return match.group(1) + (match.group(2).upper() or "M")

    @field_validator("sbatch_extra", mode="before")
    @classmethod
    def _extra(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            raise ValueError("must map sbatch option names to values, e.g. {account: mylab}")
        clean = {str(k).lstrip("-"): v for k, v in value.items()}
        for key, item in clean.items():
            script_safe_option(key, item)
        clash = sorted(set(clean) & _RESERVED_SBATCH)
        if clash:
            raise ValueError(f"--{clash[0]} is set by langdml/submitit and cannot be overridden")
        return clean


def script_safe_option(key: str, value: Any) -> None:
    """An sbatch option that becomes an ``#SBATCH --key=value`` line of the job script: the key
    is a plain option name and the value one line (submitit shell-quotes it, so ``;`` and
    ``$(`` stay text); anything else is refused, never copied into the script."""
    if not _OPTION.fullmatch(key):
        raise ValueError(f"{key!r} is not an sbatch option name (letters, digits, '-', '_')")
    if not isinstance(value, bool | int | str):
        raise ValueError(f"--{key}: expected a string, a number or true, got {value!r}")
    if isinstance(value, str) and has_control(value):
        raise ValueError(
            f"--{key}={value!r} holds a newline or another control character; an sbatch "
            "option value must be one line"
        )


class RaySection(_Section):
    address: str | None = None
    max_retries: int = Field(3, ge=0)


class BackendOptions(_Section):
    cpus_per_cell: int | None = Field(None, ge=1)
    gpus_per_cell: float = Field(0, ge=0)
    prepare: Literal["here", "job"] | None = None
    slurm: SlurmSection = Field(default_factory=SlurmSection)
    ray: RaySection = Field(default_factory=RaySection)

    def cpus(self, backend: str) -> int:
        return self.cpus_per_cell or (4 if backend == "slurm" else 1)

    def prepare_mode(self, backend: str) -> str:
        return self.prepare or ("here" if backend == "local" else "job")


def slurm_minutes(value: Any) -> int:
    """Slurm time (MINUTES, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS) as whole minutes."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a Slurm time")
    if isinstance(value, int):
        if value < 1:
            raise ValueError(f"time must be at least 1 minute, got {value}")
        return value
    text = str(value).strip()
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if not match:
        raise ValueError(f"{value!r} is not a Slurm time (MINUTES, HH:MM:SS or D-HH:MM:SS)")
    days, a, b, c = (int(g) if g else None for g in match.groups())
    if days is not None:  # D-HH[:MM[:SS]]
        seconds = days * 86400 + a * 3600 + (b or 0) * 60 + (c or 0)
    elif c is not None:  # HH:MM:SS
        seconds = a * 3600 + b * 60 + c
    elif b is not None:  # MM:SS
        seconds = a * 60 + b
    else:  # MINUTES
        seconds = a * 60
    if seconds < 60:
        raise ValueError(f"time must be at least 1 minute, got {value!r}")
    return -(-seconds // 60)


def resolve_options(
    backend: str, ablation_path: str | Path, flags: dict[str, Any] | None = None
) -> BackendOptions:
    """The file's ``backend:`` section with command-line ``flags`` (dotted keys, None = unset)
    on top; every error is one line naming the file key or the flag."""
    from langdml.config import load_yaml

    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; expected one of {list(BACKENDS)}")
    section = load_yaml(ablation_path).get("backend") or {}
    where = f"ablation {ablation_path}: backend"
    if not isinstance(section, dict):
        raise ConfigError(f"{where} must be a mapping (cpus_per_cell, gpus_per_cell, slurm, ray)")
    _validate(section, where, {})
    flags = {k: v for k, v in (flags or {}).items() if v is not None and v != {}}
    for key in flags:
        scope = key.split(".")[0]
        if scope in ("slurm", "ray") and scope != backend:
            raise ConfigError(f"{FLAGS[key]} is a {scope} option; add --backend {scope}")
    tree = {k: (dict(v) if isinstance(v, dict) else v) for k, v in section.items()}
    for key, value in flags.items():
        parts = key.split(".")
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        if parts[-1] == "sbatch_extra":
            value = {**(node.get("sbatch_extra") or {}), **value}
        node[parts[-1]] = value
    options = _validate(tree, where, flags)
    if backend == "slurm" and options.gpus_per_cell != int(options.gpus_per_cell):
        source = "--gpus-per-cell" if "gpus_per_cell" in flags else f"{where}.gpus_per_cell"
        raise ConfigError(f"{source}: Slurm needs a whole number of GPUs per cell")
    if backend != "local":
        require(backend)
    return options


def _validate(tree: dict, where: str, flags: dict[str, Any]) -> BackendOptions:
    try:
        return BackendOptions.model_validate(tree)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err["loc"]]
        dotted = ".".join(loc)
        flag = next((FLAGS[k] for k in flags if dotted == k or dotted.startswith(k + ".")), None)
        if err["type"] == "extra_forbidden":
            parent: Any = BackendOptions
            for part in loc[:-1]:
                parent = parent.model_fields[part].annotation
            raise ConfigError(
                f"{where}: unknown key {dotted!r}; expected one of {sorted(parent.model_fields)}"
            ) from None
        msg = str(err["msg"]).removeprefix("Value error, ")
        if flag:
            raise ConfigError(f"{flag}: {msg}") from None
        raise ConfigError(f"{where}.{dotted}: {msg}") from None


def parse_sbatch_extra(items: list[str] | None) -> dict[str, str | bool]:
    """``--sbatch-extra account=lab --sbatch-extra exclusive`` → {account: lab, exclusive: True}."""
    out: dict[str, str | bool] = {}
    for item in items or []:
        for part in filter(None, (p.strip() for p in item.split(","))):
            key, sep, value = part.partition("=")
            if not key.strip("- "):
                raise ConfigError(f"--sbatch-extra {item!r}: expected KEY=VALUE or a bare flag")
            out[key.strip().lstrip("-")] = value.strip() if sep else True
    return out


Record = Callable[[Any, dict], None]


class Backend(Protocol):
    name: str

    def prepare(self, configs: list[dict], progress: bool) -> None: ...

    def run(self, runs: list, record: Record) -> list[str]:
        """Execute ``runs``, calling ``record(run, result)`` as each ends; return notes."""

    def close(self) -> None: ...


def lost(message: str) -> dict:
    """The result of a cell whose process or job ended without reporting."""
    return {"status": "failed", "error": message, "seconds": None}


def deliver(run: Any, res: dict, record: Record, notes: list[str]) -> None:
    if res["status"] == "skipped":
        notes.append(f"{run.id}: {res['error']}")
    else:
        record(run, res)
