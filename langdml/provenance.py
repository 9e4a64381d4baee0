"""What a run ran with: package versions, CUDA / GPU, the git commit of this package (if it lives
in a git checkout), the dataset fingerprint and the text model's identity (and, for hub models,
the revision in the local Hugging Face cache). Written as ``provenance.json`` at training start.

Nothing here downloads or loads a model; every probe is cheap and never raises.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

PROVENANCE = "provenance.json"
# distribution name -> key in provenance.json
PACKAGES = {
    "torch": "torch",
    "timm": "timm",
    "faiss-cpu": "faiss",
    "faiss-gpu": "faiss",
    "faiss": "faiss",
    "transformers": "transformers",
    "sentence-transformers": "sentence-transformers",
    "open_clip_torch": "open_clip",
    "numpy": "numpy",
    "langdml": "langdml",
}


def package_versions() -> dict[str, str | None]:
    """Installed versions (None: not installed) of the packages results depend on."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist, key in PACKAGES.items():
        if out.get(key):
            continue
        try:
            out[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out.setdefault(key, None)
    return out


def device_info() -> dict[str, Any]:
    """CUDA version, GPU names (if torch sees any, without initialising CUDA otherwise) and the CPU
    thread count: on the CPU, float sums are ordered by thread, so a result reproduces to the last
    digit only at the same ``cpu_threads``."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return {"cuda": None, "gpus": [], "cpu_threads": None}
    info: dict[str, Any] = {
        "cuda": torch.version.cuda,
        "gpus": [],
        "cpu_threads": torch.get_num_threads(),
    }
    try:
        if torch.cuda.is_available():
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            info["cudnn"] = torch.backends.cudnn.version()
    except Exception:  # noqa: BLE001 - provenance never fails a run
        pass
    return info


def git_info(path: Path | None = None) -> dict[str, Any] | None:
    """Commit and dirty flag of the git checkout holding this package (None: not in one)."""
    where = Path(path or Path(__file__).resolve().parent)

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(where), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty}


def hub_revision(repo_id: str) -> str | None:
    """The commit the local Hugging Face cache resolves ``repo_id`` to (refs/main), if cached."""
    home = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME", os.path.expanduser("~/.cache/huggingface")), "hub"
    )
    for prefix in ("models--",):
        ref = Path(home) / (prefix + repo_id.replace("/", "--")) / "refs" / "main"
        if ref.is_file():
            return ref.read_text().strip() or None
    return None


def text_model_info(text_model: str) -> dict[str, Any]:
    """The text-model spec, its identity (package version, file signature or hub id) and, for hub
    ids, the cached revision."""
    from langdml.text.spec import model_identity, parse_text_model_spec

    try:
        spec = parse_text_model_spec(text_model)
        ident = model_identity(spec)
    except Exception as exc:  # noqa: BLE001 - provenance never fails a run
        return {"spec": text_model, "error": str(exc)}
    out: dict[str, Any] = {"spec": spec.describe(), "identity": ident}
    hub_id = ident.get("hub_id")
    if hub_id:
        name = hub_id if "/" in hub_id or spec.kind != "st" else f"sentence-transformers/{hub_id}"
        out["revision"] = hub_revision(name)
    return out


def collect(
    *,
    dataset: str | None = None,
    fingerprints: dict[str, str] | None = None,
    text_model: str | None = None,
) -> dict[str, Any]:
    """The provenance record of a run (``fingerprints``: split name -> dataset fingerprint)."""
    return {
        "versions": package_versions(),
        "platform": platform.platform(),
        "executable": sys.executable,
        "device": device_info(),
        "git": git_info(),
        "dataset": {"spec": dataset, "fingerprints": fingerprints or {}},
        "text_model": text_model_info(text_model) if text_model else None,
    }


def versions_line(versions: dict[str, str | None] | None = None) -> str:
    """One line naming the versions (for reports): ``python 3.11.9, torch 2.4.0, ...``."""
    v = versions if versions is not None else package_versions()
    return ", ".join(f"{k} {val}" for k, val in v.items() if val)
