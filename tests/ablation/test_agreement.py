"""The agreement columns of an ablation table: which grids get them, that each row's numbers are
what ``langdml diagnose`` computes for its text (PLG: the mean pseudo-label embedding), the cache
that makes a re-render cheap, and the rendered table. No training: the rows are written here."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
import yaml
from ablationkit import ok_row
from PIL import Image, ImageDraw
from safetensors.torch import save_file

import langdml.ablation.agreement as agreement_module
from langdml.ablation import load_ablation
from langdml.ablation.agreement import AGREEMENT_FILE, cell_agreements, request_for, varies_text
from langdml.ablation.report import markdown_table, summarise
from langdml.diagnose import agreement, diagnose, train_classes, train_features
from langdml.models import FeatureSpec
from langdml.text import precompute as precompute_module

NAMES = (
    "apple banana cherry grape lemon mango olive peach pear plum kiwi lime melon fig date guava "
    "papaya quince apricot walnut almond hazelnut pecan cashew"
).split()
SIZE = 32


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """24 classes × 2 small drawn images (12 train classes, so 10 nearest of 11 is no tautology):
    shapes and colours vary with the class."""
    root = tmp_path_factory.mktemp("fruit")
    for c, name in enumerate(NAMES):
        (root / name).mkdir()
        for s in range(2):
            im = Image.new("RGB", (SIZE, SIZE), (235, 235, 235))
            d = ImageDraw.Draw(im)
            colour = (40 + 8 * c, 220 - 7 * c - 30 * s, 60 + 30 * (c % 5))
            box = [4 + c % 4, 4 + s * 3, 26 - c % 3, 28]
            (d.ellipse if c % 2 else d.rectangle)(box, fill=colour)
            im.save(root / name / f"{s}.png")
    return root


def _table(path, names, seed, dim=12):
    emb = torch.randn(len(names), dim, generator=torch.Generator().manual_seed(seed))
    save_file({"embeddings": emb}, str(path), metadata={"names": json.dumps(names)})
    return emb


PLG = "bowl tray crate basket hook jar cup plate box bag sack tin".split()


def _fake_pseudo_labels(dataset, k, **_):
    # per class: two "ImageNet" names fixed by the class index, each pair different and some
    # shared between classes (no tied similarities, so ranks do not hinge on rounding)
    pairs = [[PLG[c % 12], PLG[(c + 3) % 12]][:k] for c in range(dataset.num_classes)]
    return {"names": pairs, "probs": [[0.6, 0.1][:k]] * dataset.num_classes}


@pytest.fixture
def setup(folder, tmp_path, monkeypatch):
    monkeypatch.setattr(precompute_module, "compute_pseudo_labels", _fake_pseudo_labels)
    files = {}
    for i, tag in enumerate("ab"):
        files[tag] = tmp_path / f"{tag}.safetensors"
        _table(files[tag], NAMES, seed=i)
    files["plg"] = tmp_path / "plg.safetensors"
    _table(files["plg"], PLG, seed=5)
    files["bad"] = tmp_path / "bad.safetensors"
    _table(files["bad"], NAMES[:2], seed=6)
    return files


def _ablation(tmp_path, folder, grid):
    base = {
        "data": {"dataset": f"imagefolder:{folder}", "cache_dir": str(tmp_path / "cache")},
        "model": {"image_size": SIZE, "embedding_dim": 8},
        "train": {"epochs": 1, "batch_size": 4, "m_per_class": 2, "progress": False},
    }
    spec = {"base": base, "grid": grid, "seeds": [0, 1], "output_dir": str(tmp_path / "out")}
    path = tmp_path / "abl.yaml"
    path.write_text(yaml.safe_dump(spec))
    return load_ablation(path)


def _arms(files):
    lang = {"loss.regularizers": "language"}
    return {
        "arm": {
            "none": {"loss.regularizers": "none"},
            "a": {**lang, "text.text_model": f"file:{files['a']}"},
            "b": {**lang, "text.text_model": f"file:{files['b']}"},
            "a_shuffled": {
                **lang,
                "text.text_model": f"file:{files['a']}",
                "loss.language.shuffled_names": True,
            },
            "plg": {
                **lang,
                "text.text_model": f"file:{files['plg']}",
                "text.pseudo_labels": True,
                "text.top_k": 2,
            },
        }
    }


def _ok_rows(abl):
    rows = []
    for i, run in enumerate(abl.runs):
        r1 = 0.4 + 0.01 * i
        metrics = {"recall@1": r1, "map@r": r1 / 2, "r_precision": r1 / 2, "nmi": 0.5}
        rows.append(ok_row(run.id, run.cell.id, run.seed, metrics))
    return rows


def _split(line):
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _by_arm(abl, result):
    return {run.cell.get("arm"): result.get(run.cell.id) for run in abl.runs}


def test_which_grids_vary_the_text(folder, setup, tmp_path):
    files = setup
    assert varies_text(_ablation(tmp_path, folder, _arms(files)))
    same = {"loss.regularizers": ["none", "language"], "loss.base.name": ["multi_similarity"]}
    assert not varies_text(_ablation(tmp_path, folder, same))
    direct = {"loss.regularizers": ["language"], "text.text_model": ["minilm", "mpnet"]}
    assert varies_text(_ablation(tmp_path, folder, direct))
    # the shuffled control alone keeps the text model: no column
    shuffled = {"loss.regularizers": ["language"], "loss.language.shuffled_names": [False, True]}
    assert not varies_text(_ablation(tmp_path, folder, shuffled))
    plg = {"loss.regularizers": ["language"], "text.pseudo_labels": [False, True]}
    assert varies_text(_ablation(tmp_path, folder, plg))
    no_text = {"loss.regularizers": ["none"], "text.text_model": ["minilm", "mpnet"]}
    assert not varies_text(_ablation(tmp_path, folder, no_text))


def test_rows_carry_what_diagnose_computes(folder, setup, tmp_path):
    files = setup
    abl = _ablation(tmp_path, folder, _arms(files))
    got = _by_arm(abl, cell_agreements(abl, _ok_rows(abl)))
    assert got["none"] is None  # no text: no entry, a blank cell
    cache = tmp_path / "cache"
    ref_a, ref_b = diagnose(
        f"imagefolder:{folder}",
        models=[f"file:{files['a']}", f"file:{files['b']}"],
        feature_spec=FeatureSpec(image_size=SIZE),
        cache_dir=cache,
        progress=False,
    )
    assert got["a"].agreement.num_classes == 12 and got["a"].agreement.k == 10
    for arm, ref in (("a", ref_a), ("b", ref_b)):
        assert got[arm].spearman == pytest.approx(ref.spearman, abs=1e-12)
        assert got[arm].overlap == pytest.approx(ref.overlap)
        assert not got[arm].shuffled and not got[arm].error
    assert got["a"].spearman != pytest.approx(got["b"].spearman)
    assert got["a_shuffled"].shuffled
    assert got["a_shuffled"].spearman == pytest.approx(ref_a.shuffled_spearman, abs=1e-12)
    assert got["a_shuffled"].overlap == pytest.approx(ref_a.shuffled_overlap)

    # PLG: each class's text is the renormalised mean of its two pseudo-label rows of the file
    from langdml.data import load_dataset

    full = load_dataset(f"imagefolder:{folder}", cache_dir=cache)
    train = train_classes(full)
    unit = F.normalize(_table(tmp_path / "again.safetensors", PLG, seed=5), dim=1)
    rows = [[PLG.index(n) for n in names] for names in _fake_pseudo_labels(train, 2)["names"]]
    text = torch.stack([unit[r].mean(0) for r in rows])
    feats = train_features(full, train, FeatureSpec(image_size=SIZE), cache, "cpu", False)
    ref = agreement(text, feats, train.labels, k=10)
    assert got["plg"].pseudo_labels
    assert got["plg"].spearman == pytest.approx(ref.spearman, abs=1e-6)
    assert got["plg"].overlap == pytest.approx(ref.overlap)


def test_the_cache_serves_a_rerender_and_is_checked(folder, setup, tmp_path, monkeypatch):
    files = setup
    abl = _ablation(tmp_path, folder, _arms(files))
    rows = _ok_rows(abl)
    first = _by_arm(abl, cell_agreements(abl, rows))
    path = tmp_path / "out" / AGREEMENT_FILE
    stored = json.loads(path.read_text())
    assert len(stored) == 3  # a and a_shuffled share one request

    calls = []
    real = agreement_module.agreement_of

    def counting(request, *args, **kwargs):
        calls.append(request.text_model)
        return real(request, *args, **kwargs)

    monkeypatch.setattr(agreement_module, "agreement_of", counting)
    again = _by_arm(abl, cell_agreements(abl, rows))
    assert calls == [] and again == first  # the re-render read agreement.json only

    # an entry whose stored request no longer hashes to its key is recomputed, not trusted
    run_a = next(run for run in abl.runs if run.cell.get("arm") == "a")
    key_a = request_for(run_a.config).key()
    stored[key_a]["request"]["k"] = 3
    path.write_text(json.dumps(stored))
    assert _by_arm(abl, cell_agreements(abl, rows))["a"] == first["a"]
    assert calls == [f"file:{files['a']}"]

    # new content in the text file: a new identity, a new number
    _table(files["a"], NAMES, seed=9)
    changed = _by_arm(abl, cell_agreements(abl, rows))
    assert len(calls) == 2 and changed["a"].spearman != pytest.approx(first["a"].spearman)

    path.write_text("{not json")  # a torn file costs a recomputation
    cell_agreements(abl, rows)
    assert len(calls) == 5 and len(json.loads(path.read_text())) == 3


def test_only_finished_cells_and_failures_are_a_dash(folder, setup, tmp_path):
    files = setup
    grid = _arms(files)
    bad = {"loss.regularizers": "language", "text.text_model": f"file:{files['bad']}"}
    grid["arm"]["bad"] = bad
    abl = _ablation(tmp_path, folder, grid)
    cell_b = next(run.cell.id for run in abl.runs if run.cell.get("arm") == "b")
    rows = [r for r in _ok_rows(abl) if r["cell_id"] != cell_b]  # no run of "b" finished
    got = cell_agreements(abl, rows)
    by_arm = _by_arm(abl, got)
    assert by_arm["b"] is None and by_arm["a"].agreement is not None
    assert by_arm["bad"].agreement is None and "no row for 10 of the 12" in by_arm["bad"].error

    md = markdown_table(summarise(abl, rows), got)
    head, _, *body = (_split(line) for line in md.split("\n\n")[0].splitlines())
    # ... NMI | agreement ρ | agreement k-NN | ΔR@1 | ΔMAP@R | seeds
    assert head[-5:-3] == ["agreement ρ", "agreement 10-NN"]
    cells = {line[2]: line[-5:-3] for line in body}  # by the setting column
    assert cells["arm=none"] == ["", ""]
    assert cells["arm=bad"] == ["—", "—"]
    assert cells["arm=a_shuffled"][0].endswith("(shuffled)")
    assert cells["arm=plg"][0].endswith("(PLG)")
    a = by_arm["a"]
    assert cells["arm=a"] == [f"{a.spearman:.3f}", f"{100 * a.overlap:.1f} %"]
    assert "Spearman ρ" in md and "chance 90.9 %" in md and "no row for 10 of the 12" in md
    assert not math.isnan(a.spearman)
    assert "agreement ρ" not in markdown_table(summarise(abl, rows))


@pytest.mark.slow
def test_run_ablation_writes_the_columns_and_rerenders_from_the_cache(
    folder, setup, tmp_path, monkeypatch
):
    from langdml.ablation import run_ablation

    files = setup
    grid = {"arm": {k: v for k, v in _arms(files)["arm"].items() if k in ("none", "a", "b")}}
    _ablation(tmp_path, folder, grid)  # writes abl.yaml; a tiny training below
    spec = yaml.safe_load((tmp_path / "abl.yaml").read_text())
    spec["base"]["train"].update(iterations_per_epoch=2)
    spec["base"]["eval"] = {"clustering": False}
    spec["seeds"] = [0]
    (tmp_path / "abl.yaml").write_text(yaml.safe_dump(spec))
    first = run_ablation(tmp_path / "abl.yaml", progress=False)
    assert all(r["status"] == "ok" for r in first.rows)
    assert "| agreement ρ | agreement 10-NN |" in first.markdown
    assert (tmp_path / "out" / AGREEMENT_FILE).is_file()

    def no_compute(*_a, **_k):
        raise AssertionError("a re-render must read agreement.json")

    monkeypatch.setattr(agreement_module, "agreement_of", no_compute)
    assert run_ablation(tmp_path / "abl.yaml", progress=False).markdown == first.markdown
