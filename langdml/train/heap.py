"""The process heap while a run trains on the CPU (``train.keep_cpu_heap``).

A fine-tuning step allocates and frees the same activations every step, tens of MB each. With
glibc's default settings malloc serves blocks above its mmap threshold (at most 32 MiB) with a
fresh ``mmap`` and unmaps them on free, and it returns the top of the heap to the system once
that exceeds its trim threshold, so each step can fault the same gigabytes of pages in again
(zeroed by the kernel). How often depends on the order of earlier allocations: in one
full fine-tuning epoch of EfficientNet-Lite0 (CPU, batch 64, 128 px) a langdml run took 3.8M minor
page faults and 6 s of system time, a hand-written loop of the same network 0.4M-1.0M.
:func:`kept_heap` makes malloc keep freed memory in the heap for the next step while the trunk
trains (``mallopt``: no mmap blocks, a trim threshold of 2 GiB): no page faults after the first
epoch, the epoch in 0.7x the time. The cost is memory: the heap keeps its high-water mark until
the end, and a block a little larger than the hole the last one left grows it until holes merge
(peak RSS of that run +0.3 GB). On exit the kept memory goes back to the system
(``malloc_trim``) and glibc's default values return. Elsewhere (another C library, macOS,
Windows) it does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import platform
from collections.abc import Iterator

# mallopt's parameter numbers (glibc malloc.h) and glibc's initial values.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
_DEFAULT_TRIM_THRESHOLD = 128 * 1024
_DEFAULT_MMAP_MAX = 65536
_KEPT_TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int


def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt, libc.malloc_trim  # noqa: B018 - both must exist
    except (OSError, AttributeError):
        return None
    return libc


@contextlib.contextmanager
def kept_heap(enabled: bool = True) -> Iterator[bool]:
    """Inside: freed memory stays in the process heap (glibc); yields whether it was applied.

    On exit the kept memory goes back to the system and glibc's default trim threshold and mmap
    count return; setting them leaves glibc's mmap threshold where it stood (it stops adapting),
    which changes where later blocks come from, not what a program computes."""
    libc = _glibc() if enabled else None
    if libc is None:
        yield False
        return
    libc.mallopt(M_MMAP_MAX, 0)
    libc.mallopt(M_TRIM_THRESHOLD, _KEPT_TRIM_THRESHOLD)
    try:
        yield True
    finally:
        libc.mallopt(M_MMAP_MAX, _DEFAULT_MMAP_MAX)
        libc.mallopt(M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
        libc.malloc_trim(0)
