"""Class descriptions as language targets: parsing and bad files, the mean-of-unit-embeddings
rule against a loop, the content-keyed cache, the combination with names, the packaged CLDR
emoji descriptions, and a tiny emoji run trained on them end to end."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
import torch.nn.functional as F
from runkit import imagefolder_cfg

from langdml.config import load_config
from langdml.errors import ConfigError, DataError, LangDMLError
from langdml.text import descriptions as descr_module
from langdml.text import encoders
from langdml.text.descriptions import load_descriptions
from langdml.text.pooling import grouped_unit_mean, unit_mean
from langdml.text.targets import class_text_target, description_embeddings

TSV = "class\ttext\nCat\ta small furry pet\ncat\tit purrs\n002.Red_Apple\ta round red fruit\n"


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def _one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert msg and "\n" not in msg
    return msg


# ---------------------------------------------------------------------------------------------
# parsing


def test_rows_group_by_class_matched_after_cleaning_and_ignoring_case(tmp_path):
    d = load_descriptions(_write(tmp_path, "d.tsv", TSV))
    assert d.rows == (
        ("Cat", "a small furry pet"),
        ("cat", "it purrs"),
        ("002.Red_Apple", "a round red fruit"),
    )
    per_class = d.for_classes(["cat", "red apple", "001.CAT"], required=True)
    assert per_class == [
        ["a small furry pet", "it purrs"],
        ["a round red fruit"],
        ["a small furry pet", "it purrs"],
    ]


def test_the_content_key_ignores_format_but_not_content(tmp_path):
    tsv = load_descriptions(_write(tmp_path, "a.tsv", TSV))
    csv_text = (
        '# my notes\r\nsource,text,class\r\nx,"a  small furry pet ",Cat\r\n'
        "y,it purrs,cat\r\n\r\nz,a round red fruit,002.Red_Apple\r\n"
    )
    same = load_descriptions(_write(tmp_path, "b.csv", csv_text))
    assert same.rows == tsv.rows and same.sha256 == tsv.sha256
    other = load_descriptions(_write(tmp_path, "c.tsv", TSV.replace("purrs", "meows")))
    assert other.sha256 != tsv.sha256
    reordered = (
        "class\ttext\ncat\tit purrs\nCat\ta small furry pet\n002.Red_Apple\ta round red fruit\n"
    )
    assert load_descriptions(_write(tmp_path, "d.tsv", reordered)).sha256 != tsv.sha256


@pytest.mark.parametrize(
    "name, text, expected",
    [
        ("a.tsv", "klass\ttext\ncat\tpet\n", "no 'class' column"),
        ("a.tsv", "class\tdescription\ncat\tpet\n", "no 'text' column"),
        ("a.csv", "class,text\ncat,pet\ndog,  \n", "line 3: empty text for class 'dog'"),
        ("a.csv", "class,text\n,pet\n", "line 2: empty class"),
        ("a.csv", "text,class\ncat\n", "line 2 has 1 fields"),
        ("a.csv", "# only a comment\n", "is empty"),
        ("a.csv", "class,text\n\n", "has a header but no rows"),
        ("a.json", "{}", "unknown suffix '.json'"),
    ],
)
def test_a_bad_file_is_one_line_naming_the_problem(tmp_path, name, text, expected):
    with pytest.raises(DataError) as err:
        load_descriptions(_write(tmp_path, name, text))
    assert expected in _one_line(err)


def test_a_missing_file_and_an_unknown_packaged_name(tmp_path):
    with pytest.raises(DataError) as err:
        load_descriptions(str(tmp_path / "nope.tsv"))
    assert "does not exist" in _one_line(err)
    with pytest.raises(DataError) as err:
        load_descriptions("packaged:klingon")
    assert "packaged:emoji_cldr" in _one_line(err)


def test_a_class_the_dataset_lacks_is_named_with_the_expected_ones(tmp_path):
    d = load_descriptions(_write(tmp_path, "d.tsv", TSV + "Zebra\tstripes\n"))
    d.check_classes(["cat", "red apple", "zebra"])  # matched after cleaning
    with pytest.raises(DataError) as err:
        d.check_classes(["cat", "red apple", "dog"])
    msg = _one_line(err)
    assert "1 classes the dataset does not have: 'Zebra'" in msg and "'dog'" in msg


def test_an_undescribed_class_fails_only_when_descriptions_are_required(tmp_path):
    d = load_descriptions(_write(tmp_path, "d.tsv", TSV))
    assert d.for_classes(["cat", "dog"], required=False) == [["a small furry pet", "it purrs"], []]
    with pytest.raises(DataError) as err:
        d.for_classes(["cat", "dog"], required=True)
    assert "no row for 1 of the 2 classes that need one: 'dog'" in _one_line(err)
    with pytest.raises(DataError) as err:  # describing none of them is never what was meant
        d.for_classes(["dog", "fox"], required=False)
    assert "describe none of the 2 classes" in _one_line(err)


def test_a_damaged_packaged_file_is_refused(tmp_path, monkeypatch):
    path = _write(tmp_path, "p.tsv", TSV)
    monkeypatch.setitem(descr_module.PACKAGED, "emoji_cldr", (tmp_path / "p.tsv", "0" * 64))
    assert load_descriptions(path).packaged is False  # the path itself is a user file
    with pytest.raises(DataError) as err:
        load_descriptions("packaged:emoji_cldr")
    assert "do not match their pinned SHA-256" in _one_line(err)


# ---------------------------------------------------------------------------------------------
# config


def test_target_defaults_and_combinations():
    assert load_config(None, {}).text.sources == ["names"]
    assert load_config(None, {"text.descriptions": "emoji"}).text.sources == ["descriptions"]
    assert load_config(None, {"text.pseudo_labels": True}).text.sources == ["pseudo_labels"]
    both = load_config(None, {"text.descriptions": "emoji", "text.target": "names+descriptions"})
    assert both.text.sources == ["names", "descriptions"]
    plg = {"text.descriptions": "emoji", "text.pseudo_labels": True}
    plg["text.target"] = ["pseudo_labels", "descriptions"]
    assert load_config(None, plg).text.sources == ["pseudo_labels", "descriptions"]


@pytest.mark.parametrize(
    "over, expected",
    [
        ({"text.target": "names+descriptions"}, "disagree"),
        ({"text.target": "names", "text.descriptions": "emoji"}, "disagree"),
        ({"text.target": "names+pseudo_labels"}, "text.pseudo_labels"),
        ({"text.target": "names+names"}, "distinct sources"),
        ({"text.target": "captions"}, "distinct sources"),
    ],
)
def test_bad_targets_are_config_errors(over, expected):
    with pytest.raises(ConfigError) as err:
        load_config(None, over)
    assert expected in _one_line(err)


# ---------------------------------------------------------------------------------------------
# the mean of unit embeddings


def _loop_mean(rows: list[torch.Tensor]) -> torch.Tensor:
    """normalize((1/R) Σ_r e_r / ||e_r||), one class at a time."""
    total = torch.zeros_like(rows[0])
    for r in rows:
        total += r / r.norm()
    mean = total / len(rows)
    return mean / mean.norm()


def test_grouped_unit_mean_matches_a_loop():
    g = torch.Generator().manual_seed(0)
    rows = torch.randn(9, 5, generator=g) * torch.rand(9, 1, generator=g) * 4
    groups = torch.tensor([2, 0, 0, 1, 2, 2, 0, 1, 2])
    got = grouped_unit_mean(rows, groups, 3)
    for c in range(3):
        want = _loop_mean([rows[i] for i in range(9) if groups[i] == c])
        torch.testing.assert_close(got[c], want)
    torch.testing.assert_close(
        unit_mean(rows.view(3, 3, 5)),
        grouped_unit_mean(rows, torch.arange(3).repeat_interleave(3), 3),
    )
    with pytest.raises(LangDMLError):
        grouped_unit_mean(rows, groups, 4)  # group 3 has no row


@pytest.fixture(scope="module")
def minilm():
    return encoders.create_text_encoder("minilm")


def test_description_embeddings_are_the_mean_of_unit_text_embeddings(tmp_path, minilm):
    d = load_descriptions(_write(tmp_path, "d.tsv", TSV))
    found, rows = description_embeddings(
        ["red apple", "cat", "dog", "cat"], d, cache_dir=tmp_path, required=False
    )
    assert found.class_names == ["red apple", "cat"] and rows.tolist() == [0, 1, -1, 1]
    for c, texts in enumerate([["a round red fruit"], ["a small furry pet", "it purrs"]]):
        # the texts as written: no prompt template
        want = _loop_mean([minilm.encode([t])[0] for t in texts])
        torch.testing.assert_close(found.embeddings[c], want, atol=1e-5, rtol=0)


def test_the_cache_keys_on_the_descriptions_content(tmp_path, monkeypatch, minilm):
    cache = tmp_path / "cache"
    first, _ = description_embeddings(
        ["cat"], load_descriptions(_write(tmp_path, "a.tsv", TSV)), cache_dir=cache, required=False
    )
    csv_same = "class,text\nCat,a small furry pet\ncat,it purrs\n002.Red_Apple,a round red fruit\n"
    monkeypatch.setattr(encoders, "create_text_encoder", _no_model)
    hit, _ = description_embeddings(
        ["cat"],
        load_descriptions(_write(tmp_path, "b.csv", csv_same)),
        cache_dir=cache,
        required=False,
    )
    assert hit.cache_hit and hit.path == first.path
    torch.testing.assert_close(hit.embeddings, first.embeddings)
    monkeypatch.undo()
    changed = load_descriptions(_write(tmp_path, "c.tsv", TSV.replace("it purrs", "it meows")))
    miss, _ = description_embeddings(["cat"], changed, cache_dir=cache, required=False)
    assert not miss.cache_hit and miss.path != first.path
    assert miss.meta["descriptions_sha256"] == changed.sha256
    assert not torch.allclose(miss.embeddings, first.embeddings)


def _no_model(*args, **kwargs):
    raise AssertionError("a model was built on what should be a cache hit")


def test_a_file_text_model_cannot_embed_descriptions(tmp_path):
    d = load_descriptions(_write(tmp_path, "d.tsv", TSV))
    with pytest.raises(ConfigError) as err:
        description_embeddings(["cat"], d, model=f"file:{tmp_path / 'e.npy'}", cache_dir=tmp_path)
    assert "need a text model that embeds text" in _one_line(err)


class _Classes:
    """The part of a dataset the text target reads."""

    def __init__(self, names):
        self.class_names = names
        self.shares_names = len(set(names)) < len(names)


def test_names_and_descriptions_are_two_views_and_a_missing_description_uses_the_name(
    tmp_path, minilm
):
    d = load_descriptions(_write(tmp_path, "d.tsv", TSV))
    classes = _Classes(["cat", "dog", "red apple"])
    kw = dict(model="minilm", cache_dir=tmp_path)
    both = class_text_target(classes, ["names", "descriptions"], descriptions=d, **kw)
    names = class_text_target(classes, ["names"], **kw)
    assert both.shape == (3, 2, 384) and names.shape == (3, 384)
    torch.testing.assert_close(both[:, 0], names)
    torch.testing.assert_close(both[1, 1], names[1])  # 'dog' has no description
    want = _loop_mean([minilm.encode([t])[0] for t in ["a small furry pet", "it purrs"]])
    torch.testing.assert_close(both[0, 1], want, atol=1e-5, rtol=0)
    with pytest.raises(DataError) as err:  # descriptions alone: every class needs one
        class_text_target(classes, ["descriptions"], descriptions=d, **kw)
    assert "'dog'" in _one_line(err)
    only = class_text_target(_Classes(["cat", "red apple"]), ["descriptions"], descriptions=d, **kw)
    torch.testing.assert_close(only[0], want, atol=1e-5, rtol=0)


def test_language_guidance_on_two_views_averages_their_cosines(tmp_path):
    from langdml.losses.language import LanguageGuidanceLoss

    views = F.normalize(torch.randn(4, 2, 8, generator=torch.Generator().manual_seed(1)), dim=-1)
    sims = LanguageGuidanceLoss(views).class_similarity
    for a in range(4):
        for b in range(4):
            want = (views[a, 0] @ views[b, 0] + views[a, 1] @ views[b, 1]) / 2
            torch.testing.assert_close(sims[a, b], want)


# ---------------------------------------------------------------------------------------------
# the packaged CLDR emoji descriptions


def test_the_packaged_emoji_descriptions_match_their_checksum_and_cover_every_class():
    from langdml.data.emoji import pinned_classes

    path, pinned = descr_module.PACKAGED["emoji_cldr"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == pinned
    assert (path.parent / "LICENSE-UNICODE.txt").read_text().count("Unicode, Inc.") >= 1
    d = load_descriptions("emoji")
    assert d.packaged and d.source == "emoji"
    classes = [name for _, name, _ in pinned_classes()]
    per_class = d.for_classes(classes, required=True)  # raises if any class lacks a row
    assert len(per_class) == 1377 and min(len(t) for t in per_class) >= 1
    lines = [x.split("\t") for x in path.read_text(encoding="utf-8").splitlines()]
    sources = {row[0]: row[3] for row in lines if not row[0].startswith("#")}
    fallback = sorted(n for n, s in sources.items() if s == "name")
    # emoji newer than CLDR 41 (Emoji 15): described by their name alone
    assert len(fallback) == 20 and "jellyfish" in fallback
    assert per_class[classes.index("jellyfish")] == ["jellyfish"]
    assert per_class[classes.index("high voltage")][:2] == ["danger", "electric"]


# ---------------------------------------------------------------------------------------------
# end to end

SETTINGS = {
    "model.image_size": 48,
    "model.embedding_dim": 32,
    "train.epochs": 2,
    "train.batch_size": 16,
    "train.m_per_class": 2,
    "train.iterations_per_epoch": 6,
    "train.progress": False,
    "eval.every": 2,
    "loss.regularizers": "language",
    "loss.language.weight": 2.0,
}


@pytest.mark.parametrize("target", ["descriptions", "names+descriptions"])
def test_descriptions_train_end_to_end_on_a_tiny_emoji_run(
    emoji_subset_folder, tmp_path_factory, tmp_path, target
):
    from langdml.experiment import class_text_embeddings, prepare_data
    from langdml.train import train

    cache = tmp_path_factory.getbasetemp() / "descr_cache"
    over = {"text.descriptions": "packaged:emoji_cldr", "text.target": target}
    cfg = imagefolder_cfg(emoji_subset_folder, cache, tmp_path / "run", SETTINGS, **over)
    result = train(cfg)
    log = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[-1])
    assert log["loss/language"] > 0 and 0 <= result.metrics["recall@1"] <= 1
    files = sorted((cache / "text").glob("descr-*.safetensors"))
    assert files, "the description embeddings were not cached"
    emb = class_text_embeddings(cfg, prepare_data(cfg).train)
    assert emb.shape == ((12, 384) if target == "descriptions" else (12, 2, 384))


def test_a_user_file_with_a_class_the_dataset_lacks_fails_before_training(
    emoji_subset_folder, tmp_path
):
    from langdml.train import train

    bad = _write(tmp_path, "d.csv", "class,text\nbooks,reading\nunicorn,a horse with a horn\n")
    cfg = imagefolder_cfg(
        emoji_subset_folder,
        tmp_path / "c",
        tmp_path / "run",
        SETTINGS,
        **{"text.descriptions": bad},
    )
    with pytest.raises(DataError) as err:
        train(cfg)
    assert "'unicorn'" in _one_line(err) and not (tmp_path / "run" / "log.jsonl").exists()


def test_precompute_writes_the_file_training_reads(tmp_path, capsys, monkeypatch, minilm):
    from langdml.cli import main
    from langdml.io import text_cache_dir

    classes = _write(tmp_path, "classes.txt", "cat\nred apple\ndog\n")
    tsv = _write(tmp_path, "d.tsv", TSV)
    root = tmp_path / "root"
    argv = ["precompute", "--classes", classes, "--descriptions", tsv, "--cache-dir", str(root)]
    assert main(argv) == 0
    printed = capsys.readouterr().out.strip()
    monkeypatch.setattr(encoders, "create_text_encoder", _no_model)
    found, _ = description_embeddings(
        ["cat", "red apple", "dog"],
        load_descriptions(tsv),
        cache_dir=text_cache_dir(root),
        required=False,
    )
    assert found.cache_hit and str(found.path) == printed
    bad = _write(tmp_path, "bad.tsv", TSV + "unicorn\ta horse with a horn\n")
    argv = ["precompute", "--classes", classes, "--descriptions", bad, "--cache-dir", str(root)]
    assert main(argv) != 0
    err = capsys.readouterr().err.strip()
    assert "'unicorn'" in err and "\n" not in err


def test_an_ablation_row_with_descriptions_has_its_own_agreement_request():
    from langdml.ablation.agreement import request_for

    names = request_for(load_config(None, {"loss.regularizers": "language"}))
    over = {"loss.regularizers": "language", "text.descriptions": "emoji"}
    descr = request_for(load_config(None, over))
    over["text.target"] = "names+descriptions"
    both = request_for(load_config(None, over))
    assert "target" not in names.as_dict()  # the key of a names row is what it always was
    assert descr.target == ("descriptions",) and both.target == ("names", "descriptions")
    assert len({names.key(), descr.key(), both.key()}) == 3
    assert descr.identity()["descriptions"] == load_descriptions("emoji").sha256
