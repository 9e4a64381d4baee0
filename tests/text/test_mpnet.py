"""The optional packaged all-mpnet-base-v2 (``mpnet``): reassembling a zip split over packages
(tested on a small archive made here), the missing-extra message, and — where the extra is
installed — the real model."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from importlib import metadata

import pytest
import torch

from langdml.errors import ModelError
from langdml.text import packaged, parse_text_model_spec, precompute_text_embeddings
from langdml.text.spec import model_identity

FILES = {
    "m/config.json": b'{"a": 1}',
    "m/sub/weights.bin": bytes(range(256)) * 300,
    "m/desktop.ini": b"[.ShellClassInfo]",
    "other/ignored.txt": b"not in the folder",
}


def _split_zip(tmp_path, n_parts=3):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, data in FILES.items():
            z.writestr(name, data)
    blob = buf.getvalue()
    cut = [0, len(blob) // 3, 2 * len(blob) // 3, len(blob)][: n_parts + 1]
    cut[-1] = len(blob)
    parts = []
    for i in range(n_parts):
        p = tmp_path / f"archive.zip.{i + 1:03d}"
        p.write_bytes(blob[cut[i] : cut[i + 1]])
        parts.append(p)
    return parts, blob


def _weights():
    data = FILES["m/sub/weights.bin"]
    return ("sub/weights.bin", len(data), hashlib.sha256(data).hexdigest())


def test_concatenated_parts_read_and_seek_like_one_file(tmp_path):
    parts, blob = _split_zip(tmp_path)
    with packaged._ConcatenatedFile(parts) as raw:
        assert raw.read() == blob
        raw.seek(-10, io.SEEK_END)
        assert raw.read() == blob[-10:]
        boundary = parts[0].stat().st_size
        raw.seek(boundary - 5)
        assert raw.read(10) == blob[boundary - 5 : boundary + 5]


def test_reassemble_extracts_the_folder_once_and_atomically(tmp_path):
    parts, _ = _split_zip(tmp_path)
    dest = tmp_path / "models" / "m"
    out = packaged.reassemble(parts, dest, "m/", weights=_weights())
    assert out == dest
    assert (dest / "config.json").read_bytes() == FILES["m/config.json"]
    assert (dest / "sub" / "weights.bin").read_bytes() == FILES["m/sub/weights.bin"]
    assert not (dest / "desktop.ini").exists() and not (dest / "ignored.txt").exists()
    manifest = json.loads((dest / packaged.MANIFEST).read_text())
    assert manifest["sizes"] == {"config.json": 8, "sub/weights.bin": 76800}
    assert [p.name for p in dest.parent.iterdir()] == ["m"]  # no temporary folder left
    stamp = (dest / "config.json").stat().st_mtime_ns
    packaged.reassemble(parts, dest, "m/", weights=_weights())  # complete: reused, not rewritten
    assert (dest / "config.json").stat().st_mtime_ns == stamp


def test_a_damaged_folder_is_rebuilt(tmp_path):
    parts, _ = _split_zip(tmp_path)
    dest = packaged.reassemble(parts, tmp_path / "m", "m/")
    (dest / "sub" / "weights.bin").write_bytes(b"truncated")
    assert not packaged.folder_is_complete(dest)
    packaged.reassemble(parts, dest, "m/", weights=_weights())
    assert (dest / "sub" / "weights.bin").read_bytes() == FILES["m/sub/weights.bin"]


def test_wrong_weights_or_parts_leave_no_folder(tmp_path):
    parts, _ = _split_zip(tmp_path)
    name, size, _ = _weights()
    with pytest.raises(ModelError, match="does not match the published file"):
        packaged.reassemble(parts, tmp_path / "out" / "m", "m/", weights=(name, size, "0" * 64))
    assert list((tmp_path / "out").iterdir()) == []
    with pytest.raises(ModelError, match="cannot reassemble"):
        packaged.reassemble(parts[:2], tmp_path / "out" / "m", "m/")
    assert list((tmp_path / "out").iterdir()) == []
    expected = [(p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest()) for p in parts]
    packaged.check_parts(parts, expected)
    expected[1] = (expected[1][0], "0" * 64)
    with pytest.raises(ModelError, match="not the published file"):
        packaged.check_parts(parts, expected)


def test_missing_extra_is_one_line_naming_the_install(monkeypatch):
    def not_found(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(packaged.metadata, "distribution", not_found)
    with pytest.raises(ModelError) as err:
        packaged.mpnet_path()
    msg = str(err.value)
    assert "\n" not in msg and "LANGDML_MPNET=1 make setup" in msg and "--no-deps" in msg


def test_spec_is_packaged_like_minilm():
    spec = parse_text_model_spec("mpnet")
    assert spec.kind == "mpnet" and spec.canonical == "mpnet" and spec.pooling is None
    with pytest.raises(ModelError, match="does not apply"):
        parse_text_model_spec("mpnet", pooling="cls")
    ident = model_identity(spec)
    assert ident["kind"] == "mpnet" and set(ident["packages"]) == set(packaged.MPNET_PARTS)


def _mpnet_installed() -> bool:
    try:
        packaged.mpnet_part_files()
    except ModelError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(
    not _mpnet_installed(), reason="optional extra langdml[mpnet] (386 MiB) is not installed"
)
def test_real_mpnet_embeddings(tmp_path):
    names = ["dog face", "cat face", "sailboat"]
    out = precompute_text_embeddings(names, model="mpnet", cache_dir=tmp_path)
    emb = out.embeddings
    assert emb.shape == (3, 768) and out.meta["library_versions"]["sentence-transformers"]
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3), atol=1e-5, rtol=0)
    sim = emb @ emb.T
    assert sim[0, 1] > sim[0, 2] + 0.2  # dog face ~ cat face, far from sailboat
    folder = packaged.mpnet_path()
    assert packaged.folder_is_complete(folder)
    assert (folder / "model.safetensors").stat().st_size == packaged.MPNET_WEIGHTS[1]
