"The figures: they render from the shipped paper data alone (no model, no torch), and overlay a user's run."
import io, subprocess, sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from glu_pruning.plots import (HEADLINE, correlation, normalise, paper_architecture, paper_results, param_counts,
                               plot_correlation, plot_dichotomy, plot_kept, plot_params, plot_scores, plot_tasks,
                               survival)

ROOT = Path(__file__).resolve().parents[1]


def png(fig) -> bytes:
    buf = io.BytesIO(); fig.savefig(buf, format="png"); return buf.getvalue()


def user_run(tasks=("mmlu", "arc_challenge", "ifeval", "truthfulqa_mc2", "wikitext"), ratios=(2.67, 2.4, 2.0, 1.6)):
    "A tidy table shaped like `glu_pruning.store.results`: a SmolLM2-like sweep with known trends."
    rng, rows = np.random.default_rng(0), []
    for r in ratios:
        for t in tasks:
            m = HEADLINE[t]
            frac = (2.67 - r) / 1.07
            v = 20 * (1 + 3 * frac) if m == "word_perplexity" else (0.4 * (1 - 0.5 * frac) if t in ("mmlu", "arc_challenge")
                                                                     else 0.3 * (1 + 0.3 * frac))
            rows.append(dict(model="HuggingFaceTB/SmolLM2-135M-Instruct", ratio=r, criterion="none" if r == 2.67 else "ppm",
                             task=t, metric=m, value=v, stderr=None if "perplexity" in m else 0.02,
                             group=None))
    return pd.DataFrame(rows)


