"""Adding a regularizer is its module and one registry row: a regularizer written outside the
package (its torch-free settings module and its nn.Module), registered by one row in
``REGULARIZERS`` before the schema is imported, validates as a config block (typed, one-line
errors, YAML round trip, listed in the config reference), builds and trains, with no other edit.

It runs in a fresh interpreter: the row must be in the table before ``langdml.losses.spec``
builds the ``loss:`` schema, exactly as a row written in ``registry.py`` is."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# The regularizer's module: settings (the config block), which bases it applies to, and build.
SETTINGS = '''
from pydantic import Field

from langdml.losses.registry import LOSSES
from langdml.losses.regularizer import RegularizerSettings


class NormPullConfig(RegularizerSettings):
    """Pull every embedding's norm toward a target (a toy term for the registry test)."""

    weight: float = Field(0.5, ge=0, description="Weight of the norm-pull term.")
    target: float = Field(2.0, gt=0, description="The norm every embedding is pulled toward.")

    def check_base(self, base):
        if base not in LOSSES or LOSSES[base].kind != "pair":
            raise ValueError(f"regularizer 'norm_pull' applies to pair losses only, not {base!r}")

    def build(self, base, context):
        from toy_norm_pull.loss import NormPull

        return base, NormPull(self.target), self.weight
'''

LOSS = """
from torch import nn


class NormPull(nn.Module):
    def __init__(self, target):
        super().__init__()
        self.target = target

    def forward(self, embeddings, labels, **_):
        return ((embeddings.norm(dim=1) - self.target) ** 2).mean()
"""

SCRIPT = """
import json, sys
from pathlib import Path

import yaml

from langdml.losses import registry

# the one row (a dotted module path: a module outside langdml.losses)
row = registry.RegularizerEntry("toy_norm_pull.settings:NormPullConfig")
registry.REGULARIZERS["norm_pull"] = row

from langdml.config import dump_yaml, load_config, validate_config
from langdml.errors import ConfigError

over = {"loss.regularizers": "norm_pull", "loss.norm_pull.target": 1.5}
cfg = load_config(None, over)
out = {"torch_after_validation": "torch" in sys.modules}
out["settings"] = cfg.loss.norm_pull.model_dump()
out["round_trip"] = validate_config(yaml.safe_load(dump_yaml(cfg))) == cfg
errors = {}
for name, bad in {
    "unknown_key": {"loss.norm_pull.targt": 1.0},
    "bad_value": {"loss.norm_pull.target": -1.0},
    "bad_base": {"loss.base.name": "proxy_anchor"},
    "unknown_regularizer": {"loss.regularizers": "norm_pul"},
}.items():
    try:
        load_config(None, {**over, **bad})
    except ConfigError as exc:
        errors[name] = str(exc)
out["errors"] = errors

sys.path.insert(0, str(Path(sys.argv[1]) / "docs" / "hooks"))
import config_reference

out["reference"] = [
    line for line in config_reference.render_config_reference().splitlines() if "norm_pull" in line
]

import torch

from langdml.losses import build_loss

loss = build_loss(cfg.loss, num_classes=4, embedding_size=8)
torch.manual_seed(0)
model = torch.nn.Linear(5, 8)
x, y = torch.randn(16, 5), torch.arange(16) % 4
before = model.weight.detach().clone()
z = model(x)
# oracle: the toy formula written out here, on the embeddings the loss sees
norm_pull = float(((z.detach().norm(dim=1) - 1.5) ** 2).mean())
loss(z, y).backward()
torch.optim.SGD(model.parameters(), lr=0.1).step()
out["terms"] = loss.last_terms
out["oracle_norm_pull"] = norm_pull
out["stepped"] = not torch.equal(before, model.weight.detach())

from langdml.train import train

train_cfg = load_config(None, {**over, **json.loads(sys.argv[2])})
train(train_cfg)
log_file = Path(train_cfg.output_dir) / "log.jsonl"
log = [json.loads(line) for line in log_file.read_text().splitlines()]
out["train_log_keys"] = sorted(log[-1])
out["train_norm_pull"] = log[-1].get("loss/norm_pull")
print(json.dumps(out))
"""


def _image_folder(root: Path) -> Path:
    from PIL import Image

    for c in range(8):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(4):
            colour = (30 * c, 255 - 40 * i, (37 * c * i) % 256)
            Image.new("RGB", (32, 32), colour).save(root / f"class{c}" / f"{i}.png")
    return root


def test_a_regularizer_is_its_module_and_one_registry_row(tmp_path):
    package = tmp_path / "plugin" / "toy_norm_pull"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "settings.py").write_text(textwrap.dedent(SETTINGS))
    (package / "loss.py").write_text(textwrap.dedent(LOSS))
    folder = _image_folder(tmp_path / "images")
    run = {
        "data.dataset": f"imagefolder:{folder}",
        "data.cache_dir": str(tmp_path / "cache"),
        "data.train_fraction": 0.5,
        "model.image_size": 32,
        "model.embedding_dim": 8,
        "train.epochs": 1,
        "train.batch_size": 4,
        "train.m_per_class": 2,
        "train.iterations_per_epoch": 2,
        "train.progress": False,
        "output_dir": str(tmp_path / "run"),
    }
    env_path = f"{tmp_path / 'plugin'}:{ROOT}"
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(ROOT), json.dumps(run)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**_env(), "PYTHONPATH": env_path},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])

    # validates without torch, with its defaults and the given value
    assert out["torch_after_validation"] is False
    assert out["settings"] == {"weight": 0.5, "target": 1.5}
    assert out["round_trip"] is True
    # one line each, naming the key / value / base
    errors = out["errors"]
    assert "did you mean 'loss.norm_pull.target'" in errors["unknown_key"]
    assert "loss.norm_pull.target" in errors["bad_value"] and "-1.0" in errors["bad_value"]
    assert "applies to pair losses only, not 'proxy_anchor'" in errors["bad_base"]
    assert (
        "norm_pul" in errors["unknown_regularizer"] and "norm_pull" in errors["unknown_regularizer"]
    )
    assert all("\n" not in e for e in errors.values())
    # the generated config reference lists the block and its keys with their descriptions
    reference = "\n".join(out["reference"])
    assert "### `loss.norm_pull`" in reference
    assert "`loss.norm_pull.target`" in reference and "pulled toward" in reference
    assert "`loss.norm_pull.weight`" in reference
    # builds into the combined loss: total = base + 0.5 × the toy formula; the step moved weights
    terms = out["terms"]
    assert abs(terms["norm_pull"] - out["oracle_norm_pull"]) < 1e-5 * max(1.0, terms["norm_pull"])
    assert abs(terms["total"] - (terms["base"] + 0.5 * terms["norm_pull"])) < 1e-5
    assert out["stepped"] is True
    # and the trainer trains with it, logging its term
    assert "loss/norm_pull" in out["train_log_keys"]
    assert out["train_norm_pull"] is not None and out["train_norm_pull"] >= 0


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
