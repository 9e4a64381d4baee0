"""Bounds and early checks: numeric flags and config values, devices, output writability and the
run's own class split are checked before any work, each a single ``langdml: error:`` line."""

from __future__ import annotations

import pytest
import torch
from faultkit import make_folder, one_line, tiny_cfg

from langdml.cli import main
from langdml.errors import ConfigError, LangDMLError


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished tiny run on 8 classes (4 train, 4 test) and its image folder."""
    tmp = tmp_path_factory.mktemp("bounds_run")
    folder = make_folder(tmp / "data", classes=8, per_class=4)
    cfg = tiny_cfg(folder, tmp, **{"train.epochs": 1})
    cfg_file = tmp / "c.yaml"
    cfg_file.write_text(cfg.model_dump_json())  # JSON is YAML
    assert main(["train", str(cfg_file)]) == 0
    return tmp / "run", folder


def _err(capsys) -> str:
    return one_line(capsys.readouterr().err)


@pytest.mark.parametrize("value", [0, -4])
@pytest.mark.parametrize("command", ["embed", "index"])
def test_batch_size_out_of_range_is_refused_before_work(tmp_path, capsys, value, command):
    out = tmp_path / ("e.safetensors" if command == "embed" else "idx")
    argv = [command, str(tmp_path / "no-run"), "--images", str(tmp_path), "-o", str(out)]
    assert main([*argv, "--batch-size", str(value)]) == 2
    line = _err(capsys)
    assert "--batch-size must be at least 1 (images per forward pass)" in line
    assert f"got {value}" in line
    assert not out.exists()


def test_text_precompute_bounds_and_device(tmp_path, capsys):
    classes = tmp_path / "classes.txt"
    classes.write_text("dog\ncat\n")
    base = ["precompute", "--classes", str(classes), "--cache-dir", str(tmp_path)]
    assert main([*base, "--batch-size", "0"]) == 2
    assert "--batch-size must be at least 1, got 0" in _err(capsys)
    assert main([*base, "--device", "tpu"]) == 2
    assert "--device 'tpu' is not a device; expected cpu, cuda, cuda:N or mps" in _err(capsys)


@pytest.mark.parametrize("value", [2**31, 2**40])
def test_faiss_parameters_beyond_32_bits(tmp_path, capsys, value):
    from langdml.eval.ann import check_search

    with pytest.raises(LangDMLError, match=rf"must be at most {2**31 - 1} .*got {value}"):
        check_search("ivf", {"nprobe": value})
    with pytest.raises(LangDMLError, match="efSearch"):
        check_search("hnsw", {"efSearch": value})
    argv = ["index", str(tmp_path / "no-run"), "--images", str(tmp_path), "-o", str(tmp_path / "i")]
    assert main([*argv, "--search", "ivf", "--search-param", f"nlist={value}"]) == 2
    assert f"search_params['nlist'] must be at most {2**31 - 1}" in _err(capsys)
    check_search("ivf", {"nprobe": 2**31 - 1})  # the largest C int is accepted


def test_config_search_params_beyond_32_bits():
    from langdml.config import load_config

    with pytest.raises(ConfigError, match="at most 2147483647"):
        load_config(None, {"eval.search": "ivf", "eval.search_params": {"nprobe": 2**31}})


def test_config_device_that_is_not_a_device():
    from langdml.config import load_config

    with pytest.raises(ConfigError, match="train.device"):
        load_config(None, {"train.device": "tpu"})


@pytest.mark.parametrize("device", ["tpu", "cuda:x", "gpu"])
def test_embed_device_that_is_not_a_device(trained, tmp_path, capsys, device):
    run, folder = trained
    out = tmp_path / "e.safetensors"
    assert main(["embed", str(run), "--images", str(folder), "-o", str(out), "--device", device])
    assert f"--device {device!r} is not a device" in _err(capsys) and not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("command", ["embed", "search"])
def test_cuda_without_a_gpu(trained, tmp_path, capsys, command):
    run, folder = trained
    if command == "embed":
        argv = ["embed", str(run), "--images", str(folder), "-o", str(tmp_path / "e.safetensors")]
    else:
        argv = ["search", str(tmp_path), "--text", "x"]
    assert main([*argv, "--device", "cuda"]) == 2
    assert "--device 'cuda' requested but CUDA is not available" in _err(capsys)


def test_outputs_are_checked_writable_before_the_work(trained, tmp_path, capsys):
    run, folder = trained
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    cases = [
        (
            ["embed", str(run), "--images", str(folder), "-o", str(blocker / "e.safetensors")],
            "is a file where a directory is needed",
        ),
        (
            ["embed", str(run), "--images", str(folder), "-o", str(tmp_path)],
            "is a directory; expected",
        ),
        (["index", str(run), "--images", str(folder), "-o", str(blocker)], "is a file; expected"),
        (
            ["export", str(run), "--format", "torchscript", "-o", str(tmp_path)],
            "is a directory; expected",
        ),
        (
            ["report", str(run), "-o", str(blocker / "r.html")],
            "is a file where a directory is needed",
        ),
    ]
    for argv, expected in cases:
        assert main(argv) == 2, argv
        assert expected in _err(capsys), argv
    assert blocker.read_text() == "x"


@pytest.mark.parametrize(("flag", "value"), [("--queries", "0"), ("-k", "-3"), ("-k", "0")])
def test_report_counts_out_of_range(trained, capsys, flag, value):
    run, _ = trained
    assert main(["report", str(run), flag, value]) == 2
    line = _err(capsys)
    assert f"{flag} must be at least 1 (" in line and line.endswith(f"got {value}")


def test_search_k_out_of_range(tmp_path, capsys):
    assert main(["search", str(tmp_path), "--text", "x", "-k", "0"]) == 2
    assert "-k must be at least 1 (neighbours to return), got 0" in _err(capsys)


def test_embed_another_dataset_by_split_names_the_run_classes(trained, tmp_path, capsys):
    run, _ = trained
    other = make_folder(tmp_path / "other", classes=6, per_class=2)
    for d in other.iterdir():
        d.rename(other / f"x_{d.name}")  # other class names
    out = tmp_path / "e.safetensors"
    argv = ["embed", str(run), "--dataset", f"imagefolder:{other}", "-o", str(out)]
    assert main([*argv, "--split", "test"]) == 2
    line = _err(capsys)
    assert "is not the one run" in line and "'class_0'" in line and "--split all" in line
    assert not out.exists()
    assert main([*argv, "--split", "all"]) == 0  # on purpose: labels by the dataset's own classes
    capsys.readouterr()
    assert out.is_file()


def test_embed_own_dataset_by_split_still_works(trained, tmp_path, capsys):
    run, folder = trained
    out = tmp_path / "e.safetensors"
    argv = ["embed", str(run), "--dataset", f"imagefolder:{folder}", "-o", str(out)]
    assert main([*argv, "--split", "test"]) == 0
    from langdml.inference.index import load_embeddings

    table = load_embeddings(out)
    assert table.class_names == [f"class_{c}" for c in range(4, 8)]


def test_hf_label_option_naming_the_image_column(tmp_path):
    import datasets
    from PIL import Image

    from langdml.data import load_dataset
    from langdml.errors import DataError

    feats = datasets.Features(
        {
            "img": datasets.Image(),
            "score": datasets.Value("float32"),
            "label": datasets.ClassLabel(names=["a", "b"]),
        }
    )
    rows = {"img": [Image.new("RGB", (4, 4))] * 2, "score": [0.5, 0.7], "label": [0, 1]}
    datasets.Dataset.from_dict(rows, features=feats).save_to_disk(str(tmp_path / "hf"))
    for col, kind in (("img", "Image"), ("score", "float32")):
        with pytest.raises(DataError) as info:
            load_dataset(f"hf:{tmp_path / 'hf'}?label={col}")
        msg = str(info.value)
        assert f"?label={col}" in msg and kind in msg and "not a label column" in msg
        assert "its ClassLabel column is 'label'" in msg and "\n" not in msg
    assert load_dataset(f"hf:{tmp_path / 'hf'}?label=label").class_names == ["a", "b"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_check_device_names_the_flag_and_the_choices():
    from langdml.devices import check_device

    assert check_device("cpu") == "cpu" and check_device(" cpu ") == "cpu"
    for bad, expected in (("cuda:3", "CUDA is not available"), ("xla", "is not a device")):
        with pytest.raises(LangDMLError, match=expected) as info:
            check_device(bad, "train.device")
        assert str(info.value).startswith("train.device ")


def test_16_bit_png_embeds_like_its_8_bit_twin_through_langdml_embed(trained, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from langdml.inference.index import load_embeddings

    run, _ = trained
    rng = np.random.default_rng(0)
    g8 = rng.integers(0, 256, (40, 40)).astype(np.uint8)
    (tmp_path / "imgs").mkdir()
    Image.fromarray(g8, mode="L").save(tmp_path / "imgs" / "a8.png")
    Image.fromarray(g8.astype(np.uint16) * 257).save(tmp_path / "imgs" / "b16.png")
    out = tmp_path / "e.safetensors"
    assert main(["embed", str(run), "--images", str(tmp_path / "imgs"), "-o", str(out)]) == 0
    capsys.readouterr()
    emb = load_embeddings(out).embeddings
    assert emb.shape[0] == 2
    assert float(torch.nn.functional.cosine_similarity(emb[0:1], emb[1:2])) >= 0.99
    # The check can fail: the clipped decode (all white) embeds away from the 8-bit image.
    white = _embed_one(run, Image.fromarray(np.full((40, 40), 255, np.uint8), mode="L"))
    assert float(torch.nn.functional.cosine_similarity(emb[0:1], white)) < 0.99


def _embed_one(run_dir, image):
    from langdml.inference.run import load_run

    return load_run(run_dir).embed([image])


def test_read_only_output_is_refused_naming_the_target(tmp_path, monkeypatch):
    import errno
    import tempfile

    from langdml.io import check_writable

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / ".probe"))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    target = tmp_path / "sub" / "model.pt"
    with pytest.raises(LangDMLError) as info:
        check_writable(target, "export")
    msg = str(info.value)
    assert str(target) in msg and ".probe" not in msg and "read-only" in msg
