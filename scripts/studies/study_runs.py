"""What the language studies read back from a finished run: its final metrics and its arm.

Both study recipes (``emoji_language_study.py``, ``shapes_language_study.py``) label a run by the
target its language term was given, read back from the run's own ``metrics.json`` (which holds
its config), so a table never depends on folder names.
"""

from __future__ import annotations

import json
from pathlib import Path


def finished_run(path: Path) -> tuple[dict, dict] | None:
    """(config, final metrics) of a run's ``metrics.json``; None while it is unfinished or
    unreadable."""
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    final = metrics.get("final") or {}
    return (metrics["config"], final) if "recall@1" in final else None


def arm(cfg: dict) -> str:
    """The run's arm: ``none``, ``oracle`` (a target file), ``shuffled_MODEL``, ``descr_MODEL`` /
    ``names+descr_MODEL`` (descriptions, with the names too), ``plg_MODEL`` or ``names_MODEL``."""
    text, lang = cfg["text"], cfg["loss"]["language"]
    if cfg["loss"]["regularizers"] in ([], "none", ["none"]):
        return "none"
    if text["text_model"].startswith("file:"):
        return "oracle"
    if lang.get("shuffled_names"):
        return f"shuffled_{text['text_model']}"
    if text.get("descriptions"):
        names = "names" in (text.get("target") or [])
        return ("names+descr_" if names else "descr_") + text["text_model"]
    return ("plg_" if text.get("pseudo_labels") else "names_") + text["text_model"]
