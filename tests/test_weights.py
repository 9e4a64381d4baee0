"""Every weight file through one reader (``langdml.weights``): damaged, foreign and unsafe files
are one line naming the file and what it holds; a state dict that does not fit says which keys and
which config value disagree. Covers model.weights, checkpoints, hf / sentence-transformers folders
and CLIP weight files."""

from __future__ import annotations

import os

import pytest
import torch
from faultkit import make_folder, one_line, tiny_cfg

from langdml.cli import main
from langdml.errors import LangDMLError, ModelError
from langdml.weights import fit_state_dict, load_weights_file

MARK = "PWNED_BY_PICKLE"


class _Payload:
    """Unpickling this would run a shell command (it must never be unpickled)."""

    def __reduce__(self):
        return (os.system, (f"touch {MARK}",))


def _bad_file(tmp_path, kind: str):
    path = tmp_path / ("w.safetensors" if kind.startswith("safetensors") else "w.pth")
    good = {"w": torch.ones(3)}
    if kind == "pickle":
        torch.save({"w": _Payload()}, path)
    elif kind == "random":
        path.write_bytes(os.urandom(400))
    elif kind == "truncated":
        torch.save(good, path)
        path.write_bytes(path.read_bytes()[:120])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "safetensors-damaged":
        from safetensors.torch import save_file

        save_file(good, str(path))
        blob = bytearray(path.read_bytes())
        blob[8:20] = b"#garbage####"
        path.write_bytes(bytes(blob))
    elif kind == "safetensors-truncated":
        from safetensors.torch import save_file

        save_file({"w": torch.ones(1000)}, str(path))
        path.write_bytes(path.read_bytes()[:200])
    return path


CASES = {
    "pickle": "pickle holding Python objects other than tensors (it needs",
    "random": "not a torch or safetensors weight file",
    "truncated": "truncated or damaged torch archive",
    "empty": "it is empty",
    "safetensors-damaged": "damaged or foreign safetensors file",
    "safetensors-truncated": "damaged or foreign safetensors file",
}


