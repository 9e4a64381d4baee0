"""Controls for language guidance: the shuffled-names permutation and named arms in ablation
grids (a control arm that sets several keys without being crossed with every other arm)."""

import pytest
import torch
import yaml

from langdml.ablation import load_ablation
from langdml.config import load_config
from langdml.data import class_disjoint_split, load_dataset
from langdml.errors import ConfigError
from langdml.experiment import class_text_embeddings, shuffled_classes


def test_shuffled_classes_is_a_seeded_permutation():
    for seed in range(3):
        perm = shuffled_classes(50, seed)
        assert sorted(perm.tolist()) == list(range(50))
        assert torch.equal(perm, shuffled_classes(50, seed))  # reproducible
        assert (perm != torch.arange(50)).float().mean() > 0.8  # really moves classes
    assert not torch.equal(shuffled_classes(50, 0), shuffled_classes(50, 1))


def test_shuffled_names_permute_the_class_embeddings(emoji_subset_folder, tmp_path):
    over = {
        "data.dataset": f"imagefolder:{emoji_subset_folder}",
        "data.cache_dir": str(tmp_path),
        "loss.regularizers": "language",
        "seed": 3,
    }
    cfg = load_config(None, over)
    shuffled_cfg = load_config(None, {**over, "loss.language.shuffled_names": True})
    train = class_disjoint_split(load_dataset(cfg.data.dataset), cfg.data.train_fraction).train
    real = class_text_embeddings(cfg, train)
    shuffled = class_text_embeddings(shuffled_cfg, train)
    perm = shuffled_classes(real.shape[0], 3)
    assert torch.equal(shuffled, real[perm])

    # same similarity spectrum, different assignment to classes
    def sims(e):
        unit = torch.nn.functional.normalize(e, dim=1)
        return unit @ unit.T

    ev_real = torch.linalg.eigvalsh(sims(real))
    ev_shuf = torch.linalg.eigvalsh(sims(shuffled))
    assert torch.allclose(ev_real, ev_shuf, atol=1e-4)
    assert not torch.allclose(sims(real), sims(shuffled))


def _ablation(tmp_path, grid, when=None):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({"name": "t"}))
    tree = {"base": "base.yaml", "seeds": [0, 1], "grid": grid, "output_dir": str(tmp_path)}
    if when:
        tree["when"] = when
    path = tmp_path / "abl.yaml"
    path.write_text(yaml.safe_dump(tree))
    return load_ablation(path)


def test_named_arms_set_several_keys_and_combine_with_when(tmp_path):
    grid = {
        "loss.base.name": ["multi_similarity", "proxy_anchor"],
        "loss.regularizers": {
            "none": {"loss.regularizers": "none"},
            "language": {"loss.regularizers": "language"},
            "shuffled": {"loss.regularizers": "language", "loss.language.shuffled_names": True},
        },
    }
    when = {"loss.base.name": {"proxy_anchor": {"loss.language.weight": 30.0}}}
    abl = _ablation(tmp_path, grid, when)
    assert len(abl.runs) == 2 * 3 * 2
    seen = {}
    for run in abl.runs:
        lang = run.config.loss.language
        key = (run.config.loss.base.name, run.cell.get("loss.regularizers"))
        seen[key] = (run.config.loss.regularizers, lang.shuffled_names, lang.weight)
    assert seen[("multi_similarity", "none")] == ([], False, 1.0)
    assert seen[("multi_similarity", "shuffled")] == (["language"], True, 1.0)
    assert seen[("proxy_anchor", "language")] == (["language"], False, 30.0)
    assert seen[("proxy_anchor", "shuffled")] == (["language"], True, 30.0)
    # arms resolve to distinct run directories
    assert len({r.config.output_dir for r in abl.runs}) == len(abl.runs)


@pytest.mark.parametrize(
    "grid, fragment",
    [
        ({"loss.regularizers": {"a": "language"}}, "grid arm loss.regularizers.a must map"),
        ({"loss.regularizers": {"a": {"loss.regularizerz": "none"}}}, "loss.regularizerz"),
        ({"loss.regularizers": {}}, "non-empty list of values or a mapping of named arms"),
    ],
)
def test_bad_named_arms_are_one_line(tmp_path, grid, fragment):
    with pytest.raises(ConfigError, match=fragment) as info:
        _ablation(tmp_path, grid)
    assert "\n" not in str(info.value)
