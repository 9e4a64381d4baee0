"""Which torch device a command may run on: the one check of ``--device`` and ``train.device``.

A device is ``cpu``, ``cuda``, ``cuda:N`` or ``mps``; :func:`check_device` also checks that it
exists on this machine, before any work (a run is reopened, a dataset embedded) starts.
``auto`` (``train.device``, and reopening a run) is cuda when torch sees a CUDA GPU, else cpu.
"""

from __future__ import annotations

import re

from langdml.errors import LangDMLError

DEVICE_PATTERN = r"^(cpu|cuda(:\d+)?|mps)$"


def check_device(device: str, what: str = "--device") -> str:
    """``device`` when it names a device this machine has; else one LangDMLError line naming
    ``what`` (the flag or config key) and the devices that exist."""
    import torch

    value = str(device).strip()
    if not re.match(DEVICE_PATTERN, value):
        raise LangDMLError(f"{what} {device!r} is not a device; expected cpu, cuda, cuda:N or mps")
    if value.startswith("cuda"):
        if not torch.cuda.is_available():
            raise LangDMLError(
                f"{what} {value!r} requested but CUDA is not available on this machine; "
                f"use {what} cpu"
            )
        count = torch.cuda.device_count()
        index = int(value.split(":")[1]) if ":" in value else 0
        if index >= count:
            raise LangDMLError(
                f"{what} {value!r}: this machine has {count} CUDA device(s), cuda:0 .. "
                f"cuda:{count - 1}"
            )
    if value == "mps" and not torch.backends.mps.is_available():
        raise LangDMLError(f"{what} 'mps' requested but MPS is not available; use {what} cpu")
    return value


def resolve_auto_device() -> str:
    """``auto``: cuda when torch sees a CUDA GPU, else cpu."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def usable_device(device: str, what: str = "--device") -> str:
    """:func:`check_device`, with ``auto`` chosen on this machine first."""
    value = str(device).strip().lower()
    if value != "auto" and not re.match(DEVICE_PATTERN, value):
        raise LangDMLError(
            f"{what} {device!r} is not a device; expected cpu, cuda, cuda:N, mps or auto"
        )
    return check_device(resolve_auto_device() if value == "auto" else value, what)
