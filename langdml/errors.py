"""User-facing errors: the CLI prints these as one line, never a traceback."""

import re


class LangDMLError(ValueError):
    """Bad input or state the user can fix; the message names the value and what was expected."""


class ConfigError(LangDMLError):
    """An invalid experiment or ablation config."""


class DataError(LangDMLError):
    """A dataset that is missing, malformed or not the named format."""


class ModelError(LangDMLError):
    """A model spec or weights file that cannot be loaded."""


_OS_ADVICE = {
    "ENOSPC": "the disk is full; free space (or move output_dir / LANGDML_CACHE) and rerun",
    "EDQUOT": "the disk quota is exhausted; free space and rerun",
    "EACCES": "permission denied; choose a writable location or fix the permissions",
    "EPERM": "operation not permitted; choose a writable location or fix the permissions",
    "EROFS": "the file system is read-only; choose a writable location",
    "EEXIST": "a file is in the way where a directory is needed; remove it or choose another path",
    "ENOTDIR": "a file is in the way where a directory is needed; remove it or choose another path",
    "EISDIR": "this is a directory where a file is needed; pass a file path",
}


def first_line(exc: BaseException, *, with_type: bool = True) -> str:
    """The first non-empty line of an exception's text (at most 200 characters) for a one-line
    message; ``with_type`` prefixes the exception's class name (the type alone when no text)."""
    lines = [x.strip() for x in str(exc).splitlines() if x.strip()]
    head = lines[0][:200] if lines else ""
    if not with_type:
        return head or type(exc).__name__
    return f"{type(exc).__name__}: {head}" if head else type(exc).__name__


def describe_os_error(exc: OSError) -> str:
    """One line for an OSError: the file it concerns and what to do."""
    import errno

    name = errno.errorcode.get(exc.errno or 0, "")
    where = exc.filename if exc.filename is not None else None
    reason = exc.strerror or str(exc) or type(exc).__name__
    if name == "ENOSPC" or "iostream error" in str(exc):
        name = "ENOSPC"
    advice = _OS_ADVICE.get(name)
    head = f"{where}: {reason}" if where is not None else reason
    if exc.filename2 is not None:
        head += f" (-> {exc.filename2})"
    return f"{head}; {advice}" if advice else head


def describe_exception(exc: BaseException) -> str | None:
    """One line for the faults the CLI reports without a traceback; None for bugs."""
    if isinstance(exc, LangDMLError):
        return str(exc)
    if isinstance(exc, OSError):
        return describe_os_error(exc)
    if isinstance(exc, UnicodeDecodeError):
        return f"cannot decode text as {exc.encoding} (byte {exc.start}); is it the right file?"
    if type(exc).__name__ == "DecompressionBombError":
        return f"an image is over PIL's decompression-bomb limit: {exc}"
    if _out_of_memory(exc):
        size = re.search(r"allocate (\d+ bytes|[\d.]+ [KMGTP]i?B)", str(exc))
        asked = f" (asked for {size.group(1)})" if size else ""
        return (
            f"out of memory{asked}; lower train.batch_size / --batch-size, model.image_size or "
            "model.embedding_dim, or use a device with more memory"
        )
    if isinstance(exc, RuntimeError) and "iostream error" in str(exc):
        return (
            "writing a file failed (torch: iostream error), usually because the disk is full; "
            "free space and rerun"
        )
    return None


def _out_of_memory(exc: BaseException) -> bool:
    """A failed allocation: numpy's MemoryError, torch's CPU allocator or CUDA out of memory."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and (
        "can't allocate memory" in text or "out of memory" in text.lower()
    )


INT32_MAX = 2**31 - 1


def check_int(
    value: object, what: str, low: int = 1, high: int = INT32_MAX, meaning: str = ""
) -> int:
    """``value`` as an int in ``[low, high]`` (by default at most 2**31 - 1, the largest C int
    faiss and torch's kernels take); else one LangDMLError line naming ``what`` (a flag or config
    key), the bound it breaks, what the value means (``meaning``) and the value. Checked before
    any work starts."""
    why = f" ({meaning})" if meaning else ""
    if isinstance(value, bool) or not isinstance(value, int):
        raise LangDMLError(f"{what} must be an integer{why}, got {value!r}")
    if value < low:
        raise LangDMLError(f"{what} must be at least {low}{why}, got {value}")
    if value > high:
        raise LangDMLError(f"{what} must be at most {high}{why}, got {value}")
    return value
