"""User-supplied class embeddings (``text_model: file:PATH``): formats, name matching, the mismatch
message, caching, pseudo-labels, and a training run end to end with such a file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from langdml.errors import ModelError
from langdml.text import parse_text_model_spec, precompute_text_embeddings
from langdml.text import precompute as precompute_module
from langdml.text.prompts import clean_name

NAMES = ["dog face", "cat face", "sailboat", "red apple", "petri dish"]


def _table(n: int = len(NAMES), d: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) * 3


def _save_st(path, emb, names):
    save_file({"embeddings": emb}, str(path), metadata={"names": json.dumps(names)})
    return path


def test_safetensors_rows_follow_the_requested_names_and_are_unit(tmp_path):
    emb = _table()
    path = _save_st(tmp_path / "emb.safetensors", emb, NAMES)
    wanted = ["sailboat", "dog face", "petri dish"]
    out = precompute_text_embeddings(wanted, model=f"file:{path}", cache_dir=tmp_path / "c")
    expected = F.normalize(emb[[2, 0, 4]], dim=1)
    torch.testing.assert_close(out.embeddings, expected)
    assert out.class_names == wanted and not out.cache_hit
    assert out.meta["model_identity"]["sha256"] and out.meta["model"] == f"file:{path}"
    again = precompute_text_embeddings(wanted, model=f"file:{path}", cache_dir=tmp_path / "c")
    assert again.cache_hit and again.path == out.path
    torch.testing.assert_close(again.embeddings, expected)


def test_new_file_content_is_a_new_cache_entry(tmp_path):
    path = _save_st(tmp_path / "emb.safetensors", _table(seed=0), NAMES)
    first = precompute_text_embeddings(NAMES, model=f"file:{path}", cache_dir=tmp_path / "c")
    _save_st(path, _table(seed=1), NAMES)  # same path, other numbers
    second = precompute_text_embeddings(NAMES, model=f"file:{path}", cache_dir=tmp_path / "c")
    assert not second.cache_hit and second.path != first.path
    torch.testing.assert_close(second.embeddings, F.normalize(_table(seed=1), dim=1))


def test_names_match_after_cleaning_and_ignoring_case(tmp_path):
    # The file says "001.Dog_Face"; the dataset's folder name is "017.dog_face".
    file_names = ["001.Dog_Face", "Cat  face", "SAILBOAT"]
    emb = _table(3)
    path = _save_st(tmp_path / "emb.safetensors", emb, file_names)
    out = precompute_text_embeddings(
        ["017.dog_face", "sailboat", "cat_face"], model=f"file:{path}", cache_dir=tmp_path
    )
    torch.testing.assert_close(out.embeddings, F.normalize(emb[[0, 2, 1]], dim=1))


@pytest.mark.parametrize("names_format", ["txt", "json"])
def test_npy_with_sibling_names_file(tmp_path, names_format):
    emb = _table().numpy().astype(np.float64)
    np.save(tmp_path / "emb.npy", emb)
    if names_format == "txt":
        (tmp_path / "emb.names.txt").write_text("\n".join(NAMES) + "\n\n")
    else:
        (tmp_path / "emb.names.json").write_text(json.dumps(NAMES))
    out = precompute_text_embeddings(
        ["red apple", "cat face"], model=f"file:{tmp_path / 'emb.npy'}", cache_dir=tmp_path / "c"
    )
    expected = F.normalize(torch.from_numpy(emb[[3, 1]]).float(), dim=1)
    torch.testing.assert_close(out.embeddings, expected)


def test_npy_names_file_change_is_a_new_cache_entry(tmp_path):
    np.save(tmp_path / "emb.npy", _table().numpy())
    names = tmp_path / "emb.names.txt"
    names.write_text("\n".join(NAMES))
    spec = f"file:{tmp_path / 'emb.npy'}"
    first = precompute_text_embeddings(["dog face", "cat face"], model=spec, cache_dir=tmp_path)
    names.write_text("\n".join([NAMES[1], NAMES[0], *NAMES[2:]]))  # rows 0 and 1 swap names
    second = precompute_text_embeddings(["dog face", "cat face"], model=spec, cache_dir=tmp_path)
    assert not second.cache_hit
    torch.testing.assert_close(second.embeddings, first.embeddings[[1, 0]])


def test_a_precompute_cache_file_is_a_valid_input(tmp_path):
    path = _save_st(tmp_path / "emb.safetensors", _table(), NAMES)
    made = precompute_text_embeddings(NAMES, model=f"file:{path}", cache_dir=tmp_path / "c")
    out = precompute_text_embeddings(
        ["petri dish"], model=f"file:{made.path}", cache_dir=tmp_path / "c2"
    )
    torch.testing.assert_close(out.embeddings, made.embeddings[[4]])


def test_missing_names_are_one_line_listing_ten_and_the_count(tmp_path):
    path = _save_st(tmp_path / "emb.safetensors", _table(), NAMES)
    wanted = ["dog face"] + [f"class {i}" for i in range(15)]
    with pytest.raises(ModelError) as err:
        precompute_text_embeddings(wanted, model=f"file:{path}", cache_dir=tmp_path)
    msg = str(err.value)
    assert "\n" not in msg
    assert "no row for 15 of the 16 class names" in msg
    assert "'class 0'" in msg and "'class 9'" in msg and "'class 10'" not in msg
    assert "5 more" in msg and "the file has 5 names" in msg


def _bad_file(kind: str, p):
    if kind == "suffix":
        (p / "e.pt").write_bytes(b"x")
        return p / "e.pt"
    if kind == "no_names_file":
        np.save(p / "e.npy", np.zeros((2, 3), np.float32))
        return p / "e.npy"
    if kind == "no_embeddings":
        save_file({"x": torch.ones(1, 2)}, str(p / "e.safetensors"))
        return p / "e.safetensors"
    if kind == "no_names_meta":
        save_file({"embeddings": torch.ones(1, 2)}, str(p / "e.safetensors"))
        return p / "e.safetensors"
    table = {
        "rows_vs_names": (torch.ones(2, 3), ["a"]),
        "duplicate_after_cleaning": (torch.ones(2, 3), ["a_b", "A b"]),
        "zero_row": (torch.zeros(1, 3), ["a"]),
        "integers": (torch.ones(1, 3, dtype=torch.int64), ["a"]),
    }
    if kind in table:
        return _save_st(p / "e.safetensors", *table[kind])
    return p / "nothing.npy"


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("suffix", "expected a .safetensors file"),
        ("no_names_file", "e.names.txt"),
        ("no_embeddings", "no tensor 'embeddings'"),
        ("no_names_meta", "no 'names' metadata"),
        ("rows_vs_names", "(2, 3) do not match its 1 names"),
        ("duplicate_after_cleaning", "same after cleaning"),
        ("zero_row", "all-zero rows"),
        ("integers", "expected floats"),
        ("missing", "does not exist"),
    ],
)
def test_bad_files_are_one_clear_line(tmp_path, kind, expected):
    path = _bad_file(kind, tmp_path)
    with pytest.raises(ModelError) as err:
        precompute_text_embeddings(["a"], model=f"file:{path}", cache_dir=tmp_path / "c")
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_spec_and_no_text_encoder(tmp_path):
    spec = parse_text_model_spec("file:/x/emb.safetensors")
    assert spec.kind == "file" and spec.canonical == "file:/x/emb.safetensors"
    with pytest.raises(ModelError, match="does not apply"):
        parse_text_model_spec("file:/x/emb.safetensors", pooling="cls")
    from langdml.text import create_text_encoder

    with pytest.raises(ModelError, match="not a text encoder"):
        create_text_encoder("file:/x/emb.safetensors")


def test_prompts_are_ignored_with_a_warning(tmp_path):
    path = _save_st(tmp_path / "emb.safetensors", _table(), NAMES)
    with pytest.warns(UserWarning, match="do not apply"):
        out = precompute_text_embeddings(
            ["sailboat"], model=f"file:{path}", prompts=["{} icon"], cache_dir=tmp_path
        )
    torch.testing.assert_close(out.embeddings, F.normalize(_table()[[2]], dim=1))


def _tiny_dataset():
    from PIL import Image

    from langdml.data import ImageDataset, ImageSource

    img = Image.new("RGB", (8, 8))
    return ImageDataset("tiny", ImageSource([0, 1], lambda _: img), [0, 1], ["dog face", "boat"])


def test_pseudo_labels_use_the_file_rows_of_the_pseudo_label_names(tmp_path, monkeypatch):
    labels = {"names": [["tabby cat", "hook"], ["canoe", "hook"]], "probs": [[0.5, 0.1]] * 2}
    monkeypatch.setattr(precompute_module, "compute_pseudo_labels", lambda *a, **k: labels)
    emb = _table(4)
    path = _save_st(tmp_path / "e.safetensors", emb, ["hook", "canoe", "tabby cat", "dog"])
    out = precompute_module.pseudo_label_embeddings(
        _tiny_dataset(), model=f"file:{path}", k=2, cache_dir=tmp_path
    )
    unit = F.normalize(emb, dim=1)
    torch.testing.assert_close(out.embeddings, torch.stack([unit[[2, 0]], unit[[1, 0]]]))

    only_classes = _save_st(tmp_path / "c.safetensors", _table(2), ["dog face", "boat"])
    with pytest.raises(ModelError, match="no row for 3 of the 3 pseudo-label names"):
        precompute_module.pseudo_label_embeddings(
            _tiny_dataset(), model=f"file:{only_classes}", k=2, cache_dir=tmp_path
        )


@pytest.mark.slow
def test_training_with_file_embeddings_end_to_end(emoji_subset_folder, tmp_path):
    from langdml.config import load_config
    from langdml.data import class_disjoint_split, load_dataset
    from langdml.train import train

    spec = f"imagefolder:{emoji_subset_folder}"
    train_names = class_disjoint_split(load_dataset(spec)).train.class_names
    cleaned = [clean_name(n) for n in train_names]  # "003.grinning_face" -> "grinning face"
    emb = _table(len(cleaned) + 1, d=16)
    path = _save_st(tmp_path / "mine.safetensors", emb, ["not a class", *cleaned[::-1]])
    base = {
        "data.dataset": spec,
        "data.cache_dir": str(tmp_path / "cache"),
        "model.image_size": 48,
        "model.embedding_dim": 16,
        "train.epochs": 2,
        "train.batch_size": 16,
        "train.iterations_per_epoch": 4,
        "train.progress": False,
        "loss.regularizers": "language",
        "loss.language.text_model": f"file:{path}",
        "output_dir": str(tmp_path / "run"),
    }
    result = train(load_config(None, base))
    assert np.isfinite(result.metrics["recall@1"])
    cached = list((tmp_path / "cache" / "text").glob("names-*.safetensors"))
    assert len(cached) == 1
    from langdml.text import load_text_embeddings

    stored = load_text_embeddings(cached[0])
    assert stored.class_names == train_names  # the trainer asked for exactly the train classes
    expected = F.normalize(emb[1:].flip(0), dim=1)  # file rows were written in reverse order
    torch.testing.assert_close(stored.embeddings, expected)

    bad = _save_st(tmp_path / "few.safetensors", emb[:3], cleaned[:3])
    base.update({"loss.language.text_model": f"file:{bad}", "output_dir": str(tmp_path / "r2")})
    with pytest.raises(ModelError, match=f"no row for {len(cleaned) - 3} of the"):
        train(load_config(None, base))
