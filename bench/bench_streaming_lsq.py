"""Peak memory of streaming least-squares recovery vs in-memory least-squares recovery, on a synthetic checkpoint.

Builds a sharded bf16 Llama checkpoint with random weights (`synthetic_checkpoint` from tests/helpers.py, with
SmolLM2's tokenizer copied in), then prunes it to the same ratio with `recover="lsq"` twice, each in its own process
so that each peak resident memory (VmHWM) is its own:

- streaming: `prune_checkpoint(..., recover="lsq")`, one decoder layer in memory at a time;
- in memory: load in float32, `prune(..., recover="lsq")`, cast to bf16, `save_pruned` (the streamed run's
  reference: it computes in float32 too and writes the checkpoint's bf16).

Both compute the calibration pass in float32 on the CPU with one thread. It checks that the outputs hold the same
tensors, prints a table and the ratios, and deletes what it wrote.

    python bench/bench_streaming_lsq.py                     # 6 layers, 0.38 GB: about a minute per job on 2 busy cores
    python bench/bench_streaming_lsq.py --layers 12         # 0.57 GB: about two minutes per job

Measured on a shared 2-core machine with --layers 12: streaming 1,032 MB, in memory 2,038 MB (ratio 0.51; the
import floor 260 MB), identical outputs.
"""
from __future__ import annotations
import argparse, json, os, random, shutil, subprocess, sys, tempfile, time
from pathlib import Path

CHILD = {
    "floor": """
import torch, transformers, glu_pruning.streaming, glu_pruning.recovery, glu_pruning.slicing
from transformers import AutoModelForCausalLM, AutoTokenizer
""",
    "streaming_lsq": """
from glu_pruning.streaming import prune_checkpoint
prune_checkpoint(SRC, OUT, ratio=RATIO, recover="lsq", texts=TEXTS, dtype="float32", device="cpu", progress=False)
""",
    "in_memory_lsq": """
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from glu_pruning.slicing import prune, save_pruned
tok = AutoTokenizer.from_pretrained(SRC)
if tok.pad_token is None: tok.pad_token = tok.eos_token
m = AutoModelForCausalLM.from_pretrained(SRC, dtype=torch.float32)
prune(m, ratio=RATIO, recover="lsq", tokenizer=tok, texts=TEXTS, progress=False)
save_pruned(m.to(torch.bfloat16), tok, OUT)
""",
}


