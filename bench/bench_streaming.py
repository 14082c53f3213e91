"""Peak memory of streaming vs in-memory pruning on a multi-GB synthetic Llama checkpoint.

Builds a sharded bf16 checkpoint with the real Llama-3.2-3B shapes (fewer layers, so it fits a small disk),
prunes it to the same ratio once with `prune_checkpoint` (streaming) and once in memory (load, `prune`,
`save_pruned`), each in its own process so its peak resident memory (VmHWM) is that job's own, checks that the outputs hold
the same tensors, prints a table and the ratios, and deletes everything it wrote.

    python bench/bench_streaming.py                 # 3B layout, 16 layers: a 4.0 GB checkpoint
    python bench/bench_streaming.py --layers 4      # ~1.6 GB, quicker
"""
from __future__ import annotations
import argparse, json, os, shutil, subprocess, sys, tempfile, time
from pathlib import Path

CHILD = {
    # a process that only imports what the jobs import: the runtime's own share of every peak below
    "floor": """
import torch, transformers, glu_pruning.safetensors, glu_pruning.streaming, glu_pruning.slicing
from transformers import AutoModelForCausalLM
""",
    "streaming": """
from glu_pruning.streaming import prune_checkpoint
prune_checkpoint(SRC, OUT, ratio=RATIO, progress=False)
""",
    "in_memory": """
import torch
from transformers import AutoModelForCausalLM
from glu_pruning.slicing import prune, save_pruned
m = AutoModelForCausalLM.from_pretrained(SRC, dtype=torch.bfloat16)
prune(m, ratio=RATIO, progress=False)
save_pruned(m, None, OUT)
""",
}


def run_child(kind: str, src: Path, out: Path, ratio: float, child: dict = CHILD, preamble: str = "",
              env: dict | None = None) -> dict:
    "Run `child[kind]` in a fresh Python process (after `preamble`); its wall time and peak RSS (MB)."
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent through fork and exec.
    code = (f"import json, re, time\nSRC, OUT, RATIO = {str(src)!r}, {str(out)!r}, {ratio!r}\n{preamble}"
            f"t0 = time.perf_counter()\n{child[kind]}\n"
            "hwm = int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))\n"
            "print(json.dumps(dict(wall_s=time.perf_counter() - t0, peak_rss_mb=hwm / 1024)))")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", **(env or {}))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if res.returncode: sys.exit(f"{kind} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def same_tensors(a: Path, b: Path) -> bool:
    "Do the checkpoints in folders `a` and `b` hold the same tensor names with identical values (one at a time)?"
    import torch
    from glu_pruning.safetensors import open_checkpoint, read_tensor
    ta, tb = open_checkpoint(a).tensors, open_checkpoint(b).tensors
    return set(ta) == set(tb) and all(torch.equal(read_tensor(ta[k]), read_tensor(tb[k])) for k in ta)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--layout", default="llama-3.2-3b")
    p.add_argument("--layers", type=int, default=16, help="decoder layers (the 3B model has 28; 16 → 4.0 GB)")
    p.add_argument("--shard-mb", type=int, default=1024)
    p.add_argument("--ratio", type=float, default=2.4)
    p.add_argument("--dir", default=None, help="scratch folder (default: a temporary one, deleted afterwards)")
    a = p.parse_args(argv)

    import torch
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))   # the helpers the tests share
    from helpers import LLAMA_LAYOUTS, synthetic_checkpoint
    L = {**LLAMA_LAYOUTS[a.layout], "num_hidden_layers": a.layers}
    h, i, v = L["hidden_size"], L["intermediate_size"], L["vocab_size"]
    kv = L["num_key_value_heads"] * L["head_dim"]
    per_layer = 3 * h * i + 2 * h * h + 2 * h * kv + 2 * h
    size = 2 * (a.layers * per_layer + v * h * (1 if L["tie_word_embeddings"] else 2) + h)
    root = Path(a.dir or tempfile.mkdtemp(prefix="bench_streaming_"))
    root.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(root).free
    need = 3 * size + (1 << 30)  # source + two pruned copies + slack
    if free < need:
        sys.exit(f"needs {need / 2**30:.1f} GiB free in {root}, has {free / 2**30:.1f} GiB; use --layers or --dir")
    try:
        t0 = time.perf_counter()
        src = synthetic_checkpoint(root / "src", a.layout, max_shard_size=a.shard_mb << 20, num_hidden_layers=a.layers)
        gb = sum(f.stat().st_size for f in src.glob("*.safetensors")) / 1e9
        print(f"synthetic {a.layout} checkpoint, {a.layers} layers, {gb:.2f} GB bf16 in "
              f"{len(list(src.glob('*.safetensors')))} shards, built in {time.perf_counter() - t0:.0f} s")
        res = {}
        for kind in ("floor", "streaming", "in_memory"):
            res[kind] = run_child(kind, src, root / kind, a.ratio)
            print(f"  {kind:<10} peak RSS {res[kind]['peak_rss_mb']:8.0f} MB   wall {res[kind]['wall_s']:6.1f} s", flush=True)
        equal = same_tensors(root / "streaming", root / "in_memory")
        mlp_mb = 3 * h * i * 2 / 2**20
        print(f"\n| job | peak RSS (MB) | % of checkpoint | wall (s) |\n|---|---|---|---|")
        for kind in ("floor", "streaming", "in_memory"):
            r = res[kind]
            print(f"| {kind.replace('_', ' ')} | {r['peak_rss_mb']:.0f} | {r['peak_rss_mb'] * 2**20 / (gb * 1e9):.0%} | {r['wall_s']:.1f} |")
        s, m, f = (res[k]["peak_rss_mb"] for k in ("streaming", "in_memory", "floor"))
        print(f"\ncheckpoint {gb:.2f} GB; one layer's MLP {mlp_mb:.0f} MB")
        print(f"streaming peak / checkpoint size = {s * 2**20 / (gb * 1e9):.2f} (target < 0.25)")
        print(f"streaming peak / in-memory peak  = {s / m:.2f}; above the import floor: {s - f:.0f} MB vs {m - f:.0f} MB")
        print(f"outputs hold identical tensors: {equal}")
        return 0 if equal else 1
    finally:
        if not a.dir: shutil.rmtree(root, ignore_errors=True)
        else:
            for d in ("src", "floor", "streaming", "in_memory"): shutil.rmtree(root / d, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
