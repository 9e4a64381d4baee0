"""Ablation files: a base config, a grid of dotted keys, seeds → validated run configs."""

from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langdml.config import ExperimentConfig, apply_overrides, load_yaml, validate_config
from langdml.config.training import TRACKING_KEYS
from langdml.errors import ConfigError
from langdml.io import stable_hash

_ALLOWED = {"base", "grid", "seeds", "output_dir", "overrides", "when", "name", "backend"}
# Seeds of an ablation file that names none: 5, so a paired comparison has enough pairs to be
# worth testing (3 gives a t-test with 2 degrees of freedom).
DEFAULT_SEEDS = 5
# Config keys added after run ids were first stored: left out of the id's hash at these (their
# default) values, so run directories of earlier ablations keep their names and are reused.
_HASH_NEUTRAL = {
    ("data", "folds"): 0,
    ("data", "fold"): 0,
    ("model", "pooling"): "avg",
    ("model", "crop_scale"): [0.35, 1.0],
    ("model", "interpolation"): "bicubic",
    ("text", "pseudo_label_model"): "packaged",
    ("text", "pseudo_label_image_size"): 224,
    ("text", "pseudo_label_crop_pct"): None,
    ("train", "frozen_trunk_epochs"): 0,
    ("train", "step_gamma"): 0.1,
    ("text", "descriptions"): None,
    ("text", "target"): None,
    ("data", "split_file"): None,
    ("data", "class_order"): "natural",
    ("data", "split_seed"): 0,
    ("optimizer", "trunk_lr"): None,
    ("optimizer", "head_lr"): None,
    ("optimizer", "trunk_weight_decay"): None,
    ("optimizer", "head_weight_decay"): None,
    ("train", "step_milestones"): None,
    ("train", "min_lr_ratio"): 0.0,
    ("train", "sampler"): "m_per_class",
    ("train", "n_classes"): None,
    ("train", "n_per_class"): None,
    ("train", "n_categories"): None,
    ("train", "category_level"): 0,
    ("data", "augment"): None,
    ("data", "timm_augment"): None,
    ("eval", "rerank"): "none",
    ("eval", "rerank_params"): {},
    ("model", "backbone_kwargs"): {},
    ("model", "preprocessing"): "config",
}


@dataclass(frozen=True)
class Cell:
    """One grid point (all seeds share it)."""

    values: tuple[tuple[str, Any], ...]

    @property
    def id(self) -> str:
        return "cell-" + stable_hash(list(self.values), 10)

    def get(self, key: str, default: Any = None) -> Any:
        return dict(self.values).get(key, default)

    def label(self, skip: tuple[str, ...] = ()) -> str:
        parts = [f"{k.split('.')[-1]}={value_label(v)}" for k, v in self.values if k not in skip]
        return ", ".join(parts) or "-"


@dataclass(frozen=True)
class Run:
    cell: Cell
    seed: int
    config: ExperimentConfig
    id: str  # also the run directory's name; changes when the resolved config changes
    fold: int | None = None  # the validation fold when the config sets data.folds


@dataclass
class Ablation:
    name: str
    output_dir: Path
    grid: dict[str, list[Any]]
    seeds: list[int]
    runs: list[Run]
    base_tree: dict


def value_label(value: Any) -> str:
    """Readable label of a grid value; a dict (e.g. a whole ``loss.base``) shows its name."""
    if isinstance(value, dict):
        extra = ",".join(f"{k}={v}" for k, v in value.items() if k != "name")
        return f"{value.get('name', '?')}({extra})" if extra else str(value.get("name", "?"))
    if isinstance(value, list):
        return "+".join(map(str, value)) or "none"
    return str(value)


