"""Helpers shared by the ablation-report tests that feed the report hand-made runs and rows."""

from __future__ import annotations

from types import SimpleNamespace


class FakeCell:
    """An ablation cell of one base loss and one regularizer setting (id ``base-reg``)."""

    def __init__(self, base, reg):
        self.id, self.values = f"{base}-{reg}", {"loss.base.name": base, "loss.regularizers": reg}

    def get(self, key):
        return self.values.get(key)

    def label(self, skip=()):
        return "-"


def fake_ablation(runs):
    """An ablation of ``runs`` over the base-loss x regularizers grid."""
    return SimpleNamespace(runs=runs, grid={"loss.base.name": [], "loss.regularizers": []})


def ok_row(run_id, cell_id, seed, metrics: dict) -> dict:
    """The results row of a finished run."""
    return {"run_id": run_id, "cell_id": cell_id, "seed": seed, "status": "ok", **metrics}
