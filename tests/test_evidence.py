"Evidence: intervals with known answers, chance-respecting normalisation, group means, budget planning and sequential runs."
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from glu_pruning.evidence import (_toy_store, evidence, group_means, halfwidth, item_sd, measure_costs, normalised,
                                  plan_items, sequential)
from glu_pruning.store import Store, paired_bootstrap

ROOT = Path(__file__).resolve().parents[1]
QUICK_STORE = ROOT / "nbs" / "08_evidence.sqlite"   # the SmolLM2 quick sweep the issue was filed on


def test_paired_interval_with_a_known_answer(tmp_path):
    # 400 items: the baseline right on all, the variant on the first 280, so delta = -0.30 exactly and the paired
    # differences are -1 on 30 % of items: the interval is -0.30 ± 1.96·sqrt(0.3·0.7/400) ≈ ±0.045
    ll = -np.linspace(2, 4, 30)
    st = _toy_store(tmp_path / "toy.sqlite", {"arc_easy": (np.ones(400), (np.arange(400) < 280).astype(float)),
                                               "wikitext": (ll, ll - math.log(3), np.full(30, 40.0))})
    ev = evidence(st, n_boot=4000)
    st.close()
    cut = ev[ev.criterion == "ppm"].set_index("task")
    half = 1.96 * math.sqrt(0.3 * 0.7 / 400)
    assert cut.loc["arc_easy", "delta"] == pytest.approx(-0.3)
    assert cut.loc["arc_easy", "delta_ci_low"] == pytest.approx(-0.3 - half, abs=0.01)
    assert cut.loc["arc_easy", "delta_ci_high"] == pytest.approx(-0.3 + half, abs=0.01)
    assert cut.loc["arc_easy", "value"] == pytest.approx(0.7) and cut.loc["arc_easy", "n"] == 400
    # a perplexity that triples on every document: the change is a ratio of exactly 3, with no spread
    assert cut.loc["wikitext", ["delta", "delta_ci_low", "delta_ci_high"]].astype(float).tolist() == pytest.approx([3, 3, 3])
    assert cut.significant.all() and not ev.at_chance.any()
    assert halfwidth(ev[ev.criterion == "ppm"]).tolist() == pytest.approx([0.0, half], abs=0.01)


def test_evidence_pools_item_draws_and_pairs_on_shared_items(tmp_path):
    # the pruned variant is scored in two blocks (limit 2 and a 'sample' block); the baseline once on items 0..5
    st = Store(tmp_path / "s.sqlite")
    st.add_variant("b", "m", 2.0, "none")
    st.add_variant("p", "m", 1.0, "ppm", base_fingerprint="b")
    rec = lambda fp, cfg, docs, vals: st.record(fp, "piqa", cfg, [dict(metric="acc_norm", value=float(np.mean(vals)), agg="mean")],
                                                 [dict(metric="acc_norm", doc=d, value=v) for d, v in zip(docs, vals)])
    rec("b", dict(n_shot=0, limit=6), range(6), [1, 1, 1, 1, 0, 0])
    rec("p", dict(n_shot=0, limit=2), [0, 1], [0, 0])
    rec("p", dict(n_shot=0, limit=2, sample_block=1), [2, 3, 7], [0, 0, 1])   # doc 7: the baseline has no score
    rec("p", dict(n_shot=5, limit=2), [0, 1], [1, 1])                        # other shots: another measurement
    full = evidence(st)
    st.close()
    ev = full.set_index("criterion")
    p = ev.loc["ppm"]
    assert p.n == 5 and p.value == pytest.approx(0.2)          # the fuller pool (0-shot) of five items
    assert p.delta == pytest.approx(-1.0)                      # on the four shared items: 1,1,1,1 -> 0,0,0,0
    assert list(full.columns) == ["model", "ratio", "criterion", "recover", "task", "metric", "group", "n", "value", "ci_low",
                                "ci_high", "delta", "delta_ci_low", "delta_ci_high", "significant", "at_chance"]