def load_ablation(path: str | os.PathLike, output_dir: str | None = None) -> Ablation:
    """Parse and validate an ablation file; every run's config is checked before any run starts."""
    path = Path(path)
    tree = load_yaml(path)
    unknown = sorted(set(tree) - _ALLOWED)
    if unknown:
        raise ConfigError(
            f"unknown ablation key {unknown[0]!r} in {path}; expected {sorted(_ALLOWED)}"
        )
    base_ref = tree.get("base")
    if base_ref is None:
        raise ConfigError(f"ablation {path} needs 'base': an experiment config file (or mapping)")
    if isinstance(base_ref, dict):
        base_tree = base_ref
    else:
        base_path = (path.parent / base_ref) if not Path(base_ref).is_absolute() else Path(base_ref)
        base_tree = load_yaml(base_path)
    base_tree = apply_overrides(base_tree, dict(tree.get("overrides") or {}))

    grid = tree.get("grid")
    if not isinstance(grid, dict) or not grid:
        raise ConfigError(
            f"ablation {path}: 'grid' must be a non-empty mapping of dotted.key: [values]"
        )
    arms = _named_arms(grid, path)
    seeds = tree.get("seeds", DEFAULT_SEEDS)
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = list(range(seeds))
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise ConfigError(
            f"ablation {path}: 'seeds' must be a non-empty list of integers (or a count)"
        )
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"ablation {path}: duplicate seeds {seeds}")

    when = tree.get("when") or {}
    if not isinstance(when, dict):
        raise ConfigError(f"ablation {path}: 'when' must map grid keys to {{value: {{overrides}}}}")
    for key, by_value in when.items():
        if key not in grid:
            raise ConfigError(f"ablation {path}: 'when' names {key!r}, which is not a grid key")
        if not isinstance(by_value, dict):
            raise ConfigError(f"ablation {path}: when.{key} must map grid values to overrides")
        unknown_values = set(map(str, by_value)) - {value_label(v) for v in grid[key]}
        if unknown_values:
            raise ConfigError(
                f"ablation {path}: when.{key} names {sorted(unknown_values)[0]!r}, which is not "
                f"one of the grid values {[value_label(v) for v in grid[key]]}"
            )

    name = ablation_name(tree.get("name"), path)
    out = Path(output_dir or tree.get("output_dir") or Path("runs") / name)
    keys = list(grid)
    runs = []
    for combo in itertools.product(*(grid[k] for k in keys)):
        cell = Cell(tuple(zip(keys, combo)))
        for seed in seeds:
            plain = {k: v for k, v in cell.values if k not in arms}
            run_tree = apply_overrides(_deep_copy(base_tree), {**plain, "seed": seed})
            for key, label in cell.values:
                if key in arms:  # a named arm sets several keys at once
                    apply_overrides(run_tree, dict(arms[key][label]))
            # Settings tied to a grid value (e.g. a regularizer weight tuned per base loss).
            for key, by_value in when.items():
                extra = {str(k): v for k, v in by_value.items()}.get(value_label(cell.get(key)))
                apply_overrides(run_tree, dict(extra or {}))
            try:
                cfg = validate_config(run_tree)
            except ConfigError as exc:
                raise ConfigError(f"grid cell {cell.label()}: {exc}") from None
            runs += _fold_runs(cell, seed, cfg, out, name)
    _check_loss_arguments(runs)
    return Ablation(name, out, grid, seeds, runs, base_tree)


_NAME = re.compile(r"[\w+-][\w.+-]*")


def ablation_name(value: Any, path: Path) -> str:
    """The ablation's ``name`` (default: the file's stem): it names the folder ``runs/NAME`` and
    the Slurm jobs, so it is one plain word (letters, digits, ``_ . + -``, not starting with
    ``.``); a path, ``..``, a space, a newline or shell syntax is one ConfigError line."""
    name = str(value) if value is not None and value != "" else path.stem
    if not _NAME.fullmatch(name):
        raise ConfigError(
            f"ablation {path}: name {name!r} is refused; expected letters, digits, '_', '.', "
            "'+' or '-' (not starting with '.'): it names the folder runs/NAME and its jobs"
        )
    return name


