"""Helpers shared by the tests and the benchmarks (not part of the package): synthetic checkpoints with real shapes.

Tests import them as `from helpers import ...` (pytest puts `tests/` on the path); a benchmark adds `tests/` to
`sys.path` first."""
from __future__ import annotations
import json, math
from pathlib import Path

import torch

from glu_pruning.safetensors import ShardWriter, _ST_NAME
from glu_pruning.streaming import _meta_model

LLAMA_LAYOUTS: dict[str, dict] = {   # config fields of real Llama models (the weights are what `synthetic_checkpoint` invents)
    "llama-3.2-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                         num_key_value_heads=8, head_dim=64, vocab_size=128256, tie_word_embeddings=True),
    "llama-3.2-3b": dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24,
                         num_key_value_heads=8, head_dim=128, vocab_size=128256, tie_word_embeddings=True),
    "llama-3.1-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=8, head_dim=128, vocab_size=128256, tie_word_embeddings=False),
    "llama-3.1-70b": dict(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64,
                          num_key_value_heads=8, head_dim=128, vocab_size=128256, tie_word_embeddings=False),
}

def synthetic_checkpoint(out_dir,                       # a new folder
                         layout: str = "llama-3.2-3b",  # a name in `LLAMA_LAYOUTS`
                         max_shard_size: int = 2**30,   # bytes per shard (the last may be smaller)
                         dtype: torch.dtype = torch.bfloat16,
                         seed: int = 0,
                         **overrides,                   # config fields to change, e.g. num_hidden_layers=8
                        ) -> Path:
    "Write a sharded safetensors Llama checkpoint with real shapes and random weights, one tensor in memory at a time."
    from transformers import LlamaConfig
    cfg = LlamaConfig(**{**LLAMA_LAYOUTS[layout], **overrides}, dtype=str(dtype).split(".")[1],
                      architectures=["LlamaForCausalLM"])
    out = Path(out_dir); out.mkdir(parents=True, exist_ok=False)
    meta = _meta_model(cfg.to_dict())
    shapes = {k: tuple(v.shape) for k, v in meta.state_dict().items()
              if not (cfg.tie_word_embeddings and k == "lm_head.weight")}
    shards, cur, size = [], {}, 0
    for k, s in shapes.items():   # fill shards in parameter order, as `save_pretrained` does
        n = math.prod(s) * dtype.itemsize
        if cur and size + n > max_shard_size: shards.append(cur); cur, size = {}, 0
        cur[k] = s; size += n
    shards.append(cur)
    names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))] if len(shards) > 1 else ["model.safetensors"]
    g = torch.Generator().manual_seed(seed)
    d = _ST_NAME[dtype]
    for name, shard in zip(names, shards):
        w = ShardWriter(out / name, {k: (d, s) for k, s in shard.items()}, {"format": "pt"})
        for k in w.order:
            s = shard[k]
            t = torch.ones(s, dtype=dtype) if len(s) == 1 else torch.randn(s, generator=g, dtype=dtype).mul_(0.02)
            w.write(k, t)
        w.close()
    if len(shards) > 1:
        total = sum(math.prod(s) * dtype.itemsize for s in shapes.values())
        index = {"metadata": {"total_parameters": sum(math.prod(s) for s in shapes.values()), "total_size": total},
                 "weight_map": {k: n for n, sh in zip(names, shards) for k in sh}}
        (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    cfg.save_pretrained(out)
    return out


def tiny_folder(out_dir, model_type: str = "llama", tokenizer: bool = True, max_shard_size=None, **kw) -> Path:
    "A saved tiny model (and a small word-level tokenizer) in `out_dir`, as a user's model folder looks."
    from glu_pruning.models import tiny_model
    out = Path(out_dir)
    m = tiny_model(model_type, **kw)
    m.save_pretrained(out, **({"max_shard_size": max_shard_size} if max_shard_size else {}))
    if tokenizer:
        from tokenizers import Tokenizer, models, pre_tokenizers
        from transformers import PreTrainedTokenizerFast
        vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{w: i + 3 for i, w in enumerate("the cat sat on a mat".split())}}
        t = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
        t.pre_tokenizer = pre_tokenizers.Whitespace()
        PreTrainedTokenizerFast(tokenizer_object=t, unk_token="<unk>", bos_token="<s>", eos_token="</s>").save_pretrained(out)
    return out


def tiny_with_smollm2_tokenizer(out_dir) -> Path:
    "A tiny Llama folder (hidden 64, 160 neurons: 2.5x) with SmolLM2's real tokenizer: CLI runs take seconds."
    from transformers import AutoTokenizer
    from glu_pruning.models import DEFAULT_MODEL, gguf_to_plain, resolve_alias, tiny_model
    out = Path(out_dir)
    tiny_model(vocab=49152).save_pretrained(out)
    AutoTokenizer.from_pretrained(gguf_to_plain(resolve_alias(DEFAULT_MODEL))).save_pretrained(out)
    return out
