"""Streaming least-squares recovery (`prune_checkpoint(..., recover="lsq")`): one decoder layer in memory at a
time, and the same checkpoint as in-memory `prune(..., recover="lsq")` + `save_pruned`; resume; the CLI; refusals.

Tolerance: both paths run the same code (`recovery._layer_inputs`, `_refit_layer`) on the same values in the same
order, so on this machine their weights and logits are bit-identical. The checks allow 1e-5 relative (1e-7
absolute) all the same, because a BLAS may pick another kernel for differently aligned buffers (the streamed
layer's tensors are read into fresh buffers, the loaded model's come from `from_pretrained`)."""
import json, random

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from glu_pruning import streaming
from glu_pruning.safetensors import open_checkpoint, read_tensor
from glu_pruning.slicing import prune, save_pruned
from glu_pruning.streaming import prune_checkpoint
from helpers import synthetic_checkpoint, tiny_folder, tiny_with_smollm2_tokenizer

close = dict(rtol=1e-5, atol=1e-7)


def word_texts(n=7, seed=0) -> list[str]:
    "Passages over `tiny_folder`'s word-level vocabulary, of very different lengths (so batches are padded)."
    rng, words = random.Random(seed), "the cat sat on a mat".split()
    return [" ".join(rng.choice(words) for _ in range(rng.randint(5, 60))) for _ in range(n)]


def tokenizer(src):
    tok = AutoTokenizer.from_pretrained(src)
    if tok.pad_token is None: tok.pad_token = tok.eos_token
    return tok


def in_memory_lsq(src, out, texts, dtype=torch.float32, save_dtype=None, **spec):
    "The reference: load the checkpoint, prune with recover='lsq', (cast,) save."
    tok = tokenizer(src)
    m = AutoModelForCausalLM.from_pretrained(src, dtype=dtype)
    prune(m, recover="lsq", tokenizer=tok, texts=texts, progress=False, **spec)
    if save_dtype is not None: m.to(save_dtype)
    return save_pruned(m, tok, out)


def meta(d):
    "pruning.json without the recovery's wall time (the one field two runs never share)."
    m = json.loads((d / "pruning.json").read_text())
    for r in m["recovery"]: r.pop("seconds")
    return m


def same_model(a, b, texts, ignore=()):
    """Same side files (byte for byte), same tensors (to `close`; the shard layout may differ: streaming keeps the
    source's), same pruning.json but for seconds (and the fields in `ignore`), same logits (to `close`)."""
    side = lambda d: sorted(f.name for f in d.iterdir() if f.suffix != ".safetensors" and "index" not in f.name)
    assert side(a) == side(b)
    for f in side(a):
        if f != "pruning.json": assert (a / f).read_bytes() == (b / f).read_bytes(), f
    ma, mb = ({k: v for k, v in meta(d).items() if k not in ignore} for d in (a, b))
    assert ma["keep"] == mb["keep"]          # the same kept neurons
    ea, eb = ma["recovery"][0], mb["recovery"][0]
    for k in ("error_plain", "error_lsq"):   # rounded to 5 decimals: a last-digit flip is float noise
        assert ea.pop(k) == pytest.approx(eb.pop(k), abs=2e-5)
    assert ma == mb
    ta, tb = open_checkpoint(a).tensors, open_checkpoint(b).tensors
    assert set(ta) == set(tb)
    for k in ta:
        x, y = read_tensor(ta[k]), read_tensor(tb[k])
        assert x.dtype == y.dtype, k
        torch.testing.assert_close(x, y, **close, msg=k)
    tok = AutoTokenizer.from_pretrained(a)
    ids = tok(texts[0], return_tensors="pt").input_ids
    la, lb = (AutoModelForCausalLM.from_pretrained(d).eval()(ids).logits.detach() for d in (a, b))
    torch.testing.assert_close(la, lb, **close)


CASES = [   # family, tiny_model overrides
    ("llama", {}),
    ("llama", dict(tie_word_embeddings=True)),
    ("qwen2", {}),
    ("mistral", {}),
    ("phi3", {}),                                    # fused gate_up_proj
    ("gemma3_text", dict(sliding_window=8,           # layers with other masks and other rotary embeddings
                         layer_types=["sliding_attention", "full_attention", "sliding_attention"])),
    ("granite", {}),                                 # embedding and residual multipliers in the model's forward
]


@pytest.mark.parametrize("family,overrides", CASES)
def test_streaming_lsq_equals_in_memory_lsq(tmp_path, family, overrides):
    src = tiny_folder(tmp_path / "src", family, layers=3, **overrides)
    texts = word_texts()
    a = prune_checkpoint(src, tmp_path / "stream", ratio=1.5, recover="lsq", texts=texts, progress=False)
    b = in_memory_lsq(src, tmp_path / "memory", texts, ratio=1.5)
    same_model(a, b, texts)
    r = meta(a)["recovery"][0]
    assert r["method"] == "lsq" and r["sequential"] and r["calibration_texts"] == len(texts)
    assert max(r["error_lsq"]) < min(r["error_plain"])   # least squares did something on every layer
    assert not any(p.name.startswith(".") for p in a.iterdir()) and not (tmp_path / ".stream.partial").exists()


