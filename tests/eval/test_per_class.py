"""Per-query / per-class retrieval results and mistake-severity metrics against loop references
written from the definitions (langdml.eval.per_class), and class hierarchies (data.hierarchy)."""

import math

import numpy as np
import pytest

from langdml.data.hierarchy import (
    class_group_codes,
    emoji_hierarchy,
    read_hierarchy,
    resolve_hierarchy,
)
from langdml.errors import DataError, LangDMLError
from langdml.eval import retrieval_metrics
from langdml.eval.per_class import (
    per_class_csv,
    per_class_rows,
    query_results,
    severity_metrics,
)


def _loop_reference(q, q_lab, ref=None, r_lab=None):
    """Per query: (row, R@1 hit, AP@R, top-1 label), cosine, ties by reference index."""
    loo = ref is None
    ref, r_lab = (q, q_lab) if loo else (ref, r_lab)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    rn = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    out = []
    for i in range(len(q)):
        cands = [j for j in range(len(ref)) if not (loo and j == i)]
        R = sum(1 for j in cands if r_lab[j] == q_lab[i])
        if R == 0:
            continue
        sims = {j: float(np.dot(qn[i].astype(np.float64), rn[j].astype(np.float64))) for j in cands}
        order = sorted(cands, key=lambda j: (-sims[j], j))
        rel = [r_lab[j] == q_lab[i] for j in order[:R]]
        hits, ap = 0, 0.0
        for rank, r in enumerate(rel, start=1):
            if r:
                hits += 1
                ap += hits / rank
        out.append((i, float(rel[0]), ap / R, int(r_lab[order[0]])))
    return out


@pytest.mark.parametrize("gallery", [False, True])
def test_query_results_match_the_loop_reference(gallery):
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(7, 6))
    labels = rng.integers(0, 7, size=60)
    x = (centres[labels] + 0.9 * rng.normal(size=(60, 6))).astype(np.float32)
    labels[0] = 6  # make sure a lone query can occur
    if gallery:
        q, ql, g, gl = x[:25], labels[:25], x[25:], labels[25:]
        res = query_results(q, ql, g, gl, metric="cosine", device="cpu")
        ref = _loop_reference(q, ql, g, gl)
    else:
        res = query_results(x, labels, metric="cosine", device="cpu")
        ref = _loop_reference(x, labels)
    assert res.rows.tolist() == [r[0] for r in ref]
    np.testing.assert_allclose(res.recall_at_1, [r[1] for r in ref])
    np.testing.assert_allclose(res.ap_r, [r[2] for r in ref], atol=1e-6)
    assert res.top1.tolist() == [r[3] for r in ref]
    # the query-weighted mean of the per-class values is the overall metric
    rows = per_class_rows(res, [f"c{i}" for i in range(7)])
    n = np.array([r["queries"] for r in rows])
    r1 = np.nan_to_num([r["recall@1"] for r in rows])
    ap = np.nan_to_num([r["map@r"] for r in rows])
    overall = (
        retrieval_metrics(q, ql, g, gl, include=("recall", "map_r"), device="cpu")
        if gallery
        else retrieval_metrics(x, labels, include=("recall", "map_r"), device="cpu")
    )
    assert (n * r1).sum() / n.sum() == pytest.approx(overall["recall@1"], abs=1e-9)
    assert (n * ap).sum() / n.sum() == pytest.approx(overall["map@r"], abs=1e-6)


def test_per_class_csv_has_nan_for_classes_without_queries():
    res = query_results(
        np.eye(4, dtype=np.float32) + 0.1, np.array([0, 0, 1, 2]), metric="cosine", device="cpu"
    )
    rows = per_class_rows(res, ["a", "b", "c"])
    assert [r["queries"] for r in rows] == [2, 0, 0]
    assert math.isnan(rows[1]["recall@1"])
    text = per_class_csv(rows)
    assert text.splitlines()[0] == "class,class_name,queries,recall@1,map@r"
    assert "nan" in text.splitlines()[2]


def _lca_height(path_t, path_p):
    """Bertinetto et al. 2020: height of the lowest common ancestor in a tree whose leaves (the
    classes) all lie at depth len(path) + 1 below the root."""
    full_t, full_p = (*path_t,), (*path_p,)
    shared = 0
    for a, b in zip(full_t, full_p):
        if a != b:
            break
        shared += 1
    return len(full_t) - shared


def test_severity_metrics_match_a_loop_reference_on_string_paths():
    # classes: 0..5 with group/subgroup paths; the class itself is the last path element
    paths = {
        0: ("animals", "cats", "cat"),
        1: ("animals", "cats", "cat face"),
        2: ("animals", "dogs", "dog"),
        3: ("food", "fruit", "apple"),
        4: ("food", "fruit", "pear"),
        5: ("food", "veg", "leek"),
    }
    names = [paths[c][-1] for c in range(6)]
    hier = {paths[c][-1]: paths[c][:-1] for c in range(6)}
    codes = class_group_codes(names, hier)
    rng = np.random.default_rng(0)
    t = rng.integers(0, 6, size=200)
    p = np.where(rng.random(200) < 0.4, t, rng.integers(0, 6, size=200))
    got = severity_metrics(t, p, codes)
    errors = [(a, b) for a, b in zip(t, p) if a != b]
    same_group = np.mean([paths[a][0] == paths[b][0] for a, b in errors])
    severity = np.mean([_lca_height(paths[a], paths[b]) for a, b in errors])
    # Kiritchenko hP: |A(t) ∩ A(p)| / |A(p)|, A = the class and its ancestors without the root
    inter = sum(
        len({paths[a][:k] for k in (1, 2, 3)} & {paths[b][:k] for k in (1, 2, 3)})
        for a, b in zip(t, p)
    )
    hp = inter / (3 * len(t))
    assert got["hier/top1_error_same_group"] == pytest.approx(same_group)
    assert got["hier/mistake_severity"] == pytest.approx(severity)
    assert got["hier/hp@1"] == pytest.approx(hp)
    assert 1.0 <= got["hier/mistake_severity"] <= 3.0
    perfect = severity_metrics(t, t, codes)
    assert perfect["hier/hp@1"] == 1.0 and math.isnan(perfect["hier/mistake_severity"])


