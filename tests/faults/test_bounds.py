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


def test_embed_a_copy_of_the_run_dataset_by_split_labels_the_run_classes(trained, tmp_path, capsys):
    import shutil

    from langdml.inference.index import load_embeddings

    run, folder = trained
    copy = shutil.copytree(folder, tmp_path / "moved")  # the same classes, another place
    out = tmp_path / "e.safetensors"
    argv = ["embed", str(run), "--dataset", f"imagefolder:{copy}", "-o", str(out)]
    assert main([*argv, "--split", "test"]) == 0
    assert load_embeddings(out).class_names == [f"class_{c}" for c in range(4, 8)]


def test_embed_a_superset_of_the_run_dataset_by_split_is_refused(trained, tmp_path, capsys):
    import shutil

    run, folder = trained
    bigger = shutil.copytree(folder, tmp_path / "bigger")
    make_folder(tmp_path / "extra", classes=10, per_class=2)
    for c in (8, 9):  # two classes more: the first half is no longer the run's train classes
        shutil.copytree(tmp_path / "extra" / f"class_{c}", bigger / f"class_{c}")
    out = tmp_path / "e.safetensors"
    argv = ["embed", str(run), "--dataset", f"imagefolder:{bigger}", "-o", str(out)]
    assert main([*argv, "--split", "train"]) == 2
    line = _err(capsys)
    assert "the run trained on 4 classes ('class_0', 'class_1', 'class_2', 'class_3')" in line
    assert "train split has 5 (4 in common)" in line and not out.exists()


