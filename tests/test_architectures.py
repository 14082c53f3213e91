"The slicer on every adapter family, on tiny random models built from configs."
import pytest
import torch
from transformers import AutoModelForCausalLM

from glu_pruning.models import ADAPTERS, find_mlps, tiny_model
from glu_pruning.slicing import keep_indices, prune, save_pruned, slice_mlp
from glu_pruning.scoring import score

FAMILIES = sorted(ADAPTERS)
X = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))


def logits(m):
    with torch.no_grad(): return m(X).logits


def build(family, **kw):
    # Llama and Granite support MLP biases: exercise bias slicing there.
    if family in ("llama", "granite"): kw.setdefault("mlp_bias", True)
    return tiny_model(family, **kw)


@pytest.mark.parametrize("family", FAMILIES)
def test_slice_equals_mask(family):
    "Zeroing the pruned neurons' gate/up rows (and biases) in the unpruned model == slicing them out."
    ref, m = build(family), build(family)
    rep = prune(m, percent=40, progress=False)
    for mlp, keep in zip(find_mlps(ref), rep.keep):
        drop = torch.ones(mlp.width, dtype=torch.bool)
        drop[keep] = False
        with torch.no_grad():
            mlp.w_gate[drop] = 0
            mlp.w_up[drop] = 0
            for nm in ("gate", "up") if not mlp.adapter.fused else ("gate_up",):
                b = mlp.proj(nm).bias
                if b is not None:
                    rows = drop if nm != "gate_up" else torch.cat([drop, drop])
                    b[rows] = 0
    torch.testing.assert_close(logits(m), logits(ref), rtol=1e-5, atol=1e-5)
    assert m.config.intermediate_size == rep.width_after == 96
    assert all(mm.width == 96 for mm in find_mlps(m))


@pytest.mark.parametrize("family", FAMILIES)
def test_full_width_changes_nothing(family):
    a, b = build(family), build(family)
    for m in find_mlps(b): slice_mlp(m, torch.arange(m.width))   # keep every neuron
    assert torch.equal(logits(a), logits(b))


@pytest.mark.parametrize("family", FAMILIES)
def test_save_reload_same_logits(family, tmp_path):
    m = build(family)
    prune(m, ratio=1.5, progress=False)
    save_pruned(m, None, tmp_path / "out")
    r = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    assert r.config.intermediate_size == 96
    torch.testing.assert_close(logits(r), logits(m), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_keeps_dtype(dtype):
    m = tiny_model("llama").to(dtype)
    prune(m, ratio=1.0, progress=False)
    assert {p.dtype for p in m.parameters()} == {dtype}


def test_fused_phi3_keeps_matching_halves():
    "Phi-3's gate_up_proj: the kept gate rows and up rows are the same neurons."
    ref, m = tiny_model("phi3"), tiny_model("phi3")
    rep = prune(m, width=40, progress=False)
    r0, m0 = find_mlps(ref)[0], find_mlps(m)[0]
    k = torch.tensor(rep.keep[0])
    assert torch.equal(m0.w_gate, r0.w_gate[k]) and torch.equal(m0.w_up, r0.w_up[k])
    assert torch.equal(m0.w_down, r0.w_down[:, k])


def test_kept_are_topk_by_score():
    m = tiny_model("qwen3")
    s = score(m, "ppm")
    rep = prune(m, width=50, progress=False)
    for si, keep in zip(s, rep.keep):
        assert keep == keep_indices(si, 50).tolist()
        assert si[keep].min() >= si.topk(50).values.min()


@pytest.mark.parametrize("family", ["gpt2", "opt"])
def test_non_glu_rejected(family):
    from transformers import AutoConfig
    cfg = AutoConfig.for_model(family, vocab_size=64, n_embd=32, n_layer=1, n_head=2, hidden_size=32,
                               num_hidden_layers=1, num_attention_heads=2, ffn_dim=64, word_embed_proj_dim=32)
    m = AutoModelForCausalLM.from_config(cfg)
    with pytest.raises(ValueError, match="non-gated"):
        prune(m, ratio=1.0)


def test_quantized_rejected():
    m = tiny_model("llama")
    m.config.quantization_config = {"quant_method": "gptq", "bits": 4}
    with pytest.raises(ValueError, match="quantized weights"):
        prune(m, ratio=1.0)


def test_wrapped_linear_rejected():
    m = tiny_model("llama")
    class Int8Linear(torch.nn.Linear): pass
    old = m.model.layers[0].mlp.up_proj
    m.model.layers[0].mlp.up_proj = Int8Linear(old.in_features, old.out_features, bias=False)
    with pytest.raises(ValueError, match="not a plain nn.Linear"):
        prune(m, ratio=1.0)


def test_peak_memory_no_deep_copy():
    "In-place pruning frees each layer's old matrices: no second copy of the model is alive at any point."
    m = tiny_model("llama", hidden=256, intermediate=1024, layers=4, vocab=128)
    n_before = sum(p.numel() for p in m.parameters())
    seen = []
    import glu_pruning.slicing as sl
    orig = sl.slice_mlp
    def spy(mlp, keep):
        orig(mlp, keep)
        import gc; gc.collect()
        seen.append(sum(p.numel() for p in m.parameters()))
    sl.slice_mlp = spy
    try: prune(m, percent=50, progress=False)
    finally: sl.slice_mlp = orig
    assert max(seen) < n_before  # parameters only ever shrink while slicing
