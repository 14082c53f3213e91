"""Scoring + slicing speed and memory on SmolLM2-135M-Instruct, side by side with optipfair (the paper's pruner).

Prints, in one run on one machine:
- whether glu_pruning and optipfair keep the same neurons for PPM at 10 % and 40 % (they must);
- wall time of score+slice for each, and of a bare PPM pass over the gate/up weights (the memory-bandwidth
  floor), interleaved in one process, best of N;
- peak extra resident memory while pruning, each method in its own process (Linux: VmHWM after clear_refs),
  against the model's own size.
Targets: same neurons; ≥ 5x faster than optipfair; within 3x of the bare PPM pass; peak ≤ model size + 10 %.

    python bench/bench_prune.py [--repeats 7] [--model smollm2-135m-instruct] [--percent 40]
"""
import argparse, copy, gc, json, subprocess, sys, time

import torch


def load(name):
    from transformers.utils import logging
    logging.disable_progress_bar()
    from glu_pruning.models import load_model
    return load_model(name, device="cpu")[0]


def ours(model, percent):
    from glu_pruning.slicing import prune
    prune(model, percent=percent, progress=False)


def optipfair(model, percent):
    from optipfair import prune_model
    # as the paper's code called it (return_stats=True deep-copies the model for its statistics)
    prune_model(model, pruning_type="MLP_GLU", neuron_selection_method="PPM", pruning_percentage=percent,
                show_progress=False, return_stats=True)


@torch.no_grad()
def bare_ppm(model, percent):
    "The floor: one PPM pass over every gate and up matrix, nothing else."
    from glu_pruning.models import find_mlps
    from glu_pruning.scoring import ppm
    for m in find_mlps(model): ppm(m.w_gate, m.w_up)


METHODS = dict(ours=ours, optipfair=optipfair, bare_ppm=bare_ppm)


def _status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key): return int(line.split()[1]) * 1024


def peak_worker(method, model_name, percent):
    "In a fresh process: load, warm up, reset the peak-RSS mark, prune once, print the peak above the start."
    import logging; logging.disable(logging.INFO)
    from glu_pruning.models import tiny_model
    base = copy.deepcopy(load(model_name))  # resident in anonymous memory (a fresh load maps its file lazily)
    METHODS[method](tiny_model("llama"), percent)          # first-call costs (kernels, imports) out of the way
    size = sum(p.numel() * p.element_size() for p in base.parameters())
    gc.collect()
    start = _status("VmRSS")
    open("/proc/self/clear_refs", "w").write("5")           # VmHWM := current RSS
    METHODS[method](base, percent)
    print(json.dumps(dict(peak_extra=_status("VmHWM") - start, model_bytes=size)))


def same_neurons(base, percent):
    from glu_pruning.models import find_mlps
    a, b = copy.deepcopy(base), copy.deepcopy(base)
    ours(a, percent); optipfair(b, percent)
    return all(torch.equal(x.w_gate, y.w_gate) and torch.equal(x.w_up, y.w_up) and torch.equal(x.w_down, y.w_down)
               for x, y in zip(find_mlps(a), find_mlps(b)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--percent", type=float, default=40)
    ap.add_argument("--peak-worker", choices=list(METHODS))
    a = ap.parse_args()
    if a.peak_worker: return peak_worker(a.peak_worker, a.model, a.percent)
    import logging; logging.disable(logging.INFO)

    base = load(a.model)
    print(f"# bench_prune: {a.model}, PPM, best of {a.repeats}, torch threads {torch.get_num_threads()}")
    for p in (10, 40):
        print(f"same neurons as optipfair at {p:>2} %: {same_neurons(base, p)}")

    times = {m: [] for m in METHODS}
    for _ in range(a.repeats):                                 # interleaved: drift and noise hit all alike
        for meth, fn in METHODS.items():
            m = copy.deepcopy(base); gc.collect()
            t = time.perf_counter(); fn(m, a.percent); times[meth].append(time.perf_counter() - t)
            del m
    best = {m: min(ts) for m, ts in times.items()}

    peaks = {}
    for meth in METHODS:
        out = subprocess.run([sys.executable, __file__, "--peak-worker", meth, "--model", a.model, "--percent",
                              str(a.percent)], capture_output=True, text=True, check=True).stdout
        peaks[meth] = json.loads(out.strip().splitlines()[-1])
    size = peaks["ours"]["model_bytes"]
    print(f"\nmodel size {size / 2**20:.0f} MiB; pruning {a.percent:g} %")
    print(f"{'method':<10} {'best s':>8} {'median s':>9} {'peak extra MiB':>15} {'peak / model':>13}")
    for meth in METHODS:
        ts = sorted(times[meth]); pk = peaks[meth]["peak_extra"]
        print(f"{meth:<10} {best[meth]:>8.3f} {ts[len(ts) // 2]:>9.3f} {pk / 2**20:>15.0f} {pk / size:>13.2f}")
    print(f"\nours vs optipfair: {best['optipfair'] / best['ours']:.1f}x faster (target ≥ 5x)")
    print(f"ours vs bare PPM pass: {best['ours'] / best['bare_ppm']:.2f}x the floor (target ≤ 3x)")
    print(f"peak memory while pruning: model + {peaks['ours']['peak_extra'] / size:.1%} (target ≤ +10 %); "
          f"optipfair: model + {peaks['optipfair']['peak_extra'] / size:.1%}")


if __name__ == "__main__":
    main()