def test_reloads_in_stock_transformers(tmp_path):
    src = tiny_folder(tmp_path / "src", "llama", layers=2)
    texts = word_texts()
    out = prune_checkpoint(src, tmp_path / "out", width=100, recover="lsq", texts=texts, progress=False)
    m = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=False)
    assert m.config.intermediate_size == 100 and m.model.layers[1].mlp.down_proj.weight.shape == (64, 100)
    assert "least squares" in (out / "README.md").read_text()
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.backend_tokenizer.padding is None and tok.backend_tokenizer.truncation is None   # calibration left no settings
    with torch.no_grad(): assert torch.isfinite(m(tok(texts[1], return_tensors="pt").input_ids).logits).all()


def test_bf16_checkpoint(tmp_path):
    """A bf16 checkpoint keeps its dtype. By default the calibration pass computes in float32: the model loaded in
    float32, repaired in memory, then cast to bf16. With dtype='auto' it computes in bf16, as in memory in bf16."""
    src = synthetic_checkpoint(tmp_path / "syn", "llama-3.2-1b", max_shard_size=40_000, num_hidden_layers=2,
                               hidden_size=64, intermediate_size=160, num_attention_heads=4, num_key_value_heads=2,
                               head_dim=16, vocab_size=16)
    tiny_folder(tmp_path / "tok", "llama", hidden=32, intermediate=64, layers=1)   # a word-level tokenizer, ids < 16
    for f in (tmp_path / "tok").glob("*.json"):
        if "token" in f.name: (src / f.name).write_bytes(f.read_bytes())
    assert len(open_checkpoint(src).shards) > 1
    texts = word_texts()
    a = prune_checkpoint(src, tmp_path / "s32", ratio=2.0, recover="lsq", texts=texts, progress=False)
    b = in_memory_lsq(src, tmp_path / "m32", texts, dtype=torch.float32, save_dtype=torch.bfloat16, ratio=2.0)
    same_model(a, b, texts, ignore=("base_fingerprint", "fingerprint"))   # the in-memory base is the float32 copy
    assert {i.dtype for i in open_checkpoint(a).tensors.values()} == {"BF16"}
    c = prune_checkpoint(src, tmp_path / "s16", ratio=2.0, recover="lsq", texts=texts, dtype="auto", progress=False)
    d = in_memory_lsq(src, tmp_path / "m16", texts, dtype=torch.bfloat16, ratio=2.0)
    same_model(c, d, texts)
    assert meta(a)["keep"] == meta(c)["keep"]   # the neurons are chosen from the weights, in either dtype


class Stop(KeyboardInterrupt): pass


def test_resume_after_interruption_while_fitting(tmp_path, monkeypatch):
    "Killed after two of four layers: the rerun fits only the last two, and writes the uninterrupted run's checkpoint."
    src = tiny_folder(tmp_path / "src", "qwen2", layers=4, max_shard_size="60KB")
    texts = word_texts()
    ref = prune_checkpoint(src, tmp_path / "ref", ratio=1.5, recover="lsq", texts=texts, progress=False)
    real, fitted = streaming._refit_layer, []
    def refit(m, *a, **k):
        if len(fitted) == 2: raise Stop()
        fitted.append(m.layer)
        return real(m, *a, **k)
    monkeypatch.setattr(streaming, "_refit_layer", refit)
    with pytest.raises(Stop): prune_checkpoint(src, tmp_path / "out", ratio=1.5, recover="lsq", texts=texts, progress=False)
    part = tmp_path / ".out.partial"
    state = json.loads((part / ".glu_streaming.json").read_text())
    assert state["fit"]["layers"] == 2 and sorted(state["keep"]) == ["0", "1"] and state["done"] == []
    assert sorted(p.name for p in (part / ".glu_lsq").iterdir()) == ["down.0.safetensors", "down.1.safetensors",
                                                                    "hidden.1.safetensors"]
    fitted.clear(); monkeypatch.setattr(streaming, "_refit_layer", lambda m, *a, **k: fitted.append(m.layer) or real(m, *a, **k))
    out = prune_checkpoint(src, tmp_path / "out", ratio=1.5, recover="lsq", texts=texts, progress=False)
    assert fitted == [2, 3]
    same_model(out, ref, texts)
    assert not part.exists()


