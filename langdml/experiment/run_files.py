"""A run directory's file names, and reading its checkpoints.

:func:`newest_checkpoint` picks the last epoch's checkpoint that loads: ``checkpoint.pt``, or
``checkpoint.prev.pt`` (the epoch before) when ``checkpoint.pt`` is missing or damaged. Training's
resume (``langdml.train.checkpoint``) and :func:`open_checkpoint`, which
:class:`langdml.experiment.Run` reopens finished runs with, both use it; it only reads (resume
sets a damaged file aside itself). Every file is verified against its ``.sha256`` sidecar and
loaded with ``weights_only=True`` (:func:`langdml.weights.load_weights_file`).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from langdml.config.tree import deprecated
from langdml.errors import LangDMLError
from langdml.weights import load_weights_file

CONFIG = "config.yaml"
CHECKPOINT = "checkpoint.pt"  # the last epoch, with optimiser state (resume)
PREVIOUS = "checkpoint.prev.pt"  # the epoch before: the fallback when checkpoint.pt is damaged
BEST = "best.pt"  # the best epoch by eval.best_metric
METRICS = "metrics.json"
CHECKPOINTS = {"last": CHECKPOINT, "best": BEST}  # --checkpoint's words → files


def checkpoint_word(word: str) -> str:
    """``word`` as a key of CHECKPOINTS: "final", the old word for "last", is mapped to it with
    a one-line deprecation message; other words are returned as given (callers check them)."""
    if word == "final":
        deprecated(
            "--checkpoint final (checkpoint='final') is now 'last'; 'final' works for one release"
        )
        return "last"
    return word


def read_checkpoint(path: Path, hint: str = "") -> dict:
    """A langdml checkpoint's state (it holds the model's weights); a one-line LangDMLError naming
    the file, ending in ``hint``, when it is missing, damaged or not a langdml checkpoint."""
    if not path.is_file():
        raise LangDMLError(f"cannot load checkpoint {path}: it is missing{hint}")
    state = load_weights_file(path, "checkpoint", hint)
    if not isinstance(state, dict) or "model" not in state:
        raise LangDMLError(f"cannot load checkpoint {path}: it is not a langdml checkpoint{hint}")
    return state


def load_into(module: Any, state: dict, path: Path, cfg: Any) -> None:
    """Load a checkpoint's model weights into the model its config builds; when they do not fit,
    one ModelError line naming the file, the keys and the config value (``model.embedding_dim``,
    ``model.head``) they disagree with."""
    from langdml.weights import fit_state_dict

    values = {"model.embedding_dim": int(cfg.model.embedding_dim)}
    fit_state_dict(module, state, f"checkpoint {path} (model.head {cfg.model.head!r})", values)


def newest_checkpoint(run_dir: Path) -> tuple[Path | None, dict | None, list[str]]:
    """(the file loaded, its state, why each file before it could not be used): checkpoint.pt,
    else checkpoint.prev.pt; (None, None, both reasons) when neither loads. Moves nothing."""
    failed: list[str] = []
    for path in (run_dir / CHECKPOINT, run_dir / PREVIOUS):
        try:
            return path, read_checkpoint(path), failed
        except LangDMLError as exc:
            failed.append(str(exc))
    return None, None, failed


def open_checkpoint(run_dir: Path, checkpoint: str) -> tuple[Path, dict]:
    """(file, state) of ``checkpoint`` ("last" or "best") for reopening a finished run.
    "last" falls back to checkpoint.prev.pt when checkpoint.pt is missing or damaged, in one
    warning line naming both files and the epoch loaded; when neither loads, one LangDMLError."""
    if CHECKPOINTS[checkpoint_word(checkpoint)] == BEST:
        return run_dir / BEST, read_checkpoint(run_dir / BEST)
    path, state, failed = newest_checkpoint(run_dir)
    if state is None:
        best = run_dir / BEST
        hint = (
            f"; {best} holds the best epoch's weights: open it with checkpoint='best' "
            "(--checkpoint best)"
            if best.is_file()
            else ""
        )
        raise LangDMLError(f"{run_dir} has no checkpoint that loads: {'; '.join(failed)}{hint}")
    if failed:
        epoch = state.get("epoch")
        warnings.warn(
            f"{failed[0]}; using the previous checkpoint {path} (epoch {epoch}) instead: "
            f"results are of epoch {epoch}, not of the run's last epoch",
            stacklevel=3,
        )
    return path, state
