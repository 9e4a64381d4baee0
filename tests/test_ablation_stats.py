"""Ablation report pieces without training: the versions line, Holm adjustment, bootstrap CIs."""

import json
from types import SimpleNamespace

from langdml.ablation.report import versions_note


def _ablation(tmp_path, n=2):
    runs = []
    for i in range(n):
        d = tmp_path / f"r{i}"
        d.mkdir()
        runs.append(SimpleNamespace(id=f"r{i}", config=SimpleNamespace(output_dir=str(d))))
    return SimpleNamespace(runs=runs)


def test_versions_note_names_the_versions_the_runs_recorded(tmp_path):
    abl = _ablation(tmp_path)
    rows = [{"run_id": "r0", "status": "ok"}, {"run_id": "r1", "status": "ok"}]
    assert versions_note(abl, rows).startswith("Versions (of this report")
    for run in abl.runs:
        rec = {"versions": {"python": "3.11.9", "torch": "2.4.0", "faiss": None}}
        (tmp_path / run.id / "provenance.json").write_text(json.dumps(rec))
    assert versions_note(abl, rows) == "Versions: python 3.11.9, torch 2.4.0."
    (tmp_path / "r1" / "provenance.json").write_text(json.dumps({"versions": {"torch": "2.5"}}))
    assert versions_note(abl, rows).startswith("Versions differ between runs:")