def test_resume_after_interruption_while_writing(tmp_path, monkeypatch):
    "Killed while writing shards: the rerun fits nothing again and finishes the shards."
    src = tiny_folder(tmp_path / "src", "llama", layers=3, max_shard_size="60KB")
    assert len(open_checkpoint(src).shards) > 2
    texts = word_texts()
    ref = prune_checkpoint(src, tmp_path / "ref", ratio=1.5, recover="lsq", texts=texts, progress=False)
    real_close, n = streaming.ShardWriter.close, []
    def close_then_stop(self):
        if len(n) == 1: raise Stop()
        n.append(1)
        return real_close(self)
    monkeypatch.setattr(streaming.ShardWriter, "close", close_then_stop)
    with pytest.raises(Stop): prune_checkpoint(src, tmp_path / "out", ratio=1.5, recover="lsq", texts=texts, progress=False)
    monkeypatch.setattr(streaming.ShardWriter, "close", real_close)
    def no_refit(*a, **k): raise AssertionError("a finished fit was redone")
    monkeypatch.setattr(streaming, "_refit_layer", no_refit)
    out = prune_checkpoint(src, tmp_path / "out", ratio=1.5, recover="lsq", texts=texts, progress=False)
    same_model(out, ref, texts)


def test_other_calibration_starts_over(tmp_path, monkeypatch):
    src = tiny_folder(tmp_path / "src", "llama", layers=3)
    real, fitted = streaming._refit_layer, []
    def refit(m, *a, **k):
        if m.layer == 2: raise Stop()
        return real(m, *a, **k)
    monkeypatch.setattr(streaming, "_refit_layer", refit)
    with pytest.raises(Stop):
        prune_checkpoint(src, tmp_path / "out", ratio=1.5, recover="lsq", texts=word_texts(seed=1), progress=False)
    monkeypatch.setattr(streaming, "_refit_layer", lambda m, *a, **k: fitted.append(m.layer) or real(m, *a, **k))
    out = prune_checkpoint(src, tmp_path / "out", ratio=1.5, recover="lsq", texts=word_texts(seed=2), progress=False)
    assert fitted == [0, 1, 2]
    ref = in_memory_lsq(src, tmp_path / "ref", word_texts(seed=2), ratio=1.5)
    same_model(out, ref, word_texts(seed=2))


def test_refusals(tmp_path):
    src = tiny_folder(tmp_path / "src", "llama", layers=2)
    texts = word_texts()
    go = lambda s=src, **kw: prune_checkpoint(s, tmp_path / "o", ratio=1.5, progress=False, **({"recover": "lsq", "texts": texts} | kw))
    with pytest.raises(ValueError, match="needs calibration text"): go(texts=None)
    with pytest.raises(ValueError, match="streaming runs recover='lsq'"): go(recover="distill")
    with pytest.raises(ValueError, match="weight-only criterion"): go(criterion="wanda")
    with pytest.raises(ValueError, match="not a float dtype"): go(dtype="int8")
    bare = tmp_path / "bare"; tiny_folder(bare, "llama", tokenizer=False)
    with pytest.raises(ValueError, match="has no tokenizer"): go(bare)
    # a family glu_pruning cannot prune is refused by name before any weight is read
    cfg = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps(cfg | {"model_type": "mixtral"}))
    with pytest.raises(ValueError, match="'mixtral' is a mixture-of-experts"): go()
    # a checkpoint without a tensor the model needs (here the final norm) is refused by the tensor's name
    (src / "config.json").write_text(json.dumps(cfg))
    from safetensors.torch import load_file, save_file
    sd = load_file(src / "model.safetensors"); sd.pop("model.embed_tokens.weight")
    save_file(sd, src / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="needs the tensor 'model.embed_tokens.weight'"): go()
    assert not (tmp_path / "o").exists()


def test_cli_streaming_recover_lsq(tmp_path, data_dir, capsys):
    "`glu-prune prune MODEL --streaming --recover lsq --calibration-tokens N` writes what the in-memory command writes."
    from glu_pruning.cli import main
    src = tiny_with_smollm2_tokenizer(tmp_path / "tiny")
    args = ["prune", str(src), "--ratio", "2.0", "--recover", "lsq", "--calibration-tokens", "600", "--device", "cpu"]
    assert main(args + ["--streaming", "--out", str(tmp_path / "s")]) == 0
    assert "saved to" in capsys.readouterr().out
    assert main(args + ["--out", str(tmp_path / "m")]) == 0
    r = meta(tmp_path / "s")["recovery"][0]
    assert r["calibration"] == "gsm8k_train+arc_train+mmlu_validation" and 600 <= r["calibration_tokens"] < 600 + 256
    same_model(tmp_path / "s", tmp_path / "m", ["The cat sat on the mat."])
    assert main(["prune", str(src), "--ratio", "2.0", "--recover", "lsq", "--streaming", "--criterion", "wanda",
                 "--out", str(tmp_path / "w")]) == 1
    assert "weight-only criterion" in capsys.readouterr().err
