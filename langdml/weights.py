"""The one reader of weight files, and the one check that a state dict fits its model.

Every weight file langdml reads — ``model.weights``, run checkpoints, the packaged EfficientNet
weights, and (when their library fails on them) text-model and CLIP weight files — is read by
:func:`load_weights_file`: ``.safetensors`` through safetensors, anything else through
``torch.load(..., weights_only=True)``, so a pickle can never run code. A file that cannot be read
is one :class:`~langdml.errors.ModelError` line naming the file and what it holds (a damaged
archive, a pickle that needs a named Python object, random bytes, a damaged safetensors header);
the message never suggests turning ``weights_only`` off.

:func:`fit_state_dict` loads a state dict into a module strictly and, when it does not fit, says in
one line which keys are missing, which are extra, which tensors have other shapes, and which config
value (``model.embedding_dim``, ...) the shapes disagree with.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from langdml.errors import ModelError

SAFETENSORS_SUFFIX = ".safetensors"
WEIGHT_FILE_NAMES = (
    "model.safetensors",
    "pytorch_model.bin",
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.bin",
)
_SHOW = 3
# What torch.load raises on damaged or foreign bytes (besides pickle.UnpicklingError).
_READ_ERRORS = (
    RuntimeError,
    EOFError,
    OSError,
    ValueError,
    KeyError,
    AttributeError,
    IndexError,
    TypeError,
)


def _kind_of(head: bytes) -> str:
    """What the first bytes of a file look like."""
    if head.startswith(b"PK\x03\x04"):
        return "torch"  # torch.save's zip archive
    if head[:1] == b"\x80" and len(head) > 1 and head[1] in range(2, 6):
        return "pickle"  # a legacy torch.save or a plain pickle
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"  # 8-byte little-endian header length, then the JSON header
    return "unknown"


def _pickle_reason(exc: BaseException) -> str:
    text = str(exc)
    found = re.search(r"GLOBAL ([\w.]+)", text) or re.search(r"global '?([\w.]+)", text)
    needs = f" (it needs {found.group(1)})" if found else ""
    return (
        f"it is a pickle holding Python objects other than tensors{needs}; refused: langdml "
        "loads only tensors from weight files (re-save the weights as a plain state dict or as "
        ".safetensors)"
    )


def _read_safetensors(path: Path) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        why = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise _Bad(f"it is a damaged or foreign safetensors file ({why})") from None


class _Bad(Exception):
    """Why a file cannot be read, before the message names it."""


def _read_torch(path: Path, head: bytes) -> Any:
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except (pickle.UnpicklingError, *_READ_ERRORS) as exc:
        # torch words every weights-only failure alike (random bytes too): the named global
        # tells a refused object apart from damage.
        if re.search(r"GLOBAL|[Uu]nsupported global", str(exc)):
            raise _Bad(_pickle_reason(exc)) from None
        kind = _kind_of(head)
        if kind == "torch":
            raise _Bad("it is a truncated or damaged torch archive") from None
        if kind == "pickle":
            raise _Bad("it is a truncated or damaged pickle") from None
        if kind == "safetensors":
            raise _Bad("it looks like safetensors; name it *.safetensors") from None
        raise _Bad("it is not a torch or safetensors weight file (unrecognised content)") from None


def load_weights_file(path: str | os.PathLike, what: str = "weights file", hint: str = "") -> Any:
    """The tensors (or torch-saved container of tensors) in ``path``; a missing, damaged, foreign
    or unsafe file is one ModelError line naming it and what it holds, ending in ``hint``."""
    from langdml.io import verify_checksum

    path = Path(path)
    if not path.exists():
        raise ModelError(f"cannot load {what} {path}: file not found{hint}")
    if not path.is_file():
        raise ModelError(f"cannot load {what} {path}: it is not a regular file{hint}")
    damaged = verify_checksum(path)
    if damaged:
        raise ModelError(f"cannot load {what} {path}: {damaged}{hint}")
    try:
        with open(path, "rb") as f:
            head = f.read(16)
        if not head:
            raise _Bad("it is empty")
        if path.suffix.lower() == SAFETENSORS_SUFFIX:
            return _read_safetensors(path)
        return _read_torch(path, head)
    except _Bad as bad:
        raise ModelError(f"cannot load {what} {path}: {bad}{hint}") from None
    except OSError as exc:
        from langdml.errors import describe_os_error

        raise ModelError(f"cannot load {what} {path}: {describe_os_error(exc)}{hint}") from None


def unwrap_state_dict(obj: Any, path: str | os.PathLike, what: str = "weights file") -> dict:
    """A state dict from a file's content: the dict itself, or its ``state_dict`` / ``model``
    entry (common checkpoint wrappers); anything else is one ModelError line."""
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    import torch

    if not isinstance(obj, dict) or not obj:
        got = type(obj).__name__ if not isinstance(obj, dict) else "an empty dict"
        raise ModelError(f"{what} {path} holds {got}, not a state dict of tensors")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ModelError(
            f"{what} {path} is not a state dict of tensors: {len(bad)} entries are not tensors "
            f"(e.g. {bad[:_SHOW]!r})"
        )
    return obj


def check_weight_files(files: Iterable[str | os.PathLike], what: str) -> None:
    """Read each existing file with :func:`load_weights_file` (its one line when one is bad); used
    to explain a library's failure on a model folder's weights."""
    for f in files:
        if Path(f).is_file():
            load_weights_file(f, what)


def folder_weight_files(folder: str | os.PathLike) -> list[Path]:
    """The weight files of a Hugging Face / sentence-transformers / open_clip model folder."""
    folder = Path(folder)
    if folder.is_file():
        return [folder]
    return [folder / n for n in WEIGHT_FILE_NAMES if (folder / n).is_file()]


def _shorten(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOW])
    return f"{shown}, … ({len(keys) - _SHOW} more)" if len(keys) > _SHOW else shown


def fit_state_dict(
    module: Any,
    state: dict,
    source: str,
    config_values: dict[str, Any] | None = None,
    ignore_missing: Callable[[str], bool] | None = None,
) -> None:
    """``module.load_state_dict(state)`` strictly; a state dict that does not fit is one
    ModelError line naming ``source``, the missing, extra and mis-shaped keys and, for a shape
    that disagrees with one of ``config_values`` ({config key: value}), that config value.
    ``ignore_missing(key)`` marks keys the module may lack weights for (e.g. a classifier)."""
    own = module.state_dict()
    missing = [k for k in own if k not in state and not (ignore_missing and ignore_missing(k))]
    extra = [k for k in state if k not in own]
    shapes = [
        (k, tuple(state[k].shape), tuple(own[k].shape))
        for k in own
        if k in state and tuple(getattr(state[k], "shape", ())) != tuple(own[k].shape)
    ]
    if not (missing or extra or shapes):
        module.load_state_dict(state, strict=not ignore_missing)
        return
    parts = []
    if shapes:
        k, got, want = shapes[0]
        parts.append(
            f"{len(shapes)} tensor(s) of another shape ({k}: {list(got)} in the file, "
            f"{list(want)} in the model{_config_clash(got, want, config_values)})"
        )
    if missing:
        parts.append(f"{len(missing)} missing key(s) ({_shorten(missing)})")
    if extra:
        parts.append(f"{len(extra)} unexpected key(s) ({_shorten(extra)})")
    raise ModelError(f"{source} does not fit the configured model: {'; '.join(parts)}")


def _config_clash(got: tuple, want: tuple, config_values: dict[str, Any] | None) -> str:
    """``"; the file has 16 where model.embedding_dim is 32"`` when a dimension that differs is a
    config value."""
    for g, w in zip(got, want, strict=False):
        if g == w:
            continue
        for key, value in (config_values or {}).items():
            if value == w:
                return f"; the file was made with {key} = {g}, the config says {w}"
    return ""
