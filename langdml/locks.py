"""One writer per folder: an advisory lock on a run directory or an ablation folder.

The lock is ``filelock``'s (``flock`` on POSIX), on the file ``.langdml.lock`` inside the folder;
the operating system drops it when its process ends however it ends, so a killed writer never
leaves the folder locked. Who holds it (pid, host, start time, command) is recorded beside it in
``.langdml.lock.json`` and named when another writer is refused. A record left behind by a
writer that was killed (its lock no longer held) is a *stale* lock: the next writer takes the
folder over and says so in one warning line.

Locks are re-entrant within a process (a training run inside an ablation cell that already
holds the run directory), keyed by the folder's resolved path.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from langdml.errors import LangDMLError

LOCK = ".langdml.lock"
HOLDER = ".langdml.lock.json"

_held: dict[str, list[Any]] = {}  # resolved folder → [FileLock, depth]
_guard = threading.Lock()


class FolderBusy(LangDMLError):
    """Another live process holds the folder's lock."""

    def __init__(self, message: str, holder: dict | None) -> None:
        super().__init__(message)
        self.holder = holder


def read_holder(folder: str | os.PathLike) -> dict | None:
    """The recorded holder of ``folder``'s lock (pid, host, started, command), or None."""
    try:
        found = json.loads((Path(folder) / HOLDER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def describe_holder(holder: dict | None) -> str:
    if not holder:
        return "another process (no holder record)"
    since = holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since)) if since else "?"
    return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} (since {when})"


def _me() -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.time(),
        "command": " ".join(sys.argv)[:300],
    }


@contextlib.contextmanager
def folder_lock(
    folder: str | os.PathLike, what: str = "run directory", wait_s: float = 0.0
) -> Iterator[None]:
    """Hold ``folder``'s lock for the block (creating the folder). Held by another process: wait
    up to ``wait_s`` seconds, then one :class:`FolderBusy` line naming the holder."""
    from filelock import FileLock, Timeout

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = str(folder.resolve())
    with _guard:
        entry = _held.get(key)
        if entry is not None:
            entry[1] += 1
    if entry is None:
        lock = FileLock(str(folder / LOCK), thread_local=False)
        try:
            lock.acquire(timeout=wait_s)
        except Timeout:
            holder = read_holder(folder)
            raise FolderBusy(
                f"{what} {str(folder)!r} is in use by {describe_holder(holder)}; wait for it to "
                "finish, or choose another folder",
                holder,
            ) from None
        _take_over(folder, what)
        with _guard:
            _held[key] = entry = [lock, 1]
    try:
        yield
    finally:
        with _guard:
            entry[1] -= 1
            last = entry[1] == 0
            if last:
                del _held[key]
        if last:
            with contextlib.suppress(OSError):
                (folder / HOLDER).unlink()
            entry[0].release()


def _take_over(folder: Path, what: str) -> None:
    """Record us as the holder; a record of another writer means it was killed while holding."""
    from langdml.io import atomic_write_json

    old = read_holder(folder)
    me = _me()
    if old and (old.get("pid"), old.get("host")) != (me["pid"], me["host"]):
        warnings.warn(
            f"{what} {str(folder)!r}: taking over the stale lock of {describe_holder(old)}, "
            "which ended without releasing it",
            stacklevel=1,  # names this module: the CLI prints it as one langdml line
        )
    atomic_write_json(folder / HOLDER, me)