def run_child(kind: str, src: Path, out: Path, ratio: float, texts: Path) -> dict:
    "`bench_streaming.run_child` with the calibration texts read first, on one thread."
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_streaming import run_child as run
    return run(kind, src, out, ratio, child=CHILD, preamble=f"TEXTS = json.loads(open({str(texts)!r}).read())\n",
               env=dict(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1"))


def max_rel_diff(a: Path, b: Path) -> float:
    "The largest relative difference between same-named tensors of the checkpoints in `a` and `b` (inf if names differ)."
    import torch
    from glu_pruning.safetensors import open_checkpoint, read_tensor
    ta, tb = open_checkpoint(a).tensors, open_checkpoint(b).tensors
    if set(ta) != set(tb): return float("inf")
    worst = 0.0
    for k in ta:
        x, y = read_tensor(ta[k]).float(), read_tensor(tb[k]).float()
        worst = max(worst, ((x - y).abs().max() / y.abs().max().clamp_min(1e-30)).item())
    return worst


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--intermediate", type=int, default=4096)
    p.add_argument("--vocab", type=int, default=49152, help="at least SmolLM2's 49,152 (its tokenizer is used)")
    p.add_argument("--tokens", type=int, default=512, help="calibration tokens (about)")
    p.add_argument("--shard-mb", type=int, default=100)
    p.add_argument("--ratio", type=float, default=2.4)
    p.add_argument("--dir", default=None, help="scratch folder (default: a temporary one, deleted afterwards)")
    a = p.parse_args(argv)

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))   # the helpers the tests share
    from transformers import AutoTokenizer
    from helpers import synthetic_checkpoint
    from glu_pruning.models import DEFAULT_MODEL, gguf_to_plain, resolve_alias
    root = Path(a.dir or tempfile.mkdtemp(prefix="bench_streaming_lsq_"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        heads = a.hidden // 64
        src = synthetic_checkpoint(root / "src", "llama-3.2-1b", max_shard_size=a.shard_mb << 20, num_hidden_layers=a.layers,
                                   hidden_size=a.hidden, intermediate_size=a.intermediate, num_attention_heads=heads,
                                   num_key_value_heads=max(1, heads // 4), head_dim=64, vocab_size=a.vocab,
                                   tie_word_embeddings=False)
        tok = AutoTokenizer.from_pretrained(gguf_to_plain(resolve_alias(DEFAULT_MODEL)))
        tok.save_pretrained(src)
        rng = random.Random(0)   # calibration passages of about 100 tokens; their content does not matter for memory
        words = [w for w in tok.get_vocab() if w.isalpha() and len(w) > 3][:2000]
        texts = [" ".join(rng.choice(words) for _ in range(100)) for _ in range(max(1, a.tokens // 100))]
        ntok = sum(min(256, len(tok(t).input_ids)) for t in texts)
        (root / "texts.json").write_text(json.dumps(texts))
        gb = sum(f.stat().st_size for f in src.glob("*.safetensors")) / 1e9
        print(f"synthetic Llama checkpoint: {a.layers} layers, hidden {a.hidden}, intermediate {a.intermediate}, vocab "
              f"{a.vocab} (untied), {gb:.2f} GB bf16 in {len(list(src.glob('*.safetensors')))} shards, built in "
              f"{time.perf_counter() - t0:.0f} s; {ntok} calibration tokens in {len(texts)} passages")
        res = {}
        for kind in ("floor", "streaming_lsq", "in_memory_lsq"):
            res[kind] = run_child(kind, src, root / kind, a.ratio, root / "texts.json")
            print(f"  {kind:<14} peak RSS {res[kind]['peak_rss_mb']:8.0f} MB   wall {res[kind]['wall_s']:6.1f} s", flush=True)
        diff = max_rel_diff(root / "streaming_lsq", root / "in_memory_lsq")
        h, i, v = a.hidden, a.intermediate, a.vocab
        kv = max(1, heads // 4) * 64
        layer_mb = (3 * h * i + 2 * h * h + 2 * h * kv + 2 * h) * 4 / 2**20
        print(f"\n| job | peak RSS (MB) | % of checkpoint | wall (s) |\n|---|---|---|---|")
        for kind in ("floor", "streaming_lsq", "in_memory_lsq"):
            r = res[kind]
            print(f"| {kind.replace('_', ' ')} | {r['peak_rss_mb']:.0f} | {r['peak_rss_mb'] * 2**20 / (gb * 1e9):.0%} | {r['wall_s']:.1f} |")
        s, m, f = (res[k]["peak_rss_mb"] for k in ("streaming_lsq", "in_memory_lsq", "floor"))
        print(f"\ncheckpoint {gb:.2f} GB bf16; in float32: one decoder layer {layer_mb:.0f} MB, the embedding "
              f"{v * h * 4 / 2**20:.0f} MB, one Gram matrix {i * i * 8 / 2**20:.0f} MB (float64)")
        print(f"streaming lsq peak / in-memory lsq peak = {s / m:.2f}; above the import floor: {s - f:.0f} MB vs {m - f:.0f} MB "
              f"(ratio {(s - f) / (m - f):.2f})")
        print(f"largest relative difference between the two outputs' tensors: {diff:.2g}")
        return 0 if diff <= 1e-2 else 1   # bf16 outputs: equal, or one bf16 rounding step apart
    finally:
        if not a.dir: shutil.rmtree(root, ignore_errors=True)
        else:
            for d in ("src", "floor", "streaming_lsq", "in_memory_lsq"): shutil.rmtree(root / d, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
