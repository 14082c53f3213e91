"The real SmolLM2-135M-Instruct, offline: prune, save, reload, perplexity, generation."
import json, math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from glu_pruning.models import count_params, find_mlps, generate
from glu_pruning.scoring import calibration_texts
from glu_pruning.slicing import prune, save_pruned


def perplexity(model, tok, text):
    ids = tok(text, return_tensors="pt", truncation=True, max_length=256).input_ids
    with torch.no_grad(): return math.exp(model(ids, labels=ids).loss.item())


@pytest.fixture(scope="module")
def passage(data_dir):
    return calibration_texts(1)[0]


def test_bundled_model_shape(smollm2):
    model, tok = smollm2
    mlps = find_mlps(model)
    assert (model.config.hidden_size, len(mlps), mlps[0].width) == (576, 30, 1536)
    assert getattr(model, "hf_quantizer", None) is None


@pytest.mark.parametrize("ratio,width", [(2.4, 1383), (2.0, 1152)])
def test_prune_save_reload(smollm2, passage, tmp_path, ratio, width):
    model, tok = smollm2
    base_ppl = perplexity(model, tok, passage)
    rep = prune(model, ratio=ratio, inplace=False, progress=False)
    pruned = rep.model
    assert rep.width_after == width == math.ceil(ratio * 576)
    assert find_mlps(model)[0].width == 1536  # the original is untouched
    assert count_params(pruned) == count_params(model) - 30 * 3 * 576 * (1536 - width)

    out = save_pruned(pruned, tok, tmp_path / f"smol-{ratio}")
    meta = json.loads((out / "pruning.json").read_text())
    assert meta["width_after"] == width and len(meta["keep"]) == 30 and meta["criterion"] == "ppm"
    card = (out / "README.md").read_text()
    assert "smollm2-135m-instruct" in card and f"{width}" in card and "ppm" in card

    re_model = AutoModelForCausalLM.from_pretrained(out).eval()
    re_tok = AutoTokenizer.from_pretrained(out)
    ids = re_tok(passage, return_tensors="pt").input_ids[:, :64]
    with torch.no_grad():
        torch.testing.assert_close(re_model(ids).logits, pruned(ids).logits, rtol=1e-4, atol=1e-4)

    ppl = perplexity(re_model, re_tok, passage)
    assert math.isfinite(ppl) and ppl > base_ppl, (base_ppl, ppl)
    text = generate(re_model, re_tok, "Name a color.", max_new_tokens=8)
    assert isinstance(text, str) and len(text) > 0


def test_gguf_cache_is_plain_safetensors(smollm2):
    from glu_pruning.models import ALIASES, cache_dir, resolve_alias
    from pathlib import Path
    gguf = Path(resolve_alias("smollm2-135m-instruct"))
    cached = [p for p in cache_dir().glob(f"{gguf.stem}-*") if (p / "config.json").exists()]
    assert cached and (cached[0] / "model.safetensors").exists()
    assert "quantization_config" not in json.loads((cached[0] / "config.json").read_text())


@pytest.mark.slow
def test_ifeval_with_the_chat_template(smollm2, data_dir):
    "IFEval on the instruct model goes through its chat template by default, and its answers then end on their own."
    from glu_pruning.evaluation import AT_CAP, evaluate
    from glu_pruning.taskdata import TaskSpec
    model, tok = smollm2
    assert tok.chat_template
    df = evaluate(model, tok, [TaskSpec("ifeval", 0, limit=4, max_gen_toks=256)], data_dir=data_dir, progress=False)
    assert df.chat_template.all() and (df.max_gen_toks == 256).all()
    v = df.set_index("metric").value
    assert 0 <= v["prompt_level_strict_acc"] <= 1 and v["inst_level_loose_acc"] >= v["inst_level_strict_acc"]
    assert v[AT_CAP] < 1          # with the template, at least one answer ends before the cap