@pytest.mark.parametrize("kind", list(CASES))
def test_bad_weight_files_are_one_line_naming_file_and_content(tmp_path, kind, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = _bad_file(tmp_path, kind)
    with pytest.raises(ModelError) as info:
        load_weights_file(path, "weights file")
    msg = str(info.value)
    assert str(path) in msg and CASES[kind] in msg and "\n" not in msg
    assert "weights_only=False" not in msg and "weights_only` set to `False" not in msg
    assert not (tmp_path / MARK).exists()


def test_missing_and_folder_weight_files(tmp_path):
    with pytest.raises(ModelError, match="file not found"):
        load_weights_file(tmp_path / "nope.pth")
    with pytest.raises(ModelError, match="not a regular file"):
        load_weights_file(tmp_path)


def test_safetensors_and_torch_files_load(tmp_path):
    from safetensors.torch import save_file

    save_file({"a": torch.arange(3.0)}, str(tmp_path / "a.safetensors"))
    torch.save({"a": torch.arange(3.0)}, tmp_path / "a.pt")
    for name in ("a.safetensors", "a.pt"):
        torch.testing.assert_close(load_weights_file(tmp_path / name)["a"], torch.arange(3.0))


def test_state_dict_misfit_names_keys_and_config_value():
    module = torch.nn.Sequential(torch.nn.Linear(4, 8))
    good = {k: v.clone() for k, v in module.state_dict().items()}
    fit_state_dict(module, good, "f.pt")  # fits: loads
    extra = {**good, "bogus.weight": torch.zeros(1)}
    with pytest.raises(ModelError, match=r"1 unexpected key\(s\) \(bogus.weight\)"):
        fit_state_dict(module, extra, "f.pt")
    missing = {"0.weight": good["0.weight"]}
    with pytest.raises(ModelError, match=r"1 missing key\(s\) \(0.bias\)"):
        fit_state_dict(module, missing, "f.pt")
    other = torch.nn.Sequential(torch.nn.Linear(4, 16)).state_dict()
    with pytest.raises(ModelError) as info:
        fit_state_dict(module, other, "f.pt", {"model.embedding_dim": 8})
    msg = str(info.value)
    assert "0.weight: [16, 4] in the file, [8, 4] in the model" in msg
    assert "model.embedding_dim = 16, the config says 8" in msg


@pytest.mark.parametrize("kind", ["pickle", "random", "safetensors-damaged"])
def test_model_weights_file_is_one_line_from_the_cli(tmp_path, kind, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = make_folder(tmp_path / "data", classes=4, per_class=2)
    path = _bad_file(tmp_path, kind)
    cfg = tiny_cfg(folder, tmp_path)
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(cfg.model_dump_json())  # JSON is YAML
    assert main(["train", str(cfg_file), f"model.weights={path}"]) == 2
    line = one_line(capsys.readouterr().err)
    assert str(path) in line and CASES[kind] in line and "weights_only=False" not in line
    assert not (tmp_path / MARK).exists()


def test_model_weights_that_do_not_fit_the_backbone(tmp_path):
    from langdml.models import create_backbone

    path = tmp_path / "other.pth"
    torch.save(torch.nn.Linear(3, 3).state_dict(), path)
    with pytest.raises(ModelError) as info:
        create_backbone("efficientnet_lite0", weights=str(path))
    msg = str(info.value)
    assert (
        str(path) in msg and "missing key(s)" in msg and "unexpected key(s) (weight, bias)" in msg
    )


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("weights_run")
    folder = make_folder(tmp / "data", classes=8, per_class=4)
    cfg = tiny_cfg(folder, tmp, **{"train.epochs": 1})
    cfg_file = tmp / "c.yaml"
    cfg_file.write_text(cfg.model_dump_json())
    assert main(["train", str(cfg_file)]) == 0
    return tmp / "run"


def _copy_run(run, tmp_path):
    import shutil

    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    return dst


def test_checkpoint_with_an_extra_key_names_it(finished_run, tmp_path):
    from langdml.experiment import open_run
    from langdml.io import atomic_torch_save

    run = _copy_run(finished_run, tmp_path)
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        if (run / name).is_file():
            state = torch.load(run / name, weights_only=True)
            state["model"]["head.extra"] = torch.zeros(2)
            atomic_torch_save(run / name, state)
    with pytest.raises(LangDMLError) as info:
        open_run(run)
    msg = str(info.value)
    assert "checkpoint.pt" in msg and "unexpected key(s) (head.extra)" in msg


def test_config_embedding_dim_disagreeing_with_the_checkpoint(finished_run, tmp_path, capsys):
    run = _copy_run(finished_run, tmp_path)
    text = (run / "config.yaml").read_text()
    assert "embedding_dim: 16" in text
    (run / "config.yaml").write_text(text.replace("embedding_dim: 16", "embedding_dim: 32"))
    out = tmp_path / "e.safetensors"
    code = main(["embed", str(run), "--images", str(run.parent / "data"), "-o", str(out)])
    assert code == 2
    line = one_line(capsys.readouterr().err)
    assert "checkpoint" in line and "model.embedding_dim = 16, the config says 32" in line


def _tiny_bert(folder):
    from transformers import BertConfig, BertModel, BertTokenizerFast

    cfg = BertConfig(
        vocab_size=40,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
    )
    folder.mkdir()
    model = BertModel(cfg)
    model.config.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [chr(97 + i) for i in range(26)]
    (folder / "vocab.txt").write_text("\n".join(vocab))
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)


@pytest.mark.parametrize("kind", ["pickle", "random"])
def test_hf_folder_with_a_bad_pytorch_model_bin(tmp_path, kind, monkeypatch):
    from langdml.text.encoders import create_text_encoder

    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "bert"
    _tiny_bert(folder)
    assert create_text_encoder(f"hf:{folder}#cls").dim == 8  # the good folder loads
    bad = _bad_file(tmp_path, kind)
    os.replace(bad, folder / "pytorch_model.bin")
    with pytest.raises(ModelError) as info:
        create_text_encoder(f"hf:{folder}#cls")
    msg = str(info.value)
    assert str(folder / "pytorch_model.bin") in msg and CASES[kind] in msg
    assert "weights_only" not in msg and not (tmp_path / MARK).exists()


@pytest.mark.parametrize("kind", ["pickle", "random", "truncated"])
def test_clip_weight_file_with_a_bad_payload(tmp_path, kind, monkeypatch):
    from clipkit import save_tiny_clip

    from langdml.text.encoders import create_clip_model

    monkeypatch.chdir(tmp_path)
    cfg_path, ckpt, _ = save_tiny_clip(tmp_path, "tinyclip_weights_test.json", seed=0)
    assert create_clip_model(f"clip:{cfg_path}@{ckpt}").dim == 12
    os.replace(_bad_file(tmp_path, kind), ckpt)
    with pytest.raises(ModelError) as info:
        create_clip_model(f"clip:{cfg_path}@{ckpt}")
    msg = str(info.value)
    assert str(ckpt) in msg and CASES[kind] in msg and "weights_only" not in msg
    assert not (tmp_path / MARK).exists()