def test_evidence_on_the_smollm2_sweep_of_the_issue():
    ev = evidence(QUICK_STORE)
    assert len(ev) == 5 * 11                                  # 5 variants × 11 tasks with data, one headline each
    assert not ev.duplicated(["model", "ratio", "criterion", "task", "metric"]).any()
    at = set(ev[ev.at_chance].task)
    assert at == {"arc_challenge", "mmlu", "boolq", "winogrande", "piqa", "truthfulqa_mc1", "truthfulqa_mc2"}
    lam = ev[(ev.task == "lambada_openai") & (ev.criterion == "ppm")]
    assert lam.significant.all() and (lam.delta_ci_low > 1).all()    # the perplexity collapse is real
    one = ev[ev.n < 2]
    assert one.ci_low.isna().all() and not one.significant.any()     # one item: no interval, nothing claimed


def test_chance_normalisation_on_a_hand_made_table():
    hand = pd.DataFrame(dict(model="m", ratio=[3.0, 2.0, 3.0, 2.0, 3.0, 2.0],
                             criterion=["none", "ppm"] * 3, group="fragile",
                             task=["boolq", "boolq", "winogrande", "winogrande", "gsm8k", "gsm8k"],
                             metric=["acc"] * 4 + ["exact_match,flexible-extract"] * 2,
                             value=[0.822, 0.722, 0.70, 0.50, 0.40, 0.30],
                             delta=[0.0, -0.1, 0.0, -0.2, 0.0, -0.1], delta_ci_low=[0.0, -0.15, 0.0, -0.3, 0.0, -0.2],
                             delta_ci_high=[0.0, -0.05, 0.0, -0.1, 0.0, 0.0], at_chance=False))
    n = normalised(hand).set_index(["task", "ratio"])
    # boolq: chance is the majority class 0.622, margin 0.2; losing 0.1 keeps half of it (the plain ratio: 88 %)
    assert n.loc[("boolq", 2.0), "pct"] == pytest.approx(50.0)
    assert n.loc[("boolq", 2.0), ["pct_low", "pct_high"]].astype(float).tolist() == pytest.approx([25.0, 75.0])
    assert n.loc[("winogrande", 2.0), "pct"] == pytest.approx(0.0)           # fell to chance: nothing kept
    assert n.loc[("gsm8k", 2.0), "pct"] == pytest.approx(75.0)               # no chance level: the plain ratio
    b = normalised(hand, "baseline").set_index(["task", "ratio"])
    assert b.loc[("boolq", 2.0), "pct"] == pytest.approx(100 * 0.722 / 0.822)
    assert b.loc[("winogrande", 2.0), "pct"] == pytest.approx(100 * 0.5 / 0.7)
    g = group_means(hand).set_index("ratio")
    assert g.loc[2.0, "pct"] == pytest.approx((50 + 0 + 75) / 3) and g.loc[2.0, "k"] == 3
    g2 = group_means(hand.assign(at_chance=hand.task == "winogrande")).set_index("ratio")
    assert g2.loc[2.0, "pct"] == pytest.approx((50 + 75) / 2) and g2.loc[2.0, "left_out"] == "winogrande"
    assert g2.loc[2.0, "ci_low"] < g2.loc[2.0, "pct"] < g2.loc[2.0, "ci_high"]


def test_item_sd_from_a_run_and_from_priors():
    sd = item_sd(evidence(QUICK_STORE))
    assert 0.3 < sd["piqa"] < 1.0 and sd["gsm8k"] == 0.5     # GSM8K: all zeros, no spread seen: the prior


def _costs(**item_s):
    return pd.DataFrame(dict(task=list(item_s), fixed_s=1.0, item_s=list(item_s.values())))


def test_plan_spends_on_cheap_items_and_respects_the_budget():
    p = plan_items(_costs(piqa=0.05, arc_challenge=0.1, ifeval=4.0, mmlu=0.1), "5m", variants=3, at_chance=["mmlu"])
    n = p.set_index("task").n
    assert 0.97 * 300 <= p.attrs["planned"] <= 300
    assert n.piqa > n.arc_challenge > n.mmlu and n.ifeval < n.arc_challenge / 5
    assert p.seconds.sum() == pytest.approx(p.attrs["planned"])
    small = plan_items(_costs(piqa=0.05), "5m", pool={"piqa": 100})
    assert small.n.iloc[0] == 100 and small.attrs["planned"] < 300     # capped by the items there are
    with pytest.raises(ValueError, match="raise the budget"):
        plan_items(_costs(piqa=0.05, ifeval=4.0), 3, variants=3)


