import hashlib
import json

import numpy as np
import pytest

from langdml.cli import main
from langdml.data import class_disjoint_split, load_dataset
from langdml.data.emoji import DEFAULT_STYLES, build_emoji
from langdml.errors import DataError


def _digest(ds, n=40):
    h = hashlib.sha256()
    for i in range(0, len(ds), max(1, len(ds) // n)):
        h.update(ds.image(i).tobytes())
    h.update(ds.labels.tobytes())
    h.update("|".join(ds.class_names).encode())
    return h.hexdigest()


def test_emoji_benchmark_shape_and_invariants(emoji_cache):
    ds = load_dataset("emoji", cache_dir=emoji_cache)
    assert 1000 <= ds.num_classes <= 1800
    counts = ds.class_counts()
    assert counts.min() >= 2, "every class must have at least 2 styles"
    assert set(ds.extras["style"]) == set(DEFAULT_STYLES)
    # one image per (class, style)
    pairs = set(zip(ds.labels.tolist(), ds.extras["style"]))
    assert len(pairs) == len(ds)
    assert len(set(ds.class_names)) == ds.num_classes
    assert "dog face" in ds.class_names and "sailboat" in ds.class_names
    # single code points only: no country flags (regional-indicator pairs), keycaps or ZWJ sequences
    assert all(len(e) == 1 for e in ds.extras["emoji"])
    assert not any("skin tone" in n for n in ds.class_names)
    img = ds.image(0)
    assert img.mode == "RGB" and img.size == (128, 128)
    assert np.asarray(img).std() > 10  # the glyph has ink


def test_emoji_build_is_deterministic(emoji_cache, tmp_path):
    build_emoji(cache_dir=tmp_path)
    a = load_dataset("emoji", cache_dir=emoji_cache)
    b = load_dataset("emoji", cache_dir=tmp_path)
    assert a.fingerprint == b.fingerprint
    assert _digest(a) == _digest(b)


def test_split_is_class_disjoint_and_spans_groups(emoji_cache):
    ds = load_dataset("emoji", cache_dir=emoji_cache)
    split = class_disjoint_split(ds)
    assert not set(split.train.class_names) & set(split.test.class_names)
    assert split.train.num_classes + split.test.num_classes == ds.num_classes
    assert len(split.train) + len(split.test) == len(ds)
    # the seeded permutation puts faces in both halves
    assert any("face" in n for n in split.train.class_names)
    assert any("face" in n for n in split.test.class_names)


def test_style_variant_is_named_differently(tmp_path):
    path = build_emoji(("openmoji", "noto_mono"), cache_dir=tmp_path)
    assert path.name == "emoji-openmoji+noto_mono"
    ds = load_dataset("emoji:openmoji,noto_mono", cache_dir=tmp_path)
    assert set(ds.extras["style"]) == {"openmoji", "noto_mono"}
    with pytest.raises(DataError, match="langdml data build emoji"):
        load_dataset("emoji", cache_dir=tmp_path)


def test_missing_font_names_font_and_command(tmp_path, monkeypatch):
    from langdml.data import emoji

    real = emoji._font_path
    monkeypatch.setattr(emoji, "_font_path", lambda s: None if s == "symbola" else real(s))
    with pytest.raises(DataError, match="symbola.*apt-get install fonts-symbola"):
        build_emoji(("symbola",), cache_dir=tmp_path)


def test_cli_build_and_info(emoji_cache, capsys, monkeypatch):
    monkeypatch.setenv("LANGDML_CACHE", str(emoji_cache))
    assert main(["data", "build", "emoji"]) == 0
    assert main(["data", "info", "emoji"]) == 0
    out = capsys.readouterr().out
    assert str(emoji_cache) in out
    assert "num_classes" in out and "styles_per_class_histogram" in out
    assert main(["data", "info", "emoji", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["train_classes"] + info["test_classes"] == info["num_classes"]
    from langdml.data.emoji import PIN_FILE, PIN_SHA256

    assert (
        info["class_list_sha256"] == PIN_SHA256 == hashlib.sha256(PIN_FILE.read_bytes()).hexdigest()
    )
    assert main(["data", "info", "emoji"]) == 0
    assert PIN_SHA256 in capsys.readouterr().out


def test_build_follows_the_pinned_class_list(emoji_cache):
    from langdml.data.emoji import pinned_classes

    ds = load_dataset("emoji", cache_dir=emoji_cache)
    pinned = pinned_classes()
    assert ds.class_names == [name for _, name, _ in pinned]
    first = {}
    for label, char in zip(ds.labels.tolist(), ds.extras["emoji"]):
        first.setdefault(label, char)
    assert [first[i] for i in range(len(pinned))] == [c for c, _, _ in pinned]
    split = class_disjoint_split(ds)
    assert split.train.class_names == [n for _, n, s in pinned if s == "train"]
    assert split.test.class_names == [n for _, n, s in pinned if s == "test"]


def test_missing_glyph_of_a_pinned_class_is_an_error(tmp_path, monkeypatch):
    from langdml.data import emoji

    fake = [("\U0001f436", "dog face", "train"), ("\U0010fffd", "no such emoji", "test")]
    monkeypatch.setattr(emoji, "pinned_classes", lambda: fake)
    with pytest.raises(DataError, match=r"'no such emoji' \(U\+10FFFD\).*reshuffling"):
        build_emoji(cache_dir=tmp_path)
    monkeypatch.undo()
    monkeypatch.setattr(emoji, "PIN_SHA256", "0" * 64)
    with pytest.raises(DataError, match="does not match its pinned SHA-256"):
        emoji.pinned_classes()


def test_cli_bad_specs_give_one_line(capsys):
    assert main(["data", "info", "nosuch:thing"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown dataset spec" in err[0] and "cub200:PATH" in err[0]
    assert main(["data", "info", "cub200"]) == 2
    assert "needs a path" in capsys.readouterr().err
