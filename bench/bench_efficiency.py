"""Speed of SmolLM2-135M pruned to several ratios, with and without hardware-friendly widths, in one process.

Profiles the baseline (2.67x) and in-memory PPM-pruned copies at each ratio (default 2.4, 2.0, 1.6) with
`round_to` 0 (none) and 64, interleaved round-robin so machine noise hits every variant alike, and prints:
the `profile` table (prefill, decode ms/token with its IQR, tokens/s, peak memory, energy where there is a
counter), each variant's speedup next to the ideal (linear-FLOPs) speedup, and, per ratio, whether rounding
the width to a multiple of 64 changed the speed beyond what its FLOPs predict.

    python bench/bench_efficiency.py --device cpu          # CPU, 1 thread: ~5 min on a quiet 2-core machine
    python bench/bench_efficiency.py --device cuda --dtype bfloat16 --new-tokens 128 --repeats 10   # a GPU
    python bench/bench_efficiency.py --widths 1343 895     # + widths one below 1344/896 (2.4x/1.6x at round_to=64):
                                                           # equal FLOPs, aligned or not
"""
from __future__ import annotations
import argparse, json, sys, time
from pathlib import Path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--ratios", type=float, nargs="*", default=[2.4, 2.0, 1.6])
    p.add_argument("--round-to", type=int, nargs="*", default=[0, 64])
    p.add_argument("--widths", type=int, nargs="*", default=[], help="extra variants at these absolute widths")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    p.add_argument("--prompt-tokens", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: steadier on a shared machine)")
    from glu_pruning.models import add_model_args
    add_model_args(p, model=None)   # --dtype and --device with the defaults and help of every glu-prune command
    p.add_argument("--idle-seconds", type=float, default=10.0)
    p.add_argument("--json", default=None, help="write the profile rows here")
    p.add_argument("--store", default=None, help="add the rows to this result store")
    a = p.parse_args(argv)

    import torch
    from glu_pruning.efficiency import _variants, check_sizes, format_rows, profile, record_profile, width_effect
    check_sizes(a.batch_sizes, a.prompt_tokens, a.new_tokens)   # before loading the model
    from glu_pruning.models import load_model
    from glu_pruning.slicing import prune
    model, tok = load_model(a.model, dtype=a.dtype, device=a.device)
    variants = _variants(model, a.ratios, a.round_to)
    for w in a.widths:
        variants[f"width {w}"] = prune(model, width=w, inplace=False, progress=False).model
    print(f"{len(variants)} variants: {', '.join(variants)}", flush=True)
    t0 = time.perf_counter()
    rows = profile(variants, tok, batch_sizes=a.batch_sizes, prompt_tokens=a.prompt_tokens, new_tokens=a.new_tokens,
                   warmup=a.warmup, repeats=a.repeats, threads=a.threads if a.device == "cpu" else None,
                   idle_seconds=a.idle_seconds)
    for r in rows: r["source"] = a.model
    print(f"\nprofiled in {time.perf_counter() - t0:.0f} s; device {rows[0]['device']} "
          f"({torch.__version__}), {rows[0]['threads']} thread(s); energy: {rows[0]['energy_source']}\n")
    print(format_rows(rows))

    # Rounding: measured speedup of the rounded variant over the unrounded one, against what their FLOPs predict.
    def named(spec):
        return next((n for n, m in variants.items() if getattr(m, "glu_pruning", None) is not None
                     and m.glu_pruning.spec == spec), None)
    pairs = [(named({"ratio": r}), named({"ratio": r, "round_to": 64})) for r in a.ratios]
    pairs = [(x, y) for x, y in pairs if x and y]
    by_width = {m.glu_pruning.width_after if getattr(m, "glu_pruning", None) else None: n for n, m in variants.items()}
    pairs += [(f"width {w}", by_width[w + 1]) for w in a.widths if w + 1 in by_width]   # e.g. 1343 vs 1344 (r64)
    print("\nmeasured vs FLOPs-predicted speedup of b over a (decode ms/token; beyond_flops 1.0 = no effect):")
    print("| a | b | widths | batch | measured | predicted | beyond FLOPs |\n|---|---|---|---|---|---|---|")
    for x, y in pairs:
        for e in width_effect(rows, x, y):
            print(f"| {x} | {y} | {e['width_a']} → {e['width_b']} | {e['batch']} | {e['measured']:.3f} | "
                  f"{e['predicted']:.3f} | {e['beyond_flops']:.3f} |")
    if a.json: Path(a.json).write_text(json.dumps(rows, indent=1))
    if a.store:
        record_profile(a.store, rows)
        print(f"\nrows added to {a.store}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
