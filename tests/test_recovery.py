"Least-squares recovery (`glu_pruning.recovery.lsq`): exactness, padding, the sequential variant, saving, SmolLM2."
import json, math

import pytest
import torch
from transformers import AutoModelForCausalLM

from glu_pruning.models import find_mlps, tiny_model
from glu_pruning.recovery import _layer_inputs, _out, lsq, lsq_down, output_error
from glu_pruning.slicing import prune, save_pruned


@pytest.fixture(scope="module")
def tok(smollm2):
    return smollm2[1]


@pytest.fixture(scope="module")
def texts(data_dir):
    from glu_pruning.scoring import calibration_texts
    return calibration_texts(6)


def twin_model(vocab, layers=2, model_type="llama"):
    "Neurons 32-47 copy the gate rows of neurons 0-15 with half their up rows: a_r = 0.5 a_j exactly."
    m = tiny_model(model_type, hidden=32, intermediate=48, layers=layers, vocab=vocab, seed=3)
    with torch.no_grad():
        for mlp in find_mlps(m):
            mlp.w_gate[32:] = mlp.w_gate[:16]
            mlp.w_up[32:] = 0.5 * mlp.w_up[:16]
    return m


@torch.no_grad()
@pytest.mark.parametrize("model_type", ["llama", "phi3"])   # separate and fused gate_up
def test_lsq_is_exact_when_activations_live_in_the_kept_subspace(tok, texts, model_type):
    m = twin_model(len(tok), model_type=model_type)
    ids = tok(texts[1], return_tensors="pt").input_ids[:, :80]
    ref = m(ids).logits
    plain = prune(m, width=32, criterion="ppm", inplace=False, progress=False).model   # not the twins: by score
    rec = lsq(m, [torch.arange(32)] * 2, tok, texts, ridge=0, progress=False)
    torch.testing.assert_close(m(ids).logits, ref, rtol=1e-4, atol=1e-4)
    assert max(rec["error_lsq"]) < 1e-8 and min(rec["error_plain"]) > 1e-3
    assert (plain(ids).logits - ref).abs().max() > 1e-3
    # the re-fitted down projection moved each twin's weights onto its original: W' = W_S + 0.5 W_R
    assert m.config.intermediate_size == 32 and rec["calibration_tokens"] > 100


