"""Export a run's image tower (trunk + trained head) to TorchScript or ONNX, with a JSON model card
beside it (``FILE.json``: preprocessing, config, fingerprint, metrics, text model)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from langdml.errors import LangDMLError
from langdml.experiment import run_preprocessing
from langdml.experiment.run_files import METRICS
from langdml.inference.run import LoadedRun

FORMATS = ("torchscript", "onnx")


def card_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".json")


def model_card(run: LoadedRun, fmt: str, path: Path) -> dict[str, Any]:
    cfg = run.config
    metrics_file = run.run_dir / METRICS
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    return {
        "format": fmt,
        "file": path.name,
        "input": "image",
        "output": "embedding",
        "embedding_dim": run.embedding_dim,
        "normalized": bool(getattr(run.model.head, "normalize", True)),
        "metric": cfg.eval.metric,
        "preprocessing": run.preprocessing(),
        "trunk": {
            "backbone": cfg.model.backbone,
            "weights": cfg.model.weights,
            "frozen_trunk": cfg.model.frozen_trunk,
            "trainable_blocks": cfg.model.trainable_blocks,
        },
        "text_model": cfg.text.text_model if run.has_text else None,
        "text_side": "text projection (not exported)" if run.has_text else None,
        "dataset": cfg.data.dataset,
        "fingerprint": run.fingerprint(),
        "metrics": {k: metrics.get(k) for k in ("final", "best", "baselines") if k in metrics},
        "config": cfg.to_dict(),
    }


def export_run(run: LoadedRun, fmt: str, path: str | Path) -> Path:
    """Write the image tower to ``path`` in ``fmt`` and its model card to ``path.json``."""
    if fmt not in FORMATS:
        raise LangDMLError(f"unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}")
    from langdml.io import atomic_write, atomic_write_text, check_writable

    path = check_writable(path, "export file")  # a folder or a read-only place: one line
    check_writable(card_path(path), "model card")
    tower = run.tower().cpu().eval()
    size = run_preprocessing(run.config).image_size
    if fmt == "torchscript":
        from langdml.inference.tower_file import trace_tower

        traced = trace_tower(tower, size)
        atomic_write(path, lambda tmp: traced.save(str(tmp)))
    else:
        example = torch.zeros(2, 3, size, size)
        atomic_write(path, lambda tmp: _export_onnx(tower, example, tmp))
    card = model_card(run, fmt, path)
    atomic_write_text(card_path(path), json.dumps(card, indent=2, default=str) + "\n")
    return path


def _export_onnx(tower: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    try:
        import onnx  # noqa: F401
    except ModuleNotFoundError:
        raise LangDMLError(
            "ONNX export needs the onnx package: pip install 'langdml[export]'"
        ) from None
    # nn.MultiheadAttention (open_clip towers) takes a fused kernel in eval mode that ONNX has
    # no operator for; the plain path computes the same attention
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        _onnx_export(tower, example, path)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def _onnx_export(tower: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    with torch.no_grad():
        torch.onnx.export(
            tower,
            (example,),
            str(path),
            input_names=["image"],
            output_names=["embedding"],
            dynamic_axes={"image": {0: "batch"}, "embedding": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )


def run_exported(path: str | Path, images: torch.Tensor) -> torch.Tensor:
    """Embeddings of preprocessed images (N, 3, S, S) by an exported file (onnxruntime, else
    onnx's reference evaluator, for ONNX)."""
    path = Path(path)
    if path.suffix == ".onnx" or card_format(path) == "onnx":
        x = images.numpy().astype("float32")
        try:
            import onnxruntime as ort

            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            return torch.from_numpy(session.run(None, {"image": x})[0])
        except ModuleNotFoundError:
            from onnx.reference import ReferenceEvaluator

            return torch.from_numpy(ReferenceEvaluator(str(path)).run(None, {"image": x})[0])
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(path))
    with torch.no_grad():
        return module(images)


def card_format(path: Path) -> str | None:
    card = card_path(path)
    return json.loads(card.read_text()).get("format") if card.is_file() else None
