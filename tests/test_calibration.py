"""The agreement → gain calibration: the packaged table, the sentence ``langdml diagnose`` prints
from it, and that the table is what the calibration script computes from the results files."""

import importlib.util
import json
import math
from pathlib import Path

import pytest

from langdml import calibration
from langdml.calibration import COLUMNS, CalibrationPoint, load_points, placement
from langdml.cli import main
from langdml.diagnose import Agreement
from langdml.errors import LangDMLError

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"


def _pt(rho, gain_none, gain_shuffled, wins_none=3, wins_shuffled=3, target="names"):
    return CalibrationPoint(
        benchmark="bench",
        target=target,
        setting="frozen",
        base_loss="multi_similarity",
        spearman=rho,
        gain_none=gain_none,
        wins_none=wins_none,
        gain_shuffled=gain_shuffled,
        wins_shuffled=wins_shuffled,
        seeds=3,
        source="x.csv",
    )


def test_packaged_table_is_well_formed():
    points = load_points()
    assert len(points) >= 10
    assert {p.benchmark for p in points} >= {"emoji"}
    for p in points:
        assert -1 <= p.spearman <= 1
        assert 0 <= p.wins_none <= p.seeds and 0 <= p.wins_shuffled <= p.seeds
        if (RESULTS).is_dir():
            assert (RESULTS / p.source).is_file(), p.source


SCRIPT = ROOT / "scripts" / "studies" / "calibration.py"


@pytest.mark.skipif(not SCRIPT.is_file(), reason="checkout only")
def test_packaged_table_is_what_the_script_computes_from_the_results():
    script = SCRIPT
    spec = importlib.util.spec_from_file_location("calib_script", script)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.COLUMNS == COLUMNS
    rows = script.emoji_study() + script.emoji_positive_control() + script.shapes_study()
    computed = sorted((r["benchmark"], r["target"], r["setting"], r["base_loss"]) for r in rows)
    packaged = load_points()
    assert sorted((p.benchmark, p.target, p.setting, p.base_loss) for p in packaged) == computed
    by_key = {(r["benchmark"], r["target"], r["setting"], r["base_loss"]): r for r in rows}
    for p in packaged:
        r = by_key[p.benchmark, p.target, p.setting, p.base_loss]
        assert p.spearman == pytest.approx(float(r["spearman"]))
        assert p.gain_none == pytest.approx(float(r["gain_none"]))
    # one gain recomputed by hand from the emoji study's csv: MiniLM names, frozen MS, vs none
    import csv

    with open(RESULTS / "emoji_study" / "results.csv", newline="") as fh:
        csv_rows = [
            r
            for r in csv.DictReader(fh)
            if r["setting"] == "frozen" and r["loss.base.name"] == "multi_similarity"
        ]

    def r1(arm):
        return {r["seed"]: float(r["recall@1"]) for r in csv_rows if r["loss.regularizers"] == arm}

    names, none = r1("names_minilm"), r1("none")
    by_hand = 100 * sum(names[s] - none[s] for s in none) / len(none)
    (pt,) = [
        p
        for p in packaged
        if (p.benchmark, p.target, p.setting, p.base_loss)
        == ("emoji", "names (MiniLM)", "frozen", "multi_similarity")
    ]
    assert pt.gain_none == pytest.approx(by_hand, abs=0.006)


def test_gained_needs_both_controls_on_every_seed():
    assert _pt(0.5, 2.0, 3.0).gained
    assert not _pt(0.4, -2.0, 2.0, wins_none=0).gained  # beats shuffled, loses to none
    assert not _pt(0.1, 4.0, -0.1, wins_shuffled=1).gained  # regularizer strength, not names
    assert not _pt(0.1, 1.0, 0.5, wins_shuffled=2).gained  # not on every seed
    assert not _pt(0.0, 1.0, None).gained  # no shuffled control


def test_placement_counts_the_neighbouring_points():
    points = [_pt(0.08, -0.2, -0.1, 0, 1), _pt(0.12, 0.3, -0.05, 2, 1), _pt(0.5, 2.6, 7.0)]
    line = placement(0.09, points)
    assert line.startswith("agreement 0.09: in the range where no benchmark here gained")
    assert "0 of 2 measured settings at agreement 0.08–0.12" in line
    assert "lowest agreement that did: 0.50" in line
    assert "every benchmark target here gained" in placement(0.48, points)
    some = placement(0.5, [*points, _pt(0.52, -1.0, 0.5, 0, 2)])
    assert "some benchmark targets here gained (1 of 2" in some
    assert placement(0.9, points).startswith("agreement 0.90: above every measured target")
    assert "nearest: 0.50, bench names, which gained" in placement(0.9, points)
    assert placement(-0.3, points).startswith("agreement -0.30: below every measured target")
    assert "between measured targets" in placement(0.3, points)
    assert "none did at any measured agreement" in placement(0.1, points[:2])
    assert "no calibration points" in placement(math.nan, points)
    assert "no calibration points" in placement(0.1, [_pt(0.1, 1.0, None)])
    # an oracle saw the test classes: on the plot, never what a new text is compared with
    oracle = _pt(0.1, 5.0, 3.0, target="oracle")
    assert oracle.gained and oracle.saw_test_classes
    assert placement(0.09, [*points, oracle]) == placement(0.09, points)


def test_placement_reads_the_table_it_is_given(tmp_path, monkeypatch):
    path = tmp_path / "calibration.tsv"
    rows = ["# a comment", "\t".join(COLUMNS)]
    rows.append(
        "\t".join(["toy", "names", "frozen", "ms", "0.2", "1.5", "3", "0.8", "3", "3", "t"])
    )
    path.write_text("\n".join(rows) + "\n")
    (pt,) = load_points(path)
    assert pt.gained and pt.spearman == 0.2
    monkeypatch.setattr(calibration, "CALIBRATION_FILE", path)
    monkeypatch.setattr(calibration.load_points, "__defaults__", (path,))
    assert placement(0.21).startswith("agreement 0.21: in the range where every benchmark")
    path.write_text("\t".join(COLUMNS[:-1]) + "\n")
    with pytest.raises(LangDMLError, match="expected the columns benchmark, target"):
        load_points(path)
    path.write_text("\n".join([rows[1], rows[2].replace("0.2", "high")]) + "\n")
    with pytest.raises(LangDMLError, match="line 2: malformed calibration row"):
        load_points(path)
    with pytest.raises(LangDMLError, match="cannot read the calibration table"):
        load_points(tmp_path / "nosuch.tsv")


def test_diagnose_prints_where_each_agreement_falls(monkeypatch, capsys):
    import langdml.diagnose as diag

    found = [
        Agreement(688, 10, 0.089, 0.15, -0.006, 0.014, 0.007, 0.002, 0.0146, 5, "minilm", "e"),
        Agreement(688, 10, 0.6, 0.5, 0.0, 0.014, 0.007, 0.002, 0.0146, 5, "file:t.npy", "e"),
    ]
    monkeypatch.setattr(diag, "diagnose", lambda *a, **k: found)
    assert main(["diagnose", "--dataset", "emoji"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-2] == f"minilm: {placement(0.089)}"
    assert out[-1] == f"file:t.npy: {placement(0.6)}"
    assert "docs/results/calibration.md" in out[-1]
    assert main(["diagnose", "--dataset", "emoji", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["calibration"] for r in rows] == [placement(0.089), placement(0.6)]
