"""The language-vision agreement columns of an ablation table (``langdml diagnose`` per row).

When the runs that use text do not all use the same text side (``text.text_model``, its prompts,
PLG pseudo-labels, ``text.target`` or ``text.descriptions`` — set by a grid key or by named
arms), each row gets the Spearman correlation and the k-NN overlap of its text with the frozen
trunk's class centroids on the run's TRAIN classes, computed by
:func:`langdml.diagnose.agreement_of`. Rows without text stay blank; a shuffled-names row shows
the shuffled control (mean over permutations of the names), since that is the text it trained
with. Results are cached in ``<output_dir>/agreement.json`` under the request's hash, with the
request stored beside it and compared on reading, so a re-render reads one small file.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from langdml.ablation.spec import Ablation, Run
from langdml.config import ExperimentConfig
from langdml.diagnose import Agreement, AgreementRequest, agreement_of
from langdml.errors import LangDMLError
from langdml.experiment import feature_spec, needs_text
from langdml.io import atomic_write_json
from langdml.models import FeatureSpec

AGREEMENT_FILE = "agreement.json"


@dataclass(frozen=True)
class CellAgreement:
    """What one table row shows: its text's agreement, or why there is none (``error``)."""

    agreement: Agreement | None
    shuffled: bool = False  # the row trains with shuffled names: show the shuffled control
    pseudo_labels: bool = False
    error: str = ""

    @property
    def spearman(self) -> float | None:
        a = self.agreement
        return None if a is None else (a.shuffled_spearman if self.shuffled else a.spearman)

    @property
    def overlap(self) -> float | None:
        a = self.agreement
        return None if a is None else (a.shuffled_overlap if self.shuffled else a.overlap)


def request_for(cfg: ExperimentConfig) -> AgreementRequest | None:
    """The agreement a run's text side has with its trunk; None for a run that uses no text."""
    if not needs_text(cfg):
        return None
    m, t = cfg.model, cfg.text
    # only a frozen-trunk run cached pooled features with its extra views
    spec = feature_spec(cfg, augment_views=m.augment_views if m.frozen_trunk else 0)
    return AgreementRequest(
        dataset=cfg.data.dataset,
        text_model=t.text_model,
        prompts=tuple(t.prompts),
        pseudo_labels=t.pseudo_labels,
        top_k=t.top_k if t.pseudo_labels else AgreementRequest.top_k,
        backbone=m.backbone,
        weights=m.weights,
        image_size=spec.image_size,
        crop_pct=spec.crop_pct,
        feature_extra=_feature_extra(spec),
        augment_views=spec.augment_views,
        train_fraction=cfg.data.train_fraction,
        validation_fraction=cfg.data.validation_fraction,
        folds=cfg.data.folds,
        fold=cfg.data.fold,
        target=None if t.sources in (["names"], ["pseudo_labels"]) else tuple(t.sources),
        descriptions=t.descriptions,
    )


def _feature_extra(spec: FeatureSpec) -> tuple[tuple[str, Any], ...] | None:
    """The spec's fields beyond the request's own that differ from their defaults (pooling,
    interpolation, backbone_kwargs, ...): none for the trunks requests were cached with before."""
    own = ("backbone", "weights", "image_size", "augment_views", "crop_pct")
    extra = tuple(
        (f.name, getattr(spec, f.name))
        for f in fields(spec)
        if f.name not in own and getattr(spec, f.name) != f.default
    )
    return extra or None


def varies_text(ablation: Ablation) -> bool:
    """True when the runs that use text use more than one text side."""
    sides = {_text_side(r.config) for r in ablation.runs if needs_text(r.config)}
    return len(sides) > 1


def _text_side(cfg: ExperimentConfig) -> tuple[Any, ...]:
    t = cfg.text
    top_k = t.top_k if t.pseudo_labels else 0
    return (
        t.text_model,
        tuple(t.prompts),
        t.pseudo_labels,
        top_k,
        tuple(t.sources),
        t.descriptions,
    )


def cell_agreements(
    ablation: Ablation, rows: list[dict], progress: bool = False
) -> dict[str, CellAgreement]:
    """Per cell id with at least one finished run and text: its :class:`CellAgreement`.

    Only finished cells are computed, so the features and text embeddings are in the caches
    their runs filled. A text side whose agreement cannot be computed (its model no longer
    loads, say) gets an ``error`` instead of stopping the report."""
    done = {r["cell_id"] for r in rows if r.get("status") == "ok"}
    firsts: dict[str, Run] = {}
    for run in ablation.runs:
        if run.cell.id in done and run.cell.id not in firsts:
            firsts[run.cell.id] = run
    path = Path(ablation.output_dir) / AGREEMENT_FILE
    cache = _read_cache(path)
    out: dict[str, CellAgreement] = {}
    errors: dict[str, str] = {}  # request key → why it has no agreement
    for cell_id, run in firsts.items():
        request = request_for(run.config)
        if request is None:
            continue
        key = request.key()
        if key not in errors:
            _fill(cache, errors, request, run.config.data.cache_dir, progress, path)
        found = cache.get(key)
        out[cell_id] = CellAgreement(
            agreement=Agreement(**found["agreement"]) if found else None,
            shuffled=run.config.loss.language.shuffled_names,
            pseudo_labels=request.pseudo_labels,
            error=errors.get(key, ""),
        )
    return out


def _fill(
    cache: dict[str, dict],
    errors: dict[str, str],
    request: AgreementRequest,
    cache_dir: str | None,
    progress: bool,
    path: Path,
) -> None:
    """Compute ``request``'s agreement unless the cache holds it for the same model weights."""
    key, identity = request.key(), _identity(request)
    if key in cache and cache[key]["identity"] == identity:
        return
    cache.pop(key, None)
    try:
        found = agreement_of(request, cache_dir, "cpu", progress)
    except LangDMLError as exc:
        errors[key] = str(exc)
        return
    cache[key] = {"request": request.as_dict(), "identity": identity, "agreement": found.as_dict()}
    atomic_write_json(path, cache)


def _identity(request: AgreementRequest) -> Any:
    # JSON round trip: the stored identity (lists, not tuples) compares equal to a fresh one
    try:
        return json.loads(json.dumps(request.identity()))
    except LangDMLError:
        return None  # the model is gone: agreement_of says why


def _read_cache(path: Path) -> dict[str, dict]:
    """Entries of ``agreement.json`` whose stored request still hashes to their key (an edited or
    truncated file costs a recomputation, never a wrong number)."""
    if not path.is_file():
        return {}
    try:
        tree = json.loads(path.read_text())
    except (OSError, ValueError):
        print(f"langdml: {path} is unreadable; recomputing the agreement", file=sys.stderr)
        return {}
    fields = set(Agreement.__dataclass_fields__)
    good = {}
    for key, entry in tree.items() if isinstance(tree, dict) else ():
        try:
            ok = (
                AgreementRequest(**entry["request"]).key() == key
                and set(entry["agreement"]) == fields
                and "identity" in entry
            )
        except (KeyError, TypeError):
            ok = False
        if ok:
            good[key] = entry
    return good
