"""The run report's metrics table shows a "best (epoch N)" column only where a validation split
picked a best epoch; without one it says so instead of a column of nan."""

from __future__ import annotations

import json
from types import SimpleNamespace

from langdml.inference import report


def _table(tmp_path, best):
    final = {"recall@1": 0.5, "map@r": 0.25}
    metrics = {"final": final, "eval_split": "test", "baselines": {}}
    if best is not None:
        metrics["best"] = best
    (tmp_path / report.METRICS).write_text(json.dumps(metrics))
    return report._metrics_table(SimpleNamespace(run_dir=tmp_path))


def test_no_validation_split_has_no_best_column(tmp_path):
    for best in (None, {}, {"epoch": None, "metrics": {}}):
        html = _table(tmp_path, best)
        assert "best (epoch" not in html and "nan" not in html
        assert "no validation split, so no best epoch" in html


def test_a_best_epoch_gets_its_column(tmp_path):
    html = _table(tmp_path, {"epoch": 3, "metrics": {"recall@1": 0.625, "map@r": 0.375}})
    assert "best (epoch 3)" in html and "0.6250" in html and "0.3750" in html
    assert "no validation split" not in html