@pytest.mark.parametrize("command", ["embed", "index"])
def test_by_split_when_the_run_dataset_is_gone_is_refused(trained, tmp_path, capsys, command):
    import shutil

    run, folder = trained
    moved_run = shutil.copytree(run, tmp_path / "run")
    config = moved_run / "config.yaml"
    config.write_text(config.read_text().replace(str(folder), str(tmp_path / "gone")))
    out = tmp_path / ("e.safetensors" if command == "embed" else "idx")
    argv = [command, str(moved_run), "--dataset", f"imagefolder:{folder}", "-o", str(out)]
    assert main([*argv, "--split", "test"]) == 2
    line = _err(capsys)
    assert "trained on are unknown here: its dataset" in line and "gone" in line
    assert "use --split all" in line and not out.exists()
    assert main([*argv, "--split", "all"]) == 0  # labels by the dataset's own classes


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["search", "IDX", "--text", "x", "-k", str(2**31)], "-k must be at most 2147483647"),
        (["report", "RUN", "--queries", str(2**31)], "--queries must be at most 2147483647"),
        (
            ["embed", "RUN", "--images", "IMG", "-o", "OUT", "--batch-size", str(2**31)],
            "--batch-size must be at most 2147483647 (images per forward pass), got 2147483648",
        ),
        (["index", "RUN", "--images", "IMG", "-o", "OUT", "--device", "cuda:-1"], "not a device"),
    ],
)
def test_flags_beyond_32_bits_are_one_line(trained, tmp_path, capsys, argv, words):
    run, folder = trained
    where = {"IDX": str(tmp_path), "RUN": str(run), "IMG": str(folder)}
    where["OUT"] = str(tmp_path / "out")
    assert main([where.get(a, a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("flag", "value", "words"),
    [
        ("--k", "0", "--k must be at least 1 (nearest classes compared), got 0"),
        ("--seeds", "0", "--seeds must be at least 1 (shuffled-name permutations), got 0"),
        ("--image-size", "-8", "--image-size must be at least 1 (pixels per side), got -8"),
        ("--image-size", "5000", "--image-size must be at most 4096 (pixels per side), got 5000"),
    ],
)
def test_diagnose_counts_are_checked_before_any_feature(
    trained, capsys, monkeypatch, flag, value, words
):
    _, folder = trained

    def no_work(*args, **kwargs):
        raise AssertionError("diagnose started before its flags were checked")

    monkeypatch.setattr("langdml.diagnose.diagnose", no_work)
    assert main(["diagnose", "--dataset", f"imagefolder:{folder}", flag, value]) == 2
    assert words in _err(capsys)


def test_auto_search_recall_queries_beyond_32_bits(capsys):
    from langdml.eval.ann import check_search

    with pytest.raises(
        LangDMLError, match=r"recall_queries'\] must be an integer in \[1, 2147483647\]"
    ):
        check_search("auto", {"recall_queries": 2**31})


@pytest.mark.parametrize(
    ("key", "value", "bound"),
    [
        ("model.image_size", 2**31, "4096"),
        ("model.embedding_dim", 2**31, "65536"),
        ("text.pseudo_label_image_size", 5000, "4096"),
    ],
)
def test_config_sizes_beyond_their_bounds_are_refused_at_validation(key, value, bound):
    from langdml.config import load_config

    field = key.split(".")[1]
    with pytest.raises(ConfigError, match=rf"{field}.*(less than or equal to {bound}|, {bound}\])"):
        load_config(None, {key: value})


def test_precompute_image_size_beyond_the_bound(tmp_path, capsys):
    classes = tmp_path / "classes.txt"
    classes.write_text("dog\ncat\n")
    argv = ["precompute", "--classes", str(classes), "--cache-dir", str(tmp_path)]
    assert main([*argv, "--image-size", "5000"]) == 2
    assert "--image-size must be at most 4096 (pixels per side), got 5000" in _err(capsys)


@pytest.mark.parametrize(
    "exc",
    [
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
            "memory: you tried to allocate 10995116277760 bytes. Error code 12"
        ),
        MemoryError("Unable to allocate 8.00 TiB for an array with shape (1099511627776,)"),
    ],
)
def test_a_failed_allocation_is_one_line(trained, tmp_path, capsys, monkeypatch, exc):
    run, folder = trained

    def allocate(*args, **kwargs):
        raise exc

    monkeypatch.setattr("langdml.inference.run.load_run", allocate)
    argv = ["embed", str(run), "--images", str(folder), "-o", str(tmp_path / "e.safetensors")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = one_line(err)
    assert line.startswith("langdml: error: out of memory")
    assert "batch" in line and ("10995116277760 bytes" in line or "8.00 TiB" in line)


def _writes_fail_under(monkeypatch, below):
    """Writes under ``below`` fail as on a read-only mount (root ignores permission bits)."""
    import errno
    import tempfile

    real = tempfile.mkstemp

    def mkstemp(*args, **kwargs):
        if str(kwargs.get("dir", "")).startswith(str(below)):
            raise OSError(errno.EROFS, "Read-only file system", str(below / ".x.tmp"))
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


def test_evaluate_per_class_to_a_read_only_place_fails_before_the_run_opens(
    trained, tmp_path, monkeypatch, capsys
):
    run, _ = trained
    ro = tmp_path / "ro"
    ro.mkdir()
    _writes_fail_under(monkeypatch, ro)

    def no_run(*args, **kwargs):
        raise AssertionError("the run was opened before --per-class was checked")

    monkeypatch.setattr("langdml.experiment.open_run", no_run)
    assert main(["evaluate", str(run), "--per-class", str(ro / "pc.csv")]) == 2
    line = _err(capsys)
    assert f"{ro / 'pc.csv'}: Read-only file system" in line and ".x.tmp" not in line


def test_xmodal_output_to_a_read_only_place_fails_before_the_method_runs(
    trained, tmp_path, monkeypatch, capsys
):
    run, folder = trained
    ro = tmp_path / "ro"
    ro.mkdir()
    _writes_fail_under(monkeypatch, ro)

    def no_method(*args, **kwargs):
        raise AssertionError("the method ran before --output was checked")

    monkeypatch.setattr("langdml.xmodal.methods.run_method", no_method)
    argv = ["xmodal", "--method", "zeroshot", "--dataset", f"imagefolder:{folder}"]
    argv += ["--output", str(ro / "x.json")]
    assert main(argv) == 2
    line = _err(capsys)
    assert f"{ro / 'x.json'}: Read-only file system" in line