@torch.no_grad()
def test_padding_is_excluded_and_one_layer_sequential_equals_one_shot(tok, texts):
    "Batching texts of different lengths (padded) gives the same fit as one text at a time; with one layer, the two orders agree."
    keep = [torch.arange(0, 48, 2)]
    fits = []
    for bs, seq in [(1, True), (3, True), (3, False)]:
        m = tiny_model("llama", hidden=32, intermediate=48, layers=1, vocab=len(tok), seed=5)
        r = lsq(m, keep, tok, [t[:300 + 200 * i] for i, t in enumerate(texts)], batch_size=bs, sequential=seq,
                progress=False)
        fits.append(find_mlps(m)[0].w_down.clone())
        assert r["sequential"] is seq and len({len(t) for t in texts}) > 1
    torch.testing.assert_close(fits[0], fits[1], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(fits[1], fits[2])


def test_lsq_down_ridge_and_errors():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(6, 500, generator=g, dtype=torch.float64)
    W, G, S = torch.randn(3, 6, generator=g, dtype=torch.float64), A @ A.T, torch.tensor([0, 2, 4])
    exact = torch.linalg.lstsq(A[S].T, (W @ A).T).solution.T      # least squares on the tokens themselves
    torch.testing.assert_close(lsq_down(W, G, S, ridge=0), exact)
    assert output_error(W, lsq_down(W, G, S, ridge=0), G, S) <= output_error(W, lsq_down(W, G, S, ridge=0.1), G, S)
    assert output_error(W, lsq_down(W, G, S), G, S) < output_error(W, W[:, S], G, S)
    assert lsq_down(W.float(), G, S).dtype == torch.float32
    with pytest.raises(ValueError, match="gram is \\(6, 6\\) but w_down has 4 inputs"):
        lsq_down(W[:, :4], G, S)
    with pytest.raises(ValueError, match="keep has 1 entries for a model with 2"):
        lsq(tiny_model("llama", hidden=32, intermediate=48), [S], object(), ["some text"])
    with pytest.raises(ValueError, match="needs calibration text"):
        lsq(tiny_model("llama", hidden=32, intermediate=48), [S, S])


def test_saved_recovered_model_reloads_with_identical_logits(tok, texts, tmp_path):
    m = tiny_model("llama", hidden=32, intermediate=96, layers=2, vocab=len(tok))
    rep = prune(m, ratio=2.0, criterion="ppm", recover="lsq", tokenizer=tok, texts=texts, progress=False)
    out = save_pruned(m, tok, tmp_path / "p")
    back = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = tok(texts[0], return_tensors="pt").input_ids[:, :64]
    with torch.no_grad(): torch.testing.assert_close(back(ids).logits, m(ids).logits)
    meta = json.loads((out / "pruning.json").read_text())
    r = meta["recovery"][0]
    assert (r["method"], r["calibration"], r["calibration_tokens"]) == ("lsq", texts.source, rep.recovery[0]["calibration_tokens"])
    assert "least squares" in (out / "README.md").read_text().lower()
    with pytest.raises(ValueError, match="unknown recovery 'magic'"):
        prune(tiny_model("llama"), ratio=2.0, recover="magic", tokenizer=tok, texts=texts, progress=False)


@pytest.mark.slow
def test_smollm2_lsq_repairs_ppm_at_2x(smollm2, data_dir):
    "SmolLM2 at 2.0x PPM: least squares on 32 default passages cuts held-out WikiText perplexity at least threefold."
    from glu_pruning.scoring import calibration_texts
    from glu_pruning.tasks import TASKS, data_root
    model, tok = smollm2
    doc = json.loads((data_root() / TASKS["wikitext"].data).read_text().splitlines()[50])["page"]
    ids = tok(doc, return_tensors="pt").input_ids[:, :1024]
    def ppl(m):
        with torch.no_grad(): return math.exp(m(ids, labels=ids).loss.item())
    plain = prune(model, ratio=2.0, inplace=False, progress=False).model
    rec = prune(model, ratio=2.0, inplace=False, recover="lsq", tokenizer=tok, texts=calibration_texts(32),
                progress=False).model
    assert ppl(rec) < ppl(plain) / 3
    assert ppl(model) < ppl(rec)


def test_cli_prune_recover_lsq(tok, data_dir, tmp_path, capsys):
    from glu_pruning.cli import main
    m = tiny_model("llama", hidden=32, intermediate=96, layers=2, vocab=len(tok))
    src = tmp_path / "tiny"; m.save_pretrained(src); tok.save_pretrained(src)
    out = tmp_path / "out"
    assert main(["prune", str(src), "--ratio", "2.0", "--recover", "lsq", "--calibration-tokens", "600",
                 "--out", str(out), "--device", "cpu"]) == 0
    r = json.loads((out / "pruning.json").read_text())["recovery"][0]
    assert r["method"] == "lsq" and 600 <= r["calibration_tokens"] < 600 + 256
    assert r["calibration"] == "gsm8k_train+arc_train+mmlu_validation"
    assert AutoModelForCausalLM.from_pretrained(out).config.intermediate_size == 64
    # with --streaming the same command runs one layer at a time: tests/test_streaming_lsq.py


@torch.no_grad()
@pytest.mark.parametrize("model_type,kw", [
    ("llama", {}), ("phi3", {}), ("granite", {}),
    ("gemma3_text", dict(sliding_window=6, layer_types=["sliding_attention", "full_attention", "sliding_attention"])),
])
def test_layer_inputs_reproduce_the_forward_pass(tok, texts, model_type, kw):
    """Each layer's recorded call (mask, position ids, rotary embeddings as the model computes them) pushes the first
    layer's input to the model's own hidden states; Gemma 3's sliding and full layers get different masks and rotary
    embeddings, so reusing the first layer's call for every layer would not."""
    m = tiny_model(model_type, hidden=32, intermediate=48, layers=3, vocab=len(tok), **kw)
    enc = tok([t[:200] for t in texts[:3]], return_tensors="pt", padding=True, truncation=True, max_length=40)
    full = m(**enc, output_hidden_states=True).hidden_states
    tok.backend_tokenizer.no_padding(); tok.backend_tokenizer.no_truncation()   # what that call left behind
    layers, batches = _layer_inputs(m, tok, [t[:200] for t in texts[:3]], batch_size=3, max_length=40)
    assert len(batches) == 1 and torch.equal(batches[0]["mask"], enc["attention_mask"])
    h = batches[0]["h"]
    for i, (layer, (args, kwargs)) in enumerate(zip(layers, batches[0]["calls"])):
        torch.testing.assert_close(h, full[i], rtol=1e-5, atol=1e-6)
        h = _out(layer(h, *args, **kwargs))
    assert all("forward" not in l.__dict__ for l in layers)
    assert tok.backend_tokenizer.padding is None and tok.backend_tokenizer.truncation is None   # nothing left behind
    if model_type == "gemma3_text":
        (_, k0), (_, k1) = batches[0]["calls"][:2]
        assert not torch.equal(k0["position_embeddings"][0], k1["position_embeddings"][0])


def test_lsq_warns_when_calibration_is_too_small_for_the_kept_neurons(tok, texts):
    "Fewer than MIN_TOKENS_PER_NEURON tokens per kept neuron overfit (the recovery page's curve): lsq says so."
    from glu_pruning.recovery import LSQ_TOKENS, MIN_TOKENS_PER_NEURON, calibration_for_tokens
    m = tiny_model("llama", hidden=32, intermediate=96, layers=2, vocab=len(tok))
    with pytest.warns(UserWarning, match=f"fewer than {MIN_TOKENS_PER_NEURON} tokens per kept neuron"):
        rep = prune(m, ratio=2.0, criterion="ppm", recover="lsq", tokenizer=tok, texts=["The sea is calm today."],
                    progress=False)
    assert rep.recovery[0]["calibration_tokens"] < MIN_TOKENS_PER_NEURON * rep.width_after
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)   # enough tokens: no warning
        prune(tiny_model("llama", hidden=32, intermediate=96, layers=2, vocab=len(tok)), ratio=2.0, criterion="ppm",
              recover="lsq", tokenizer=tok, texts=calibration_for_tokens(tok, 4 * 64 + 64), progress=False)
    assert LSQ_TOKENS >= 8192
