"""Recovery after pruning on SmolLM2-135M-Instruct at 2.0x: plain slicing vs least squares (`lsq`) vs distillation.

Prints, in one run, same model, same held-out text (WikiText-2 test documents 30-61 in 512-token windows; the
default calibration passages come from GSM8K/ARC/MMLU training and validation splits, never WikiText):
- PPM at 2.0x: perplexity plain vs lsq, and their ratio with a paired 95 % interval over windows (target lsq ≤ 1/5 plain);
- LAMBADA (OpenAI) greedy last-word accuracy on a seeded sample, plain vs lsq, with a paired 95 % interval;
- each data criterion + lsq against the unpruned model (target: the best ≤ 1.6x); the same with calibration on
  WikiText documents 0-29 (disjoint from the held-out documents), as the issue's measurement did;
- lsq wall time including calibration, with 2 threads (target < 2 min), and its peak extra memory in a fresh
  process (Linux VmHWM) against the model's size (target ≤ 25 %);
- 200 distillation steps from the unpruned teacher, started from the best lsq model, vs lsq alone.

    python bench/bench_recovery.py [--steps 200] [--lambada 1000] [--threads 2]
"""
import argparse, copy, gc, json, math, random, subprocess, sys, time

import torch

P = argparse.ArgumentParser()
P.add_argument("--steps", type=int, default=200, help="distillation steps")
P.add_argument("--lambada", type=int, default=1000, help="LAMBADA items (seeded random sample)")
P.add_argument("--threads", type=int, default=2)
P.add_argument("--calibration", type=int, default=64, help="calibration passages for scoring and lsq")
P.add_argument("--windows", type=int, default=48, help="held-out 512-token windows")
P.add_argument("--peak-worker", default=None, help=argparse.SUPPRESS)   # a criterion: run one measurement


def load():
    from transformers.utils import logging
    logging.disable_progress_bar()
    from glu_pruning.models import load_model
    return load_model("smollm2-135m-instruct", device="cpu")


def held_out(tok, first=30, last=62, n=48, length=512):
    from glu_pruning.tasks import TASKS, data_root
    docs = [json.loads(l)["page"] for l in (data_root() / TASKS["wikitext"].data).open()]
    ids = tok("\n\n".join(docs[first:last]), return_tensors="pt").input_ids[0]
    return ids[: len(ids) // length * length].view(-1, length)[:n], docs


@torch.no_grad()
def window_ll(m, windows):
    return [-m(w[None], labels=w[None]).loss.item() for w in windows]


def lambada_items(tok, n, seed=0):
    from glu_pruning.tasks import TASKS, data_root
    recs = [json.loads(l)["text"] for l in (data_root() / TASKS["lambada_openai"].data).open()]
    out = []
    for t in random.Random(seed).sample(recs, n):
        ctx, word = t.rsplit(" ", 1)
        c, w = tok(ctx).input_ids, tok(" " + word, add_special_tokens=False).input_ids
        out.append((torch.tensor(c + w), len(w)))
    return out


@torch.no_grad()
def lambada_acc(m, items):
    "Greedy last-word accuracy per item (lm-eval's lambada_openai `acc`)."
    res = []
    for ids, nw in items:
        pred = m(ids[None]).logits[0, -nw - 1:-1].argmax(-1)
        res.append(float(torch.equal(pred, ids[-nw:])))
    return res


def fmt_ppl(ll):
    from glu_pruning.store import paired_bootstrap
    r = paired_bootstrap(None, ll, agg="perplexity")
    return f"{r['delta']:8.1f} [{r['ci_low']:.1f}, {r['ci_high']:.1f}]"


def ratio(a, b):
    from glu_pruning.store import paired_bootstrap
    r = paired_bootstrap(a, b, agg="perplexity", ratio=True)
    return r["delta"], f"{r['delta']:.3f}x [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"


def _status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key): return int(line.split()[1]) * 1024


def peak_worker(n_calib, criterion):
    "In a fresh process: load, warm up on a tiny model, reset the peak-RSS mark, score + lsq once, print time and peak."
    from glu_pruning.models import tiny_model
    from glu_pruning.recovery import lsq
    from glu_pruning.scoring import calibration_texts, score
    from glu_pruning.slicing import keep_indices
    model, tok = load()
    base = copy.deepcopy(model); del model   # resident in anonymous memory
    texts = calibration_texts(n_calib)
    def run(m, texts):   # what prune(m, ratio=2.0, criterion="wanda", recover="lsq", ...) does
        sc = score(m, criterion, tokenizer=tok, texts=texts, progress=False)
        k = round(2.0 * m.config.hidden_size)
        return lsq(m, [keep_indices(s, k) for s in sc], tok, texts, progress=False)
    run(tiny_model("llama", vocab=len(tok)), texts[:2])     # first-call costs out of the way
    size = sum(p.numel() * p.element_size() for p in base.parameters())
    gc.collect()
    start = _status("VmRSS")
    open("/proc/self/clear_refs", "w").write("5")
    t = time.perf_counter()
    r = run(base, texts)
    sec = time.perf_counter() - t
    print(json.dumps(dict(peak_extra=_status("VmHWM") - start, model_bytes=size, seconds=sec,
                          tokens=r["calibration_tokens"])))