def test_group_codes_compare_whole_prefixes():
    # the same subgroup name under two groups is two different subgroups
    codes = class_group_codes(["a", "b"], {"a": ("g1", "misc"), "b": ("g2", "misc")})
    assert codes[0, 1] != codes[1, 1]


def test_hierarchy_file_and_its_errors(tmp_path):
    f = tmp_path / "h.csv"
    f.write_text(
        "class_name,group\nBlack  Footed Albatross,seabirds/albatrosses\nwren,songbirds/wrens\n"
    )
    hier = read_hierarchy(f)
    assert hier["black footed albatross"] == ("seabirds", "albatrosses")
    codes = class_group_codes(["black footed albatross", "wren"], hier)
    assert codes.shape == (2, 2)
    with pytest.raises(DataError) as err:
        class_group_codes(["wren", "robin", "owl"], hier)
    msg = str(err.value)
    assert "\n" not in msg and "'robin'" in msg and "2 of 3" in msg
    f.write_text("wren,songbirds/wrens\nowl,raptors\n")
    with pytest.raises(DataError, match="different depths"):
        class_group_codes(["wren", "owl"], read_hierarchy(f))
    f.write_text("wren;songbirds\n")
    with pytest.raises(DataError, match="line 1"):
        read_hierarchy(f)
    with pytest.raises(DataError, match="not a file"):
        read_hierarchy(tmp_path / "missing.tsv")
    assert resolve_hierarchy("none", "emoji") is None
    assert resolve_hierarchy(None, "cub200") is None


def test_emoji_hierarchy_covers_the_pinned_benchmark():
    from langdml.data.emoji import PIN_FILE

    names = [
        line.split("\t")[2]
        for line in PIN_FILE.read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#") and not line.startswith("id\t")
    ]
    hier = emoji_hierarchy()
    codes = class_group_codes(names, hier)
    assert codes.shape == (len(names), 2)
    assert hier["grinning face"] == ("Smileys & Emotion", "face-smiling")
    assert len(set(codes[:, 0])) >= 8  # the Unicode groups
    assert resolve_hierarchy(None, "emoji") == hier


def test_bad_labels_are_one_line():
    with pytest.raises(LangDMLError, match="non-negative integer"):
        query_results(np.ones((3, 2), np.float32), np.array(["a", "b", "a"]))


# --- `langdml evaluate --per-class` on a tiny finished run ---------------------------------------


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from faultkit import make_folder

    return make_folder(tmp_path_factory.mktemp("per_class_images"))


def _trained(images, tmp_path, **over):
    from faultkit import tiny_cfg

    from langdml.train import train

    train(tiny_cfg(images, tmp_path, **over))
    return tmp_path / "run"


def test_evaluate_per_class_writes_the_runs_rows_and_severity(images, tmp_path, capsys):
    import json

    from faultkit import one_line

    from langdml.cli import main
    from langdml.eval.per_class import PER_CLASS

    hierarchy = tmp_path / "h.csv"
    hierarchy.write_text("".join(f"class_{c},g{c % 2}/s{c % 4}\n" for c in range(8)))
    run = _trained(images, tmp_path, **{"eval.hierarchy": str(hierarchy)})
    summary = json.loads((run / "metrics.json").read_text())
    out = tmp_path / "rows.csv"
    capsys.readouterr()
    assert main(["evaluate", str(run), "--per-class", str(out)]) == 0
    result = json.loads(capsys.readouterr().out)
    # the same file training wrote for this split, via the same functions
    assert out.read_text() == (run / PER_CLASS).read_text()
    assert result["per_class"] == str(out) and not list(tmp_path.glob(".rows.csv.*"))
    assert result["hierarchy"].keys() == summary["hierarchy"].keys()
    for key, value in summary["hierarchy"].items():
        assert result["hierarchy"][key] == pytest.approx(value, nan_ok=True), key
    # a folder that does not exist, or a folder as the file: one line, before any work
    for bad, words in [
        (tmp_path / "no" / "such" / "x.csv", "does not exist"),
        (tmp_path, "is a directory"),
    ]:
        assert main(["evaluate", str(run), "--per-class", str(bad)]) == 2
        line = one_line(capsys.readouterr().err)
        assert words in line and str(bad) in line
    assert not (tmp_path / "no").exists()


def test_evaluate_without_a_hierarchy_has_no_severity_metrics(images, tmp_path):
    from langdml.eval.commands import evaluate_run

    run = _trained(images, tmp_path)
    result = evaluate_run(run)
    assert "hierarchy" not in result and "per_class" not in result
    rows = evaluate_run(run, per_class=tmp_path / "rows.csv")
    assert "hierarchy" not in rows and (tmp_path / "rows.csv").read_text().startswith("class,")
    assert {k: v for k, v in rows.items() if k != "per_class"} == result
