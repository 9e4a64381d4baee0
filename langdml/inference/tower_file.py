"""The image tower an index folder carries, so a search needs neither the run nor timm.

``langdml index`` writes ``tower.pt`` (the run's trunk + trained head, traced to TorchScript on
the CPU) into the index folder, and the manifest records its size, SHA-256 and the run's eval
preprocessing (:class:`~langdml.models.eval_view.EvalView`'s fields). ``langdml search`` then
embeds a query with ``torch.jit.load`` and the torch-free eval view: the imports are torch,
faiss and PIL, not torchvision, timm or the experiment assembly. Queries by class name, and
searches with ``--run-dir``, still reopen the run.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from langdml.models.eval_view import EvalView

TOWER = "tower.pt"


def trace_tower(tower: torch.nn.Module, image_size: int) -> torch.jit.ScriptModule:
    """``tower`` (image → embedding) traced to TorchScript on the CPU, in eval mode."""
    tower = tower.cpu().eval()
    example = torch.zeros(2, 3, image_size, image_size)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, still works
        return torch.jit.trace(tower, example, check_trace=False)


def view_record(view: EvalView) -> dict[str, Any]:
    """The manifest's record of the eval view (JSON: lists for tuples)."""
    record = asdict(view)
    record["mean"], record["std"] = list(view.mean), list(view.std)
    return record


def view_from_record(record: dict[str, Any]) -> EvalView:
    return EvalView(
        int(record["image_size"]),
        tuple(float(v) for v in record["mean"]),
        tuple(float(v) for v in record["std"]),
        record.get("crop_pct"),
        str(record.get("interpolation", "bicubic")),
        record.get("scale_size"),
    )


@dataclass
class PortableTower:
    """A traced image tower and the eval view its inputs need."""

    module: torch.jit.ScriptModule
    view: EvalView

    @classmethod
    def load(cls, folder: Path, record: dict[str, Any]) -> PortableTower:
        """The tower of an index folder whose files were verified against its manifest."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(str(Path(folder) / TOWER), map_location="cpu")
        return cls(module.eval(), view_from_record(record))

    @torch.no_grad()
    def embed(self, images: Sequence[Any], batch_size: int = 64) -> torch.Tensor:
        """(N, d) float32 embeddings of image paths (or PIL images), opened by the one opener."""
        from langdml.data.images import open_rgb

        out = []
        # TorchScript's optimising executor profiles and recompiles on the first calls of each
        # input shape (a first query took 1.0 s instead of 0.3 s here); a search makes few calls
        with torch.jit.optimized_execution(False):
            for start in range(0, len(images), batch_size):
                batch = [open_rgb(x) for x in images[start : start + batch_size]]
                x = torch.from_numpy(self.view.batch(batch))
                # the memory layout the gallery was embedded in (LoadedRun.embed)
                out.append(self.module(x.contiguous(memory_format=torch.channels_last)).float())
        return torch.cat(out)