def main(a):
    from glu_pruning.distill import distill
    from glu_pruning.scoring import calibrate, calibration_texts, score
    from glu_pruning.slicing import keep_indices, prune, target_width
    from glu_pruning.recovery import lsq
    from glu_pruning.store import paired_bootstrap
    torch.set_num_threads(a.threads)
    model, tok = load()
    windows, docs = held_out(tok, n=a.windows)
    calib = calibration_texts(a.calibration)
    wiki_calib = [p.strip() for d in docs[:30] for p in d.split("\n") if len(p.strip()) >= 400
                  and not p.strip().startswith("=")][:a.calibration]
    print(f"SmolLM2-135M-Instruct, 2.0x (1152 of 1536 neurons per layer); held-out: {len(windows)} windows of 512 "
          f"tokens from WikiText-2 test documents 30-61; calibration: {a.calibration} passages of {calib.source}; "
          f"torch threads: {a.threads}\n")
    base = window_ll(model, windows)
    print(f"unpruned                      perplexity {fmt_ppl(base)}")
    k = target_width(1536, 576, ratio=2.0)
    lls, models = {}, {}
    for crit, texts, label in [("ppm", calib, "default"), ("wanda", calib, "default"), ("activation", calib, "default"),
                               ("wanda", wiki_calib, "wikitext 0-29")]:
        stats = calibrate(model, tok, texts, progress=False) if crit != "ppm" else None
        sc = score(model, crit, stats=stats)
        if label == "default":
            plain = prune(model, criterion=crit, scores=sc, ratio=2.0, inplace=False, progress=False).model
            lls[crit, "plain"] = window_ll(plain, windows); models[crit, "plain"] = plain
        rec = copy.deepcopy(model)
        t = time.perf_counter()
        r = lsq(rec, [keep_indices(s, k) for s in sc], tok, texts, progress=False)
        lls[crit, label] = window_ll(rec, windows); models[crit, label] = rec
        for how in (["plain"] if label == "default" else []) + [label]:
            x, s = ratio(base, lls[crit, how])
            print(f"{crit:>10} {('lsq, ' + label) if how != 'plain' else 'plain':>18}  perplexity {fmt_ppl(lls[crit, how])}"
                  f"   vs unpruned {s}" + (f"   lsq {time.perf_counter() - t:.0f} s, {r['calibration_tokens']} tokens"
                                            if how != "plain" else ""))
    x, s = ratio(lls["ppm", "plain"], lls["ppm", "default"])
    print(f"\nPPM lsq / plain perplexity: {s}   (target ≤ 0.2: {'met' if x <= 0.2 else 'NOT met'})")
    best = max(["wanda", "activation"], key=lambda c: sum(lls[c, "default"]))   # equal windows: highest mean log-likelihood
    x, s = ratio(base, lls[best, "default"])
    print(f"best criterion + lsq ({best}, default calibration) vs unpruned: {s}   (target ≤ 1.6: {'met' if x <= 1.6 else 'NOT met'})")
    x, s = ratio(base, lls["wanda", "wikitext 0-29"])
    print(f"wanda + lsq calibrated on WikiText docs 0-29 vs unpruned: {s}   ({'met' if x <= 1.6 else 'NOT met'})")

    items = lambada_items(tok, a.lambada)
    acc = {n: lambada_acc(m, items) for n, m in [("unpruned", model), ("ppm plain", models["ppm", "plain"]),
                                                  ("ppm lsq", models["ppm", "default"]),
                                                  (f"{best} plain", models[best, "plain"]),
                                                  (f"{best} lsq", models[best, "default"])]}
    print(f"\nLAMBADA (OpenAI) greedy last-word accuracy, {a.lambada} seeded random items:")
    for n, v in acc.items():
        r = paired_bootstrap(None, v)
        print(f"  {n:>16}: {r['delta']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]")
    for c in ("ppm", best):
        r = paired_bootstrap(acc[f"{c} plain"], acc[f"{c} lsq"])
        print(f"  {c} lsq − plain: {r['delta']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}] (paired)")

    for m in list(models): 
        if m != (best, "default"): del models[m]
    gc.collect()
    t = time.perf_counter()
    student, rec = distill(copy.deepcopy(models[best, "default"]), model, tok, calibration_texts(256), steps=a.steps,
                           max_length=128, progress=False)
    dl = window_ll(student, windows)
    x, s = ratio(lls[best, "default"], dl)
    print(f"\ndistillation, {a.steps} steps (batch 4 × 128 tokens, lr 5e-5, T=2, MLPs trained) from {best} + lsq: "
          f"{time.perf_counter() - t:.0f} s, loss {rec['loss'][0][1]:.4f} → {rec['final_loss']:.4f}")
    print(f"  perplexity {fmt_ppl(dl)}   vs lsq alone {s}   vs unpruned {ratio(base, dl)[1]}")
    del student, models, model
    gc.collect()

    for crit in ("ppm", "wanda"):
        out = subprocess.run([sys.executable, __file__, "--peak-worker", crit, "--calibration", str(a.calibration),
                              "--threads", str(a.threads)], capture_output=True, text=True)
        if out.returncode: print(out.stderr[-2000:]); continue
        w = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{'' if crit == 'wanda' else chr(10)}{crit} + lsq in a fresh process (scores, calibration, 30 solves; {w['tokens']} "
              f"tokens, {a.threads} threads): {w['seconds']:.1f} s (target < 120 s); peak extra memory "
              f"{w['peak_extra'] / 2**20:.0f} MiB = {w['peak_extra'] / w['model_bytes']:.0%} of the model's "
              f"{w['model_bytes'] / 2**20:.0f} MiB (target ≤ 25 %)")


if __name__ == "__main__":
    a = P.parse_args()
    if a.peak_worker:
        torch.set_num_threads(a.threads); peak_worker(a.calibration, a.peak_worker)
    else: main(a)
