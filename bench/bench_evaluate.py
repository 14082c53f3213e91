"""`evaluate` against a reference-style lm-eval loop on a two-variant comparison (SmolLM2-135M-Instruct, quick suite).

The question a user asks twice: "how does 2.4x compare with the baseline?", then "and 2.0x?".
- reference (the paper's notebooks): `HFLM(pretrained=model)` with lm-eval's default batch size (1),
  `simple_evaluate` per task, no store, so the baseline is evaluated again for the second comparison;
- ours: `evaluate` (batch 8 on the HFLM wrapper, explicit max_length) into a result store, so the baseline is
  evaluated once.
Both run the same tasks, items, shots and generation caps from the same offline data in one process (the reference
gets our offline task configs too: this machine cannot reach the Hub), and the tokenizer is passed to both. They
alternate variant by variant, so a change in machine load during the run falls on both.

Prints per task type the items evaluated and items/s of each, the total wall time and its ratio (target ≥ 3x),
and, for scored and for generated tasks apart, the largest difference between the metric values the two produce
(target: identical). Batching changes the last float digits of the logits: scored metrics then agree to ~1e-5,
but a greedy generation can take the other branch of a near-tie, so an IFEval or GSM8K item may differ.

Both score the same seeded random sample of each task's items (`sample_items`) with the same chat-template setting
(on for the generation tasks, whose tokenizer has one).

What makes ours faster (see nbs/10_prefix.ipynb and nbs/11_evaluation.ipynb): the baseline is evaluated once (the store); each shared
context and few-shot block is run once, with vocabulary logits only where scored (`shared_prefix_loglikelihood`,
on CPU); generation runs 16 rows a batch; tasks are loaded once per process; lm-eval's per-task environment
report (pip list in a subprocess) is skipped.

    python bench/bench_evaluate.py [--data-dir DIR] [--tasks arc_challenge,ifeval] [--threads N]
"""
import argparse, os, tempfile, time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def reference_run(model, tok, specs, root, ev):
    "One variant, the paper's way: a fresh HFLM with default batch size, one simple_evaluate per task."
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from glu_pruning.lm_eval_compat import quiet
    from glu_pruning.taskdata import task_source
    with quiet():
        lm = HFLM(pretrained=model, tokenizer=tok)
    rows, secs = {}, {}
    for s in specs:
        conf = ev.cell_config(s, 0, ev.use_chat_template(s.task, tok), None, ev.DEFAULT_MAX_LENGTH)
        src = task_source(replace(s, n_shot=conf["n_shot"]), root)
        if src[0] != "offline": continue
        with quiet(), tempfile.TemporaryDirectory() as tmp:   # the same sampled items as ours (not timed)
            samples = ev._samples(ev._task_manager(s, src, Path(tmp)).load([s.task])["tasks"], s.limit, 0)
        t0 = time.perf_counter()
        with quiet(), tempfile.TemporaryDirectory() as tmp:
            tm = ev._task_manager(s, src, Path(tmp))
            r = simple_evaluate(lm, tasks=[s.task], task_manager=tm, num_fewshot=conf["n_shot"], samples=samples,
                                gen_kwargs=conf["gen_kwargs"], bootstrap_iters=ev.STDERR_BOOTSTRAP_ITERS,
                                apply_chat_template=conf["chat_template"], fewshot_as_multiturn=conf["chat_template"])
        secs[s.task] = time.perf_counter() - t0
        for key, v in r["results"][s.task].items():
            mn = ev._metric_name(key)
            if mn and not isinstance(v, str): rows[(s.task, mn[0])] = v
    return rows, secs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default=os.environ.get("GLU_PRUNING_DATA", "../shared/data"))
    ap.add_argument("--tasks", help="comma-separated subset of the quick suite's tasks")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    a = ap.parse_args()
    import torch
    from transformers.utils import logging
    logging.disable_progress_bar()
    if a.threads: torch.set_num_threads(a.threads)
    from glu_pruning import evaluation as ev
    from glu_pruning.models import load_model
    from glu_pruning.tasks import data_root
    from glu_pruning.slicing import prune
    from glu_pruning.store import Store
    root = data_root(a.data_dir)
    specs = [s for s in ev.SUITES["quick"] if not a.tasks or s.task in a.tasks.split(",")]
    model, tok = load_model("smollm2-135m-instruct", device="cpu")
    variants = {"2.4x": prune(model, ratio=2.4, inplace=False, progress=False).model,
                "2.0x": prune(model, ratio=2.0, inplace=False, progress=False).model}
    print(f"torch threads {torch.get_num_threads()}; tasks: {', '.join(s.task for s in specs)}")

    # The two are interleaved step by step (ours, then the reference, on the same variant), so that a change in the
    # machine's load over the run falls on both. Ours evaluates the baseline once: the second comparison finds it in
    # the store; the reference evaluates it again.
    steps = [("baseline", model), ("2.4x", variants["2.4x"]), ("baseline", model), ("2.0x", variants["2.0x"])]
    t_ours = t_ref = 0.0
    ours, ours_secs, ref, ref_secs = {}, {}, {}, {}
    with tempfile.TemporaryDirectory() as d:
        st = Store(os.path.join(d, "bench.sqlite"))
        for name, m in steps:
            t0 = time.perf_counter()
            df = evaluate_quiet(ev, m, tok, specs, st, root)
            t_ours += time.perf_counter() - t0
            for r in df.itertuples(): ours[(name, r.task, r.metric)] = r.value
            t0 = time.perf_counter()
            rows, secs = reference_run(m, tok, specs, root, ev)
            t_ref += time.perf_counter() - t0
            for k, v in rows.items(): ref[(name, *k)] = v
            for k, v in secs.items(): ref_secs[k] = ref_secs.get(k, 0) + v
        for c in st.cells().itertuples():
            ours_secs[c.task] = ours_secs.get(c.task, 0) + c.seconds
        st.close()

    kinds = {}
    for s in specs:
        if s.task not in ref_secs: continue
        kind = ev.task_info(s.task)[0]
        items = (s.limit or 0) * (len(s.subtasks) if s.subtasks else 1)
        k = kinds.setdefault(kind, [0, 0, 0.0, 0.0])
        k[0] += 3 * items; k[1] += 4 * items; k[2] += ours_secs.get(s.task, 0); k[3] += ref_secs[s.task]
    print(f"\n{'task type':24s} {'ours items':>10s} {'items/s':>8s} {'ref items':>10s} {'items/s':>8s}")
    for kind, (io_, ir, so, sr) in kinds.items():
        print(f"{kind:24s} {io_:10d} {io_ / max(so, 1e-9):8.2f} {ir:10d} {ir / max(sr, 1e-9):8.2f}")
    print(f"\nwall time, two comparisons: ours {t_ours:.1f} s, reference {t_ref:.1f} s -> {t_ref / t_ours:.2f}x faster (target >= 3x)")
    gen = {s.task for s in specs if ev.task_info(s.task)[0] == "generate_until"}
    for label, keep in [("scored tasks", lambda k: k[1] not in gen), ("generated tasks", lambda k: k[1] in gen)]:
        shared = [k for k in ref if k in ours and keep(k)]
        diffs = sorted(((abs(ours[k] - ref[k]) / max(abs(ref[k]), 1e-12), k) for k in shared), reverse=True)
        same = sum(ours[k] == ref[k] for k in shared)
        print(f"metric values, {label}: {same} of {len(shared)} identical; largest relative difference "
              f"{diffs[0][0]:.2e} {diffs[0][1]}" if diffs else f"metric values, {label}: none shared")

def evaluate_quiet(ev, m, tok, specs, st, root):
    return ev.evaluate(m, tok, specs, store=st, data_dir=root, progress=False)


if __name__ == "__main__":
    main()