def _fold_runs(cell: Cell, seed: int, cfg: ExperimentConfig, out: Path, name: str) -> list[Run]:
    """The run of one (cell, seed), or one run per validation fold under data.folds K."""
    folds = cfg.data.folds
    runs = []
    for fold in range(folds) if folds else [None]:
        c = cfg.model_copy(deep=True)
        if fold is not None:
            c.data.fold = fold
        # Editing the base config later gives new run directories instead of clashing
        # with runs trained under the old settings.
        settings = {k: v for k, v in c.to_dict().items() if k not in ("name", "output_dir")}
        settings["train"] = {
            k: v
            for k, v in settings["train"].items()
            # progress bars, the heap setting and trackers do not change results
            if k not in ("progress", "keep_cpu_heap") and k not in TRACKING_KEYS
        }
        for (section, key), default in _HASH_NEUTRAL.items():
            if settings[section].get(key) == default:
                del settings[section][key]
        tag = "" if fold is None else f"-fold{fold}"
        run_id = f"{cell.id}-seed{seed}{tag}-{stable_hash(settings, 6)}"
        c.output_dir = str(out / "runs" / run_id)
        c.name = f"{name}/{run_id}"
        _tracking(c, name, cell, seed, fold, run_id)
        runs.append(Run(cell, seed, c, run_id, fold))
    return runs


def _tracking(
    cfg: ExperimentConfig, name: str, cell: Cell, seed: int, fold: int | None, run_id: str
) -> None:
    """MLflow / W&B names of a run of the grid: experiment (group) the ablation, run name the
    cell's key and seed; tags that find the run's row in results.csv."""
    label = cell.label()
    replicate = f"seed {seed}" + ("" if fold is None else f" fold {fold}")
    tags = {"ablation": name, "cell": cell.id, "run_id": run_id, "seed": str(seed)}
    tags.update({f"grid.{k}": value_label(v) for k, v in cell.values})
    if fold is not None:
        tags["fold"] = str(fold)
    cfg.train.tracking_experiment = name
    cfg.train.tracking_run_name = replicate if label == "-" else f"{label}, {replicate}"
    cfg.train.tracking_tags = tags


def _named_arms(grid: dict[str, Any], path: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """Check the grid; return its named-arm keys. A grid key maps to a list of values for one
    dotted key, or to ``{label: {dotted.key: value, ...}}``: named arms that set several keys at
    once (e.g. ``shuffled: {loss.regularizers: language, loss.language.shuffled_names: true}``),
    so a control arm need not be crossed with every other arm. The grid turns each named-arm key
    into a list of its labels."""
    arms: dict[str, dict[str, dict[str, Any]]] = {}
    for key, values in grid.items():
        if isinstance(values, dict) and values:
            for label, overrides in values.items():
                if not isinstance(overrides, dict):
                    raise ConfigError(
                        f"ablation {path}: grid arm {key}.{label} must map dotted keys to "
                        f"values, got {overrides!r}"
                    )
            arms[key] = {str(label): overrides for label, overrides in values.items()}
            grid[key] = list(arms[key])
        elif not isinstance(values, list) or not values:
            raise ConfigError(
                f"ablation {path}: grid key {key!r} needs a non-empty list of values "
                "or a mapping of named arms {label: {dotted.key: value}}"
            )
    return arms


def _deep_copy(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _deep_copy(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_deep_copy(v) for v in tree]
    return tree


def _check_loss_arguments(runs: list[Run]) -> None:
    """A base-loss name or argument the loss library rejects fails here, before any training."""
    import torch

    from langdml.losses import build_loss

    seen = set()
    for run in runs:
        spec = run.config.loss
        key = stable_hash(spec.model_dump(mode="json"))
        if key in seen:
            continue
        seen.add(key)
        try:
            # Build on tiny dummy sizes: constructors validate names and arguments.
            build_loss(
                spec,
                num_classes=4,
                embedding_size=8,
                class_text_embeddings=torch.nn.functional.normalize(torch.randn(4, 8), dim=1),
            )
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"grid cell {run.cell.label()}: {exc}") from None
