import numpy as np
import pytest

from langdml.config import load_config
from langdml.errors import ConfigError
from langdml.train.sampler import MPerClassSampler


def test_overrides_and_regularizer_spellings(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "name: x\nloss:\n  base: {name: proxy_anchor, margin: 0.2}\n  regularizers: none\n"
    )
    cfg = load_config(
        path,
        [
            "loss.language.weight=5",
            "train.epochs=3",
            "loss.regularizers=language+direction",
            "loss.direction.form=orthogonal",
        ],
    )
    assert cfg.loss.language.weight == 5.0 and cfg.train.epochs == 3
    assert cfg.loss.regularizers == ["language", "direction"]
    assert cfg.loss.base.name == "proxy_anchor" and cfg.loss.base.model_dump()["margin"] == 0.2
    assert load_config(None, ["loss.regularizers=none"]).loss.regularizers == []


def test_the_config_checks_loss_names_against_the_registry():
    """A base, regularizer or direction form the loss registry rejects fails when the config is
    read (one line), before any data is loaded."""
    with pytest.raises(ConfigError, match="unknown base loss 'multisimilarity'") as info:
        load_config(None, ["loss.base.name=multisimilarity"])
    assert "multi_similarity" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="exists only for bases"):
        load_config(None, ["loss.base.name=proxy_anchor", "loss.regularizers=direction"])
    cfg = load_config(None, ["loss.base.name=pml:TripletMarginLoss"])
    assert cfg.loss.base.name == "pml:TripletMarginLoss"


@pytest.mark.parametrize(
    "override, fragment",
    [
        (
            "loss.langauge.weight=5",
            "unknown config key 'loss.langauge'; did you mean 'loss.language'",
        ),
        ("optimzer.lr=1", "did you mean 'optimizer'"),
        ("train.batch_size=63", "not divisible by m_per_class"),
        ("loss.regularizers=lang", "unknown regularizer 'lang'"),
        ("train.epochs=0", "train.epochs"),
        ("noequals", "dotted.key=value"),
        ("train.amp_dtype=fp8", "train.amp_dtype"),
    ],
)
def test_config_errors_are_one_clear_line(override, fragment):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_missing_and_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)


def test_sampler_batches_have_m_per_class():
    labels = np.repeat(np.arange(10), 4)
    sampler = MPerClassSampler(labels, batch_size=8, m=2, seed=3)
    batches = sampler.epoch(0)
    assert len(batches) == len(sampler) == 5
    for b in batches:
        assert len(b) == 8
        classes, counts = np.unique(labels[b], return_counts=True)
        assert len(classes) == 4 and (counts == 2).all()
        assert len(set(b.tolist())) == 8  # no repeats when classes are large enough
    seen = np.concatenate(batches)
    # round-robin: every class appears in an epoch that shows 20 class slots for 10 classes
    assert set(labels[seen]) == set(range(10))


def test_sampler_is_deterministic_per_seed_and_epoch():
    labels = np.repeat(np.arange(6), 3)
    a = MPerClassSampler(labels, 6, 3, seed=1)
    b = MPerClassSampler(labels, 6, 3, seed=1)
    assert all((x == y).all() for x, y in zip(a.epoch(4), b.epoch(4)))
    assert any((x != y).any() for x, y in zip(a.epoch(4), a.epoch(5)))


def test_small_classes_sampled_with_replacement_and_errors():
    labels = np.array([0, 0, 0, 1, 2, 2, 2, 3, 3, 3])
    sampler = MPerClassSampler(labels, batch_size=6, m=3, seed=0, iterations_per_epoch=20)
    for b in sampler.epoch(0):
        classes, counts = np.unique(labels[b], return_counts=True)
        assert (counts == 3).all()
    with pytest.raises(ConfigError, match="exceeds the size of every class"):
        MPerClassSampler(labels, batch_size=8, m=4)
    with pytest.raises(ConfigError, match="not divisible"):
        MPerClassSampler(labels, batch_size=7, m=2)
    with pytest.raises(ConfigError, match="classes per batch"):
        MPerClassSampler(labels, batch_size=10, m=2)


def test_cli_starts_without_importing_torch():
    import subprocess
    import sys

    code = "import sys, langdml.cli as c; c.build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_xmodal_cli_lists_the_library_methods():
    from langdml.xmodal.commands import _HELP
    from langdml.xmodal.config import METHODS

    assert tuple(_HELP) == METHODS


def test_cli_overrides_may_follow_options(monkeypatch, capsys):
    import langdml.cli as cli

    seen = {}

    def fake_train(args):
        seen.update(config=args.config, out=args.output_dir, overrides=args.overrides)

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda *_: parser)
    train_parser = parser._subparsers._group_actions[0].choices["train"]
    train_parser.set_defaults(func=fake_train)
    argv = ["train", "c.yaml", "a.b=1", "--output-dir", "runs/x", "train.epochs=2"]
    assert cli.main(argv) == 0
    assert seen == {"config": "c.yaml", "out": "runs/x", "overrides": ["a.b=1", "train.epochs=2"]}
    with pytest.raises(SystemExit) as info:  # anything else left over is still an error
        cli.main(["train", "c.yaml", "--output-dir", "runs/x", "--bogus"])
    assert info.value.code == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_command_module_table_matches_what_the_modules_register():
    """``langdml CMD`` builds only the module serving CMD: the table must name exactly the
    module that registers each subcommand, and every subcommand must be in it."""
    import argparse
    import importlib

    from langdml import cli

    def registered(module: str) -> set[str]:
        parser = argparse.ArgumentParser()
        sub = parser.add_subparsers(dest="command")
        importlib.import_module(module).add_commands(sub)
        return set(sub.choices)

    table: dict[str, set[str]] = {}
    for command, module in cli.COMMAND_MODULE.items():
        table.setdefault(module, set()).add(command)
    assert set(table) == set(cli._COMMAND_MODULES)
    for module, commands in table.items():
        assert registered(module) == commands, module
    full = cli.build_parser()._subparsers._group_actions[0].choices
    assert set(full) == set(cli.COMMAND_MODULE)
    # one command's parser holds its module's commands only, and parses like the full one
    assert set(cli.build_parser("search")._subparsers._group_actions[0].choices) == table[
        "langdml.inference.commands"
    ]
