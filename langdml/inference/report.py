"""``langdml report RUN_DIR``: one self-contained HTML page (every picture inlined as base64 PNG) of
what a run learned — headline metrics against its reference points, learning curves, a grid of
test queries with their nearest neighbours, the worst and best classes by R@1, a t-SNE map of the
test embeddings and, for runs with language guidance, the train classes' image-similarity vs
name-similarity heatmaps."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from langdml.errors import LangDMLError
from langdml.eval.metrics import METRIC_KEYS
from langdml.experiment import embed, embed_train, needs_text
from langdml.experiment.run_files import METRICS
from langdml.inference import report_plots as plots
from langdml.inference.index import GalleryIndex
from langdml.inference.run import LoadedRun

HEADLINE = METRIC_KEYS  # the default metrics of an evaluation
STYLE = """
body{font-family:sans-serif;margin:24px;color:#222;max-width:1150px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:26px 0 8px}
table.m{border-collapse:collapse;font-size:13px} table.m td,table.m th{border:1px solid #ccc;
padding:3px 8px;text-align:right} table.m th{background:#f2f2f2}
.grid{border-collapse:separate;border-spacing:6px} .cell{width:104px;vertical-align:top;
text-align:center;font-size:11px} .cell img{width:96px;height:96px;object-fit:contain;
border:4px solid #999;background:#fff} .q img{border-color:#1f5fbf} .hit img{border-color:#1a9a2a}
.miss img{border-color:#d0202a} .cap{overflow:hidden;text-overflow:ellipsis;white-space:nowrap;
width:104px} .muted{color:#777;font-size:12px} .cls td{padding:2px 10px;font-size:13px}
"""


def _trunk_words(model) -> str:
    if model.frozen_trunk:
        return "frozen trunk"
    if model.partial_blocks:
        return f"last {model.partial_blocks} trunk stages fine-tuned"
    return "fine-tuned"


def _esc(text: Any) -> str:
    return html.escape(str(text))


def _metrics_table(run: LoadedRun) -> str:
    path = run.run_dir / METRICS
    if not path.is_file():
        return "<p class=muted>no metrics.json (the run has not finished)</p>"
    m = json.loads(path.read_text())
    final, best = m.get("final", {}), m.get("best", {})
    base = m.get("baselines", {})
    cols = [("this run (final)", final)]
    # a best epoch exists only where a validation split picked one
    has_best = best.get("epoch") is not None and best.get("metrics")
    if has_best:
        cols.append((f"best (epoch {best['epoch']})", best["metrics"]))
    cols += [(name.replace("_", " "), vals) for name, vals in base.items()]
    head = "".join(f"<th>{_esc(c)}</th>" for c, _ in cols)
    raw = base.get("raw_features", {})
    rows = []
    for key in [k for k in HEADLINE if k in final]:
        cells = "".join(f"<td>{v.get(key, float('nan')):.4f}</td>" for _, v in cols)
        delta = f"{final[key] - raw[key]:+.4f}" if key in raw else ""
        rows.append(f"<tr><th>{key}</th>{cells}<td>{delta}</td></tr>")
    return (
        f"<table class=m><tr><th>metric</th>{head}<th>Δ vs raw features</th></tr>"
        f"{''.join(rows)}</table><p class=muted>evaluated on the {_esc(m.get('eval_split'))} "
        "classes (never seen in training); reference points: the raw trunk features and the "
        "untrained head on the same classes"
        f"{'' if has_best else '; no validation split, so no best epoch'}</p>"
    )


def _cell(image, name: str, kind: str) -> str:
    return (
        f'<td class="cell {kind}"><img alt="{_esc(name)}" '
        f'src="data:image/png;base64,{plots.image_png(image)}"><div class=cap '
        f'title="{_esc(name)}">{_esc(name)}</div></td>'
    )


def _query_rows(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """One image each of ``count`` distinct classes with at least 2 images (seeded)."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    chosen = rng.permutation(classes[counts > 1])[:count]
    return np.asarray([rng.choice(np.flatnonzero(labels == c)) for c in sorted(chosen)], int)


def _grid(run, emb: torch.Tensor, labels: np.ndarray, queries: int, k: int) -> str:
    data = run.data.eval
    names = data.class_names
    index = GalleryIndex.build(emb, metric=run.config.eval.metric)
    rows_html = []
    query_rows = _query_rows(labels, queries, run.config.seed)
    _, found = index.search(emb[torch.as_tensor(query_rows)], k + 1)
    for q, hits in zip(query_rows, found, strict=True):
        hits = [int(h) for h in hits if h != q][:k]
        cells = [_cell(data.image(int(q)), names[labels[q]], "q")]
        for h in hits:
            kind = "hit" if labels[h] == labels[q] else "miss"
            cells.append(_cell(data.image(h), names[labels[h]], kind))
        rows_html.append(f"<tr>{''.join(cells)}</tr>")
    return (
        "<p class=muted>first column: the query (blue); then its nearest test images, green when "
        "of the query's class, red otherwise</p>"
        f"<table class=grid id=grid>{''.join(rows_html)}</table>"
    )


def per_class_r1(emb: torch.Tensor, labels: np.ndarray, metric: str) -> dict[int, float]:
    """Each class's R@1: the share of its images whose nearest other image is of the class."""
    _, found = GalleryIndex.build(emb, metric=metric).search(emb, 2)
    own = np.arange(len(labels))
    nearest = np.where(found[:, 0] == own, found[:, 1], found[:, 0])
    correct = labels[nearest] == labels
    return {int(c): float(correct[labels == c].mean()) for c in np.unique(labels)}


def _classes(run, emb: torch.Tensor, labels: np.ndarray, count: int = 6) -> str:
    data = run.data.eval
    r1 = per_class_r1(emb, labels, run.config.eval.metric)
    order = sorted(r1, key=lambda c: (r1[c], c))
    parts = []
    for title, classes in (("worst", order[:count]), ("best", order[::-1][:count])):
        rows = []
        for c in classes:
            first = int(np.flatnonzero(labels == c)[0])
            img = plots.image_png(data.image(first), 40)
            rows.append(
                f'<tr><td><img src="data:image/png;base64,{img}" width=40 height=40></td>'
                f"<td>{_esc(data.class_names[c])}</td><td>R@1 {r1[c]:.2f}</td>"
                f"<td class=muted>{int((labels == c).sum())} images</td></tr>"
            )
        parts.append(f"<div><h3>{title}</h3><table class=cls>{''.join(rows)}</table></div>")
    return f"<div style='display:flex;gap:40px'>{''.join(parts)}</div>"


def _heatmaps(run: LoadedRun, max_classes: int = 40) -> str | None:
    """Train classes' centroid image similarity vs class-name similarity (language runs)."""
    if not needs_text(run.config):
        return None
    text = run.training_text_embeddings()
    if text is None:
        return None
    text = F.normalize(text.float().mean(dim=1) if text.ndim == 3 else text.float(), dim=-1)
    data = run.data
    emb = embed_train(run.model, run.config, data)
    labels = torch.as_tensor(data.train.labels)
    classes = torch.arange(min(max_classes, data.train.num_classes))
    centroids = torch.stack([emb[labels == c].mean(0) for c in classes])
    centroids = F.normalize(centroids, dim=-1)
    names = [data.train.class_names[int(c)][:24] for c in classes]
    t = text[classes]
    return plots.heatmaps((centroids @ centroids.T).numpy(), (t @ t.T).numpy(), names)


def _img(png: str | None, alt: str) -> str:
    if png is None:
        return f"<p class=muted>{_esc(alt)}: nothing to show</p>"
    return f'<img alt="{_esc(alt)}" style="max-width:100%" src="data:image/png;base64,{png}">'


def _read_log(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "log.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_report(run: LoadedRun, out: str | Path, queries: int = 8, k: int = 6) -> Path:
    """Write the report of ``run`` to ``out`` (one HTML file, pictures inlined)."""
    from langdml.io import check_writable

    for name, value in (("queries", queries), ("k", k)):
        if value < 1:
            raise LangDMLError(f"report {name} must be at least 1, got {value}")
    check_writable(out, "report")  # before the test set is embedded
    cfg = run.config
    data = run.data
    emb = embed(run.model, cfg, data)
    labels = np.asarray(data.eval.labels)
    regs = ", ".join(cfg.loss.regularizers) or "none"
    sections = [
        f"<h1>{_esc(cfg.name)} — {_esc(run.run_dir)}</h1><p class=muted>dataset "
        f"{_esc(cfg.data.dataset)}; {_esc(cfg.model.backbone)} "
        f"({_trunk_words(cfg.model)}), {cfg.model.head} head "
        f"→ {cfg.model.embedding_dim}-d; loss {_esc(cfg.loss.base.name)} + {_esc(regs)}; "
        f"checkpoint {_esc(run.checkpoint)} (epoch {run.epoch})</p>",
        "<h2>Headline metrics</h2>" + _metrics_table(run),
        f"<h2>Test queries and their top-{k} neighbours</h2>" + _grid(run, emb, labels, queries, k),
        "<h2>Learning curves</h2>" + _img(plots.learning_curves(_read_log(run.run_dir)), "curves"),
        "<h2>Worst and best test classes by R@1</h2>" + _classes(run, emb, labels),
        "<h2>Map of the test embeddings</h2>"
        + _img(plots.tsne_map(emb.numpy(), labels, cfg.seed), "t-SNE"),
    ]
    maps = _heatmaps(run)
    if maps is not None:
        sections.append(
            "<h2>Language guidance: train classes, image vs name similarity</h2>"
            + _img(maps, "heatmaps")
        )
    page = (
        f"<!doctype html><html><head><meta charset=utf-8><title>{_esc(cfg.name)} report</title>"
        f"<style>{STYLE}</style></head><body>{''.join(sections)}</body></html>\n"
    )
    out = Path(out)
    from langdml.io import atomic_write_text

    atomic_write_text(out, page)
    return out
