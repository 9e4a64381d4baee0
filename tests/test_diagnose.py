"""The language-vision agreement diagnostic: its numbers on constructed cases, and the CLI on the
small emoji image folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from langdml.cli import main
from langdml.diagnose import (
    agreement,
    class_centroids,
    knn_overlap,
    nearest_classes,
    spearman_upper,
)
from langdml.errors import LangDMLError


def _clustered(num_classes=60, dim=32, per_class=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(num_classes, dim, generator=g)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    feats = centers[labels] + 0.05 * torch.randn(len(labels), dim, generator=g)
    return centers, feats, labels


def test_names_that_mirror_the_images_agree_perfectly():
    # Text embedding = the images' class centroid: name similarity equals centroid similarity.
    _, feats, labels = _clustered()
    centroids = class_centroids(feats, labels, 60)
    result = agreement(centroids.float(), feats, labels, k=10, seeds=5)
    assert result.spearman == pytest.approx(1.0, abs=1e-6)
    assert result.overlap == pytest.approx(1.0)
    assert result.num_classes == 60 and result.k == 10
    assert result.chance_overlap == pytest.approx(10 / 59)
    # shuffled names carry no information: correlation ~ 0, overlap ~ chance
    assert abs(result.shuffled_spearman) < 0.05
    assert abs(result.shuffled_overlap - result.chance_overlap) < 0.05
    assert result.shuffled_spearman_std > 0 and result.seeds == 5


def test_a_monotone_distortion_keeps_spearman_one():
    # Spearman only sees ranks: another embedding with the same similarity order scores 1.
    centers, _, _ = _clustered(num_classes=20, dim=3)
    sim = (F.normalize(centers, dim=1) @ F.normalize(centers, dim=1).T).double().numpy()
    assert spearman_upper(sim, np.exp(3 * sim)) == pytest.approx(1.0)
    assert spearman_upper(sim, -sim) == pytest.approx(-1.0)


def test_shuffled_control_equals_the_permuted_matrix_computed_directly():
    # agreement() ranks once and permutes the ranks; check against ranking the permuted matrix.
    centers, feats, labels = _clustered(num_classes=30)
    text = centers + 0.8 * torch.randn(30, 32, generator=torch.Generator().manual_seed(3))
    result = agreement(text, feats, labels, k=5, seeds=1, seed=11)
    order = np.random.default_rng(11).permutation(30)
    s_text = (F.normalize(text, dim=1) @ F.normalize(text, dim=1).T).double().numpy()
    cents = class_centroids(feats, labels, 30)
    s_img = (cents @ cents.T).numpy()
    permuted = s_text[np.ix_(order, order)]
    assert result.shuffled_spearman == pytest.approx(spearman_upper(permuted, s_img), abs=1e-9)
    assert result.shuffled_overlap == pytest.approx(knn_overlap(permuted, s_img, 5))
    assert result.spearman == pytest.approx(spearman_upper(s_text, s_img), abs=1e-9)
    assert result.spearman > 0.3  # noisy copies of the class centres still agree


def test_unrelated_text_is_near_zero_and_chance():
    centers, feats, labels = _clustered(num_classes=80)
    text = torch.randn(80, 24, generator=torch.Generator().manual_seed(7))
    result = agreement(text, feats, labels, k=10, seeds=3)
    assert abs(result.spearman) < 0.06
    assert abs(result.overlap - 10 / 79) < 0.06


def test_overlap_and_neighbours_by_hand():
    a = np.array([[1, 0.9, 0.1, 0.0], [0.9, 1, 0.2, 0.3], [0.1, 0.2, 1, 0.8], [0.0, 0.3, 0.8, 1]])
    assert nearest_classes(a, 1).ravel().tolist() == [1, 0, 3, 2]
    b = a.copy()
    b[0, 1] = b[1, 0] = 0.0  # class 0's nearest becomes 2, class 1's becomes 3
    b[0, 2] = b[2, 0] = 0.5
    assert knn_overlap(a, b, 1) == pytest.approx(0.5)  # classes 2 and 3 keep their neighbour


def test_centroids_are_means_of_unit_features():
    feats = torch.tensor([[2.0, 0.0], [0.0, 5.0], [0.0, -1.0]])
    cents = class_centroids(feats, [0, 0, 1], 2)
    torch.testing.assert_close(cents, torch.tensor([[0.5**0.5, 0.5**0.5], [0.0, -1.0]]).double())
    with pytest.raises(LangDMLError, match="no images"):
        class_centroids(feats, [0, 0, 0], 2)


def test_k_is_clamped_and_bad_inputs_are_errors():
    centers, feats, labels = _clustered(num_classes=5)
    assert agreement(centers, feats, labels, k=10, seeds=2).k == 4
    with pytest.raises(LangDMLError, match="at least 3 classes"):
        agreement(centers[:2], centers[:2])
    with pytest.raises(LangDMLError, match="image classes"):
        agreement(centers, centers[:4])


@pytest.mark.slow
def test_cli_prints_the_table_and_json(emoji_subset_folder, tmp_path, capsys):
    from langdml.data import class_disjoint_split, load_dataset
    from langdml.text.prompts import clean_name

    spec = f"imagefolder:{emoji_subset_folder}"
    train = class_disjoint_split(load_dataset(spec)).train
    emb = torch.randn(train.num_classes, 8, generator=torch.Generator().manual_seed(0))
    names = [clean_name(n) for n in train.class_names]
    path = tmp_path / "mine.safetensors"
    save_file({"embeddings": emb}, str(path), metadata={"names": json.dumps(names)})
    argv = ["diagnose", "--dataset", spec, "--model", "minilm", "--model", f"file:{path}"]
    argv += ["--image-size", "48", "--cache-dir", str(tmp_path / "cache")]
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"Language-vision agreement on {spec}: 12 train classes")
    assert out[1].startswith("| text model | classes | Spearman | shuffled Spearman | 10-NN")
    assert out[3].startswith("| minilm | 12 | ") and out[4].startswith(f"| file:{path} | 12 | ")
    assert out[3].endswith("| 90.9 % |")  # chance: 10 of the 11 other classes

    assert main([*argv, "--json", "--validation-fraction", "0.25", "--k", "3"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["model"] for r in rows] == ["minilm", f"file:{path}"]
    assert rows[0]["num_classes"] == 9 and rows[0]["k"] == 3  # 12 train classes minus 3 held out
    for r in rows:
        assert -1 <= r["spearman"] <= 1 and 0 <= r["overlap"] <= 1
        assert r["chance_overlap"] == pytest.approx(3 / 8)


def test_cli_names_missing_classes_in_one_line(emoji_subset_folder, tmp_path, capsys):
    path = tmp_path / "few.safetensors"
    save_file({"embeddings": torch.ones(1, 4)}, str(path), metadata={"names": '["nope"]'})
    argv = ["diagnose", "--dataset", f"imagefolder:{emoji_subset_folder}", "--model"]
    argv += [f"file:{path}", "--image-size", "48", "--cache-dir", str(tmp_path / "cache")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert any(line.startswith("langdml: error: embedding file") for line in err)
    assert any("no row for 12 of the 12 class names" in line for line in err)
