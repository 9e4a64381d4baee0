"""Keys of older releases: moved to their place now, with a one-line deprecation message, so
old run directories keep loading."""

from __future__ import annotations

import copy

from langdml.config.text import TEXT_KEYS
from langdml.config.tree import _section, deprecated
from langdml.errors import ConfigError

# Keys of the previous release → their place now (dotted). Old run directories keep loading.
RENAMED_KEYS: dict[str, str] = {
    **{f"loss.language.{k}": f"text.{k}" for k in TEXT_KEYS},
    "loss.language.level": "loss.language.mode",  # one vocabulary: the loss's ``mode``
}


def migrate_config(tree: dict, source: str = "config") -> dict:
    """Move the keys of the previous release (RENAMED_KEYS) to their new place, with a one-line
    deprecation message; a key given both ways with different values is an error."""
    found = [
        old for old in RENAMED_KEYS if old.rpartition(".")[2] in (_section(tree, old, False) or {})
    ]
    if not found:
        return tree
    tree = copy.deepcopy(tree)
    for old in found:
        new = RENAMED_KEYS[old]
        value = _section(tree, old, False).pop(old.rpartition(".")[2])
        target, key = _section(tree, new, True), new.rpartition(".")[2]
        if key in target and target[key] != value:
            raise ConfigError(
                f"{source}: {old} ({value!r}) and {new} ({target[key]!r}) disagree; keep {new}"
            )
        target[key] = value
    deprecated(
        f"{source}: {', '.join(found)} moved to {', '.join(RENAMED_KEYS[o] for o in found)}; "
        "the old keys work for one release"
    )
    return tree