def test_sequential_stops_early_on_a_large_effect_and_goes_on_for_a_null_one():
    rng = np.random.default_rng(1)
    seen = {"collapse": ([], []), "null": ([], [])}
    def run_block(task, k):
        a = np.ones(40) if task == "collapse" else rng.integers(0, 2, 40).astype(float)
        b = np.zeros(40) if task == "collapse" else rng.integers(0, 2, 40).astype(float)
        seen[task][0].extend(a); seen[task][1].extend(b)
    def hws():
        return {t: (lambda r: (r["ci_high"] - r["ci_low"]) / 2)(paired_bootstrap(a, b, n_boot=500))
                for t, (a, b) in seen.items() if len(a) > 1}
    out = sequential(run_block, hws, ["collapse", "null"], target=0.05, blocks={"collapse": 30, "null": 12},
                     progress=False).set_index("task")
    assert out.loc["collapse", "blocks"] == 1 and out.loc["collapse", "stopped"] == "target"
    assert out.loc["null", "blocks"] == 12 and out.loc["null", "stopped"] == "items"
    assert out.loc["null", "halfwidth"] > 0.05


def test_sequential_resumes_without_redoing_blocks():
    stored, scored = set(), []
    def run_block(task, k):              # a store: a block already there is not scored again
        if (task, k) in stored: return
        stored.add((task, k)); scored.append((task, k))
    hws = lambda: {"t": 1.0 / max(1, len(stored)) ** 0.5}
    ticks = iter(range(10_000))
    first = sequential(run_block, hws, ["t"], target=0.2, budget=7, clock=lambda: next(ticks), progress=False)
    assert first.stopped.iloc[0] == "budget" and 0 < first.blocks.iloc[0] < 25
    done = len(scored)
    again = sequential(run_block, hws, ["t"], target=0.2, progress=False)
    assert again.stopped.iloc[0] == "target" and len(stored) == 25      # 1/sqrt(25) = 0.2
    assert len(scored) == 25 and scored[:done] == sorted(stored)[:done]  # every block scored exactly once


@pytest.fixture(scope="module")
def tok(smollm2):
    return smollm2[1]


def test_planning_on_a_tiny_model_stays_within_its_budget(tok, data_dir, tmp_path):
    "Time a few items per task, plan for 40 s over two variants, run the plan: it takes at most 20 % more."
    from glu_pruning.evaluation import SUITES, evaluate
    from glu_pruning.models import tiny_model
    models = [tiny_model("llama", hidden=64, intermediate=128, layers=2, vocab=len(tok), seed=s) for s in (0, 1)]
    specs = {s.task: s for s in SUITES["quick"]}
    tasks = ["arc_challenge", "piqa", "winogrande", "lambada_openai", "gsm8k"]
    specs["gsm8k"] = replace(specs["gsm8k"], max_gen_toks=16)
    kw = dict(progress=False, batch_size=8)
    run = lambda t, n: evaluate(models[0], tok, [replace(specs[t], limit=n)], store=":memory:", **kw)
    t0 = time.perf_counter()
    costs = measure_costs(run, tasks, sizes={t: (4, 16) if t == "gsm8k" else (8, 32) for t in tasks}, warmup=0,
                          model=models[0], progress=False)      # as a sweep times them
    pilot = time.perf_counter() - t0
    budget = 40.0
    plan = plan_items(costs, budget, variants=2).set_index("task")
    assert plan.n.gt(2).all(), plan
    t0 = time.perf_counter()
    with Store(tmp_path / "run.sqlite") as st:
        for m in models:
            evaluate(m, tok, [replace(specs[t], limit=int(plan.n[t])) for t in tasks], store=st, **kw)
        ev = evidence(st)
    took = time.perf_counter() - t0
    assert took <= 1.2 * budget, (took, plan, costs)
    assert took >= 0.25 * budget, (took, plan, costs)         # and it spends the budget, not a fraction of it
    assert (ev.n.astype(int).values == plan.n.reindex(ev.task).values).all()    # each task ran its planned items
    print(f"pilot {pilot:.1f} s; planned {plan.n.to_dict()}; ran in {took:.1f} s of a {budget:.0f} s budget")


# --- the evidence where a reader sees it: report, figure, sweep budget ---

