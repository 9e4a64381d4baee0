"""One line for a text or CLIP model that a library cannot load: what the libraries raise, and
the message naming the damaged, foreign or unsafe weight file (``langdml.weights``)."""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path

from langdml.errors import ModelError, first_line
from langdml.text.spec import looks_like_path

# What model libraries raise on a folder or weight file they cannot read (pickle errors included:
# transformers and open_clip let torch's weights-only refusal through).
LOAD_ERRORS = (
    OSError,
    ValueError,
    KeyError,
    RuntimeError,
    EOFError,
    IndexError,
    TypeError,
    AttributeError,
    pickle.UnpicklingError,
)


def load_failure(exc: BaseException, what: str, target: str, files: Sequence[Path]) -> ModelError:
    """One line for a library's failure to load ``target``: the weight file's own line when one of
    ``files`` is damaged, foreign or unsafe (``langdml.weights``), else the library's first line
    (never its advice to turn ``weights_only`` off)."""
    from langdml.weights import check_weight_files

    check_weight_files(files, f"{what} weights file")  # raises the file's one line
    why = first_line(exc, with_type=False)
    if "weights_only" in why:
        why = "its weights could not be loaded as plain tensors"
    return ModelError(f"cannot load {what} {target!r}: {why}")


def weight_files(target: str) -> list[Path]:
    """The weight files of a model folder (none for a hub id)."""
    from langdml.weights import folder_weight_files

    return folder_weight_files(Path(target).expanduser()) if looks_like_path(target) else []