def test_no_model_needed():
    "Every paper figure renders in a fresh interpreter that never imports torch or transformers."
    code = ("import sys, matplotlib; matplotlib.use('Agg')\n"
            "from glu_pruning.plots import *\n"
            "for f in (plot_dichotomy(), plot_tasks(), plot_correlation(), plot_params()): f.savefig(__import__('io').BytesIO())\n"
            "bad = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
            "assert not bad, bad\nprint('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-3000:]


def test_paper_data_shipped():
    d = paper_results()
    assert len(d) == 252 and set(d.source) == {"paper"}
    assert {"model", "ratio", "task", "metric", "value", "stderr", "group", "criterion"} <= set(d.columns)
    assert d[d.metric.str.contains("perplexity")].stderr.isna().all()
    a = paper_architecture()
    assert len(a) == 14 and a.params_millions.max() == 3212.75


def test_paper_correlations():
    c = correlation(paper_results()).set_index("model").round(3)
    assert (c.r["meta-llama/Llama-3.2-3B"], c.p["meta-llama/Llama-3.2-3B"]) == (-0.864, 0.012)
    pooled = correlation(paper_results().assign(criterion=lambda d: d.model, model="both"))  # 14 configurations
    assert pooled.n.iloc[0] == 14 and round(pooled.r.iloc[0], 3) == -0.627


def test_normalise_inverts_perplexity_and_keeps_baseline_exact():
    n = normalise(user_run()).set_index(["task", "ratio"])
    assert n.pct[("wikitext", 2.67)] == 100 and n.pct_se[("mmlu", 2.67)] == 0
    assert n.pct[("wikitext", 1.6)] == pytest.approx(25.0)          # perplexity ×4 → 25 % of baseline
    assert n.pct[("mmlu", 1.6)] == pytest.approx(50.0)
    assert n.pct_se[("mmlu", 1.6)] > 0


def test_user_run_with_paper_overlay():
    df = user_run()
    fig = plot_dichotomy(df)
    assert len(fig.axes) == 1 and fig.axes[0].get_title() == "SmolLM2-135M-Instruct"
    labels = [l.get_label() for l in fig.axes[0].lines]
    assert "fragile (mean)" in labels and "robust, paper Llama-3.2-3B" in labels
    assert len(png(plot_dichotomy(df, paper=False))) > 10_000
    f = plot_tasks(df)
    titles = [a.get_title() for a in f.axes if a.get_visible()]
    assert len(titles) == 13 and any(t.startswith("ifeval") for t in titles)
    f = plot_tasks(df, paper=False)
    assert sum(a.get_visible() for a in f.axes) == 5
    c = correlation(df).set_index("model")
    assert c.r.iloc[0] == pytest.approx(-1.0)                          # built to be perfectly anti-correlated
    assert len(plot_correlation(df).axes[0].get_legend().get_texts()) == 3


def test_missing_tasks_in_a_run_still_plot():
    df = user_run()
    df = df[~((df.task == "ifeval") & (df.ratio == 2.0))]              # one cell missing
    assert len(png(plot_dichotomy(df, paper=False))) > 10_000
    assert len(png(plot_tasks(df, paper=False))) > 10_000


def test_errors_say_what_to_do():
    with pytest.raises(ValueError, match="choose one of"): paper_results("70B")
    with pytest.raises(ValueError, match="no results for task"): plot_tasks(tasks=["squad"])
    with pytest.raises(ValueError, match="no configuration has both"):
        correlation(user_run(tasks=("mmlu",)))


def test_layer_figures_on_a_tiny_model():
    from glu_pruning.models import tiny_model
    from glu_pruning.scoring import score
    from glu_pruning.slicing import prune
    m = tiny_model(hidden=64, intermediate=160, layers=3)
    s = score(m, "ppm", progress=False)
    surv = survival(s, 64, [2.0, 1.0])
    rep = prune(m, ratio=1.0, scores=s, inplace=False, progress=False)
    assert [np.flatnonzero(surv[i] == 1.0).tolist() for i in range(3)] == rep.keep
    assert (~np.isnan(surv)).sum(1).tolist() == [128] * 3
    assert len(png(plot_scores(s, hidden=64, ratios=[2.0, 1.0]))) > 5_000
    assert len(png(plot_kept(s, 64, [2.0, 1.0]))) > 5_000
    pc = param_counts(m, [2.5, 2.0, 1.0])
    assert pc.params.tolist()[1:] == [rep_params(m, r) for r in (2.0, 1.0)]
    assert len(png(plot_params(pc.assign(model="tiny")))) > 5_000


def rep_params(m, r):
    from glu_pruning.slicing import prune
    return prune(m, ratio=r, inplace=False, progress=False).params_after


def test_groups_agree_with_the_evaluation_suites():
    "plots reads the one table of task facts (glu_pruning.tasks), and every task of the paper's suite is in it."
    pytest.importorskip("lm_eval")
    from glu_pruning import evaluation, plots, tasks
    assert plots.TASK_GROUPS is tasks.TASK_GROUPS and plots.HEADLINE is tasks.HEADLINE and plots.CHANCE is tasks.CHANCE
    assert not hasattr(plots, "TASK_ITEMS")
    assert {s.task for s in evaluation.SUITES["paper"]} <= set(tasks.TASKS)


def _colours(fig) -> dict:
    "{legend label: colour} of every labelled line in a figure."
    from matplotlib.colors import to_hex
    out = {}
    for ax in fig.axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            out[label] = to_hex((h[0] if isinstance(h, tuple) else h).get_color())   # an errorbar: its data line
    return out


def test_a_model_keeps_its_colour_from_figure_to_figure():
    "Your run, Llama-3.2-1B and -3B: one colour each in the per-task, correlation and parameter figures."
    from glu_pruning.plots import PAPER_COLORS, RUN_COLORS, model_colors
    df = user_run()
    tasks, corr = _colours(plot_tasks(df)), _colours(plot_correlation(df))
    params = _colours(plot_params(pd.DataFrame(dict(model="HuggingFaceTB/SmolLM2-135M-Instruct", ratio=[2.67, 2.0],
                                                    params=[135e6, 115e6]))))
    pick = lambda cs, prefix: {c for l, c in cs.items() if l.startswith(prefix)}
    for prefix, want in (("SmolLM2-135M-Instruct", RUN_COLORS[0]),
                         ("Llama-3.2-1B (paper)", PAPER_COLORS["meta-llama/Llama-3.2-1B"]),
                         ("Llama-3.2-3B (paper)", PAPER_COLORS["meta-llama/Llama-3.2-3B"])):
        assert pick(tasks, prefix) == pick(corr, prefix) == pick(params, prefix) == {want.lower()}, prefix
    # your own run of a paper model is yours (green), drawn apart from the paper's (orange), in every figure
    mine = df.assign(model="meta-llama/Llama-3.2-1B")
    t = _colours(plot_tasks(mine, paper="1B"))
    assert t == {"Llama-3.2-1B": RUN_COLORS[0].lower(), "Llama-3.2-1B (paper)": PAPER_COLORS["meta-llama/Llama-3.2-1B"].lower()}
    c = correlation(pd.concat([mine.assign(source="yours"), paper_results("1B")]))
    assert sorted(c.source) == ["paper", "yours"] and set(c.n) == {4, 7}
    assert model_colors([("yours", "a"), ("yours", "b")]) == {("yours", "a"): RUN_COLORS[0], ("yours", "b"): RUN_COLORS[1]}


def test_dichotomy_legend_names_every_mark():
    "Group means, their band, thin task lines, filled/hollow markers, the tasks left out and the paper's line styles."
    from glu_pruning.evidence import evidence
    ev = evidence(ROOT / "nbs" / "08_evidence.sqlite").assign(model="SmolLM2")
    legend = [t.get_text() for t in plot_dichotomy(ev, paper="1B").axes[-1].get_legend().get_texts()]
    assert legend == ["fragile tasks: group mean", "robust tasks: group mean", "95 % band of the group mean",
                      "thin line: one task", "filled: change significant (95 % paired)", "hollow: change not significant",
                      "tasks at chance: left out (named below)", "paper Llama-3.2-1B: group means (dashed)"]
    plain = [t.get_text() for t in plot_dichotomy(user_run(), paper=False, tasks=False).axes[-1].get_legend().get_texts()]
    assert plain == ["fragile tasks: group mean", "robust tasks: group mean", "95 % band of the group mean"]


def test_criteria_figure_colours_criteria_and_styles_recovery():
    "A hand-made table with a `recover` column: colour per criterion, solid/dashed/dotted per recovery, said in the legend."
    from glu_pruning.plots import CRITERION_COLORS, plot_criteria
    base = user_run()
    rows = [base[base.criterion == "none"].assign(recover="none")]
    for crit, drop in (("ppm", 0.1), ("random", 0.3)):
        for rec, gain in (("none", 0.0), ("lsq", 0.05), ("distill", 0.1)):
            rows.append(base[base.criterion == "ppm"].assign(criterion=crit, recover=rec,
                                                             value=lambda d: d.value * (1 - drop + gain)))
    fig = plot_criteria(pd.concat(rows, ignore_index=True))
    lines = {l.get_label(): (l.get_color(), l.get_linestyle()) for l in fig.axes[0].get_lines()
             if not l.get_label().startswith("_")}
    assert lines == {"ppm": (CRITERION_COLORS["ppm"], "-"), "ppm + lsq": (CRITERION_COLORS["ppm"], "--"),
                     "ppm + distill": (CRITERION_COLORS["ppm"], ":"), "random": (CRITERION_COLORS["random"], "-"),
                     "random + lsq": (CRITERION_COLORS["random"], "--"), "random + distill": (CRITERION_COLORS["random"], ":")}
    leg = fig.axes[1].get_legend()
    assert [t.get_text() for t in leg.get_texts()] == ["ppm", "random", "plain slicing (solid)",
                                                       "least-squares down_proj (dashed)", "distilled (dotted)",
                                                       "95 % band of the group mean"]
    assert leg.get_title().get_text() == "colour: criterion; line: recovery"
    # no `recover` column: all plain slicing, no recovery entries
    plain = plot_criteria(pd.concat(rows, ignore_index=True).query("recover == 'none'").drop(columns="recover"))
    assert [t.get_text() for t in plain.axes[1].get_legend().get_texts()] == ["ppm", "random", "95 % band of the group mean"]