def test_report_results_csv_is_the_evidence_table(tmp_path):
    import shutil
    from glu_pruning.report import report
    db = tmp_path / "quick.sqlite"
    shutil.copy(QUICK_STORE, db)
    page = report(db, explorer=False)
    csv = pd.read_csv(page.with_name("results.csv"))
    assert list(csv.columns) == ["model", "ratio", "criterion", "recover", "task", "metric", "group", "n", "value", "ci_low",
                                 "ci_high", "delta", "delta_ci_low", "delta_ci_high", "significant", "at_chance"]
    assert len(csv) == 5 * 11 and csv.significant.dtype == bool
    md = page.with_name("report.md").read_text()
    assert "## Precision" in md and "half-width reached" in md and "## Group means" in md
    assert "Left out as at chance" in md and "arc_challenge" in md.split("Left out as at chance")[1]
    assert "1.6e+03× [569×, 4.68e+03×] *" in md          # LAMBADA at 2.0x: a significant ratio, with its interval


def test_dichotomy_draws_non_significant_changes_hollow_and_names_what_it_left_out():
    from glu_pruning.evidence import NORMALISATIONS
    from glu_pruning.plots import plot_dichotomy
    ev = evidence(QUICK_STORE).assign(model="SmolLM2")
    fig = plot_dichotomy(ev, paper=False, perplexity=True)
    ax = fig.axes[0]
    assert ax.get_ylabel() == NORMALISATIONS["chance"]
    from matplotlib.collections import PathCollection
    dots = [c for c in ax.collections if isinstance(c, PathCollection)]   # the per-task markers (scatter)
    hollow = [c for c in dots if c.get_facecolors().size == 0]
    filled = [c for c in dots if c.get_facecolors().size > 0]
    n_hollow = sum(len(c.get_offsets()) for c in hollow)
    shown = ev[~ev.at_chance]
    assert n_hollow == (~shown.significant).sum() and sum(len(c.get_offsets()) for c in filled) == shown.significant.sum()
    text = " ".join(t.get_text() for t in fig.texts)
    assert "left out at chance" in text and "winogrande" in text
    assert plot_dichotomy(ev, paper=False, norm="baseline").axes[0].get_ylabel() == NORMALISATIONS["baseline"]


def test_sweep_with_a_time_budget_fits_it_and_a_rerun_reuses_the_plan(tok, data_dir, tmp_path):
    import json
    from glu_pruning.models import tiny_model
    from glu_pruning.sweep import PLAN_FILE, sweep
    model = tiny_model("llama", hidden=64, intermediate=128, layers=2, vocab=len(tok))
    kw = dict(ratios=(1.5, 1.0), suite="quick:arc_challenge,piqa,winogrande", out=tmp_path / "run", progress=False)
    t0 = time.perf_counter()
    df = sweep(model, tok, budget=90, **kw)
    took = time.perf_counter() - t0
    plan = json.loads((tmp_path / "run" / PLAN_FILE).read_text())
    assert took <= 1.2 * 90, (took, plan)
    assert set(plan["n"]) == {"arc_challenge", "piqa", "winogrande"} and plan["variants"] == 3
    assert df.groupby("task").n.first().to_dict() == plan["n"]          # every variant ran the planned items
    t0 = time.perf_counter()
    again = sweep(model, tok, budget=90, **kw)
    assert again.attrs["evaluated"] == 0 and time.perf_counter() - t0 < 20   # no second pilot, nothing redone
    with pytest.raises(ValueError, match="not both"):
        sweep(model, tok, budget=90, limit=5, **kw)


def test_a_budget_too_small_for_every_task_leaves_out_the_costliest_when_asked():
    from glu_pruning.evidence import plan_items
    costs = pd.DataFrame(dict(task=["piqa", "arc_challenge", "ifeval"], fixed_s=[1.0, 1.0, 5.0],
                              item_s=[0.2, 0.3, 60.0]))
    with pytest.raises(ValueError, match="cannot run 3 tasks"):
        plan_items(costs, "2m", variants=5)                       # 5 variants × 2 IFEval items = 600 s alone
    plan = plan_items(costs, "2m", variants=5, drop=True)
    assert plan.attrs["dropped"] == ["ifeval"] and list(plan.task) == ["piqa", "arc_challenge"]
    assert plan.attrs["planned"] <= 120 * 1.2 and (plan.n >= 2).all()
    assert plan_items(costs, "2h", variants=5, drop=True).attrs["dropped"] == []
