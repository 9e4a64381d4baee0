"""``langdml report ABLATION_DIR``: the ablation's table and plot in one HTML page, with a link per
cell run (to its ``report.html``, written with ``--cell-reports``, else to its folder)."""

from __future__ import annotations

import base64
import csv
import html
import os
import re
from pathlib import Path

STYLE = (
    "body{font-family:sans-serif;margin:24px;color:#222;max-width:1200px}"
    "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px}"
    "th{background:#f2f2f2}.muted{color:#777;font-size:12px}"
)


def is_ablation_dir(path: str | Path) -> bool:
    """An ablation folder: results.csv, or (before its first run finished) plan.json."""
    from langdml.ablation.cells import PLAN

    path = Path(path)
    marks = (path / "results.csv").is_file() or (path / PLAN).is_file()
    return marks and not (path / "config.yaml").is_file()


def _markdown_table(text: str) -> str:
    """The pipe table of ``results.md`` as HTML (**bold** kept); other lines as paragraphs."""
    rows, out = [], []
    for line in text.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                rows.append(cells)
        elif line.strip():
            out.append(f"<p>{html.escape(line.lstrip('# '))}</p>")
    if rows:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
        body = ["<tr>" + "".join(f"<td>{_bold(c)}</td>" for c in row) + "</tr>" for row in rows[1:]]
        out.insert(1 if out else 0, f"<table><tr>{head}</tr>{''.join(body)}</table>")
    return "".join(out)


def _bold(cell: str) -> str:
    return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", html.escape(cell))


def write_ablation_report(folder: str | Path, out: str | Path, cell_reports: bool = False) -> Path:
    """Write the ablation page to ``out``; with ``cell_reports`` each finished cell run gets its
    own ``report.html`` first (slow: one run report each). Run ids come from ``results.csv`` and
    ``plan.json`` and must name folders inside ``runs/`` (else one line); runs of the plan that
    have not finished are listed as running or pending at the top of the page."""
    from langdml.experiment.run_files import CHECKPOINT
    from langdml.io import atomic_write_text

    folder, out = Path(folder), Path(out)
    md = folder / "results.md"
    states = plan_states(folder)
    parts = [_progress_banner(states)]
    parts.append(_markdown_table(md.read_text()) if md.is_file() else "")
    png = folder / "results.png"
    if png.is_file():
        data = base64.b64encode(png.read_bytes()).decode()
        parts.append(
            f'<img alt="results" style="max-width:100%" src="data:image/png;base64,{data}">'
        )
    records = []
    if (folder / "results.csv").is_file():  # absent until the first run finishes
        with open(folder / "results.csv", newline="") as f:
            records = list(csv.DictReader(f))
    listed = {rec.get("run_id", "") for rec in records}
    unfinished = ("running", "stale", "pending")
    records += [
        {"run_id": rid, "status": st}
        for rid, st in states.items()
        if rid not in listed and st in unfinished
    ]
    links = []
    for rec in records:
        run_dir = run_folder(folder, rec.get("run_id", ""), "results.csv")
        if cell_reports and rec.get("status") == "ok" and (run_dir / CHECKPOINT).is_file():
            from langdml.inference.report import write_report
            from langdml.inference.run import load_run

            write_report(load_run(run_dir), run_dir / "report.html")
        links.append(_cell_link(rec, run_dir, out))
    parts.append(
        "<h2>Cells</h2><table><tr><th>run</th><th>cell</th><th>status</th><th>R@1</th></tr>"
        f"{''.join(links)}</table>"
    )
    page = (
        f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(folder.name)}"
        f"</title><style>{STYLE}</style></head><body>{''.join(parts)}</body></html>\n"
    )
    atomic_write_text(out, page)
    return out


def run_folder(folder: Path, run_id: str, source: str) -> Path:
    """``folder/runs/RUN_ID``; an id that is absolute, has ``..`` or links out is one line."""
    from langdml.paths import inside

    return inside(folder / "runs", run_id, f"run id in {folder / source}")


def plan_states(folder: Path) -> dict[str, str]:
    """Each planned run's state (done / running / stale / failed / pending) from its folder; for
    an ablation folder written before plans were recorded, the runs a live process holds."""
    import json

    from langdml.ablation.cells import PLAN, run_state
    from langdml.errors import LangDMLError

    path = folder / PLAN
    if not path.is_file():  # an older folder: its run folders, a live marker meaning running
        found = sorted(d for d in (folder / "runs").glob("*") if d.is_dir())
        return {d.name: _legacy_state(d) for d in found}
    try:
        plan = json.loads(path.read_text(encoding="utf-8"))["runs"]
        runs = [(str(r["run_id"]), int(r["epochs"])) for r in plan]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LangDMLError(f"{path} is not an ablation plan ({exc})") from None
    return {rid: run_state(rid, run_folder(folder, rid, PLAN), n).status for rid, n in runs}


def _legacy_state(run_dir: Path) -> str:
    from langdml.ablation.cells import ERROR, read_marker, stale_reason

    marker = read_marker(run_dir)
    if marker is not None and stale_reason(marker) is None:
        return "running"
    if (run_dir / "metrics.json").is_file():
        return "done"
    return "failed" if (run_dir / ERROR).is_file() else "pending"


def _progress_banner(states: dict[str, str]) -> str:
    shown = ("running", "stale", "pending", "failed")
    waiting = {s: [r for r, st in states.items() if st == s] for s in shown}
    if not any(waiting.values()):
        return ""
    done = sum(1 for st in states.values() if st == "done")
    what = "; ".join(f"{len(v)} {s}: {', '.join(v)}" for s, v in waiting.items() if v)
    return (
        f'<p class="incomplete"><b>Incomplete ablation</b>: {done} of {len(states)} runs '
        f"finished ({html.escape(what)}). The table and plot hold the finished runs only.</p>"
    )


def _cell_link(rec: dict, run_dir: Path, out: Path) -> str:
    target = run_dir / "report.html" if (run_dir / "report.html").is_file() else run_dir
    label = " · ".join(
        f"{k.split('.')[-1]}={v}" for k, v in rec.items() if k.startswith("loss.") or k == "seed"
    )
    r1 = f"{float(rec['recall@1']):.4f}" if rec.get("recall@1") else "-"
    href = Path(os.path.relpath(target, out.parent)).as_posix()
    return (
        f'<tr><td><a href="{html.escape(href)}">'
        f"{html.escape(rec.get('run_id', ''))}</a></td><td>{html.escape(label)}</td>"
        f"<td>{html.escape(rec.get('status', ''))}</td><td>{html.escape(r1)}</td></tr>"
    )
