"The ratio explorer: the in-browser figure's slider data, and the ipywidgets panel driven from code."
import numpy as np
import pandas as pd
import pytest

from glu_pruning.explorer import LivePanel, _menu, explorer, explorer_figure, save_explorer
from glu_pruning.plots import HEADLINE


def user_run(ratios=(2.67, 2.4, 2.0, 1.6), criteria=("ppm", "random")):
    rows = []
    for crit in criteria:
        for r in ratios:
            for t in ("mmlu", "arc_challenge", "ifeval", "truthfulqa_mc2"):
                drop = (2.67 - r) * (0.3 if crit == "ppm" else 0.6)
                v = 0.4 - 0.1 * drop if t in ("mmlu", "arc_challenge") else 0.3 + 0.05 * drop
                rows.append(dict(model="SmolLM2-135M-Instruct", ratio=r, criterion="none" if r == 2.67 else crit,
                                 task=t, metric=HEADLINE[t], value=v, stderr=0.01))
    return pd.DataFrame(rows).drop_duplicates(["ratio", "criterion", "task"])


def bar_trace(fig, model, criterion, group):
    return next(k for k, t in enumerate(fig.data)
                if t.type == "bar" and t.meta == dict(model=model, criterion=criterion, group=group))


def shown(fig, visible):
    "The (model, criterion, group) views of the traces a `visible` list shows."
    return {(t.meta["model"], t.meta["criterion"], t.meta["group"]) for t, v in zip(fig.data, visible) if v}


def test_figure_has_a_slider_per_model_and_a_menu():
    fig = explorer_figure(user_run())
    models = fig.layout.meta["models"]
    assert models == ["SmolLM2-135M-Instruct", "Llama-3.2-1B (paper)", "Llama-3.2-3B (paper)"]
    assert fig.layout.meta["criteria"] == [["ppm", "random"], ["ppm"], ["ppm"]]
    assert len(fig.layout.sliders) == 3 and [s.visible for s in fig.layout.sliders] == [True, False, False]
    assert [st.label for st in fig.layout.sliders[0].steps] == ["2.67x", "2.4x", "2x", "1.6x"]
    menus = {m.name: m for m in fig.layout.updatemenus}     # the menus are named, and addressed by name
    assert list(menus) == ["model", "tasks", "criterion"]
    model_menu, tasks_menu, crit_menu = menus["model"], menus["tasks"], menus["criterion"]
    assert [b.label for b in model_menu.buttons] == models
    assert [b.label for b in tasks_menu.buttons] == ["all tasks", "fragile tasks", "robust tasks"]
    assert [b.label for b in crit_menu.buttons] == ["PPM", "random"]
    # what opens: the first model, all tasks, PPM, and the ratio marker
    opened = shown(fig, [t.visible for t in fig.data])
    assert opened == {(0, "ppm", "fragile"), (0, "ppm", "robust"), (0, None, None)}
    for i, b in enumerate(model_menu.buttons):             # each model entry shows its own traces only
        vis, lay = b.args
        assert len(vis["visible"]) == len(fig.data)
        assert {m for m, _, _ in shown(fig, vis["visible"])} == {i}
        assert [lay[f"sliders[{j}].visible"] for j in range(3)] == [j == i for j in range(3)]
        assert [c["label"] for c in lay[_menu("criterion", "buttons")]] == (["PPM", "random"] if i == 0 else ["PPM"])
    bar = fig.data[bar_trace(fig, 0, "ppm", "fragile")]
    step = fig.layout.sliders[0].steps[-1]                 # 1.6x on the user's model
    traces = list(step.args[2])
    at = dict(zip(bar.y, step.args[0]["x"][traces.index(bar_trace(fig, 0, "ppm", "fragile"))]))
    assert at["mmlu"] == pytest.approx(100 * (0.4 - 0.1 * 0.321) / 0.4, abs=0.01)
    rnd = dict(zip(bar.y, step.args[0]["x"][traces.index(bar_trace(fig, 0, "random", "fragile"))]))
    assert rnd["mmlu"] == pytest.approx(100 * (0.4 - 0.1 * 0.642) / 0.4, abs=0.01)   # random: twice the drop
    # a step rewrites only its own model's bars (every criterion and group) and its marker
    assert {fig.data[k].meta["model"] for k in traces} == {0} and len(traces) == 2 * 2 + 1
    assert step.args[0]["x"][-1] == [1.6, 1.6]


def test_menus_chain_left_to_right():
    "model -> tasks -> criterion: each button carries the menus to its right, so a chain of clicks lands on one view."
    fig = explorer_figure(user_run())
    model_b = fig.layout.updatemenus[0].buttons[0]          # pick the user's model...
    fragile = model_b.args[1][_menu("tasks", "buttons")][1]  # ...then "fragile tasks" in the menu it set up...
    assert fragile["label"] == "fragile tasks"
    assert shown(fig, fragile["args"][0]["visible"]) == {(0, "ppm", "fragile"), (0, None, None)}
    rows = fragile["args"][1]["yaxis2.categoryarray"]
    assert set(rows) == {"mmlu", "arc_challenge"}            # the bar panel shows the group's tasks only
    random = fragile["args"][1][_menu("criterion", "buttons")][1]   # ...then "random" in the criterion menu it set up
    assert _menu("criterion", "buttons") == "updatemenus[2].buttons"   # plotly's own path, built from the name
    assert random["label"] == "random" and fragile["args"][1][_menu("criterion", "active")] == 0
    assert shown(fig, random["args"][0]["visible"]) == {(0, "random", "fragile"), (0, None, None)}
    paper_b = fig.layout.updatemenus[0].buttons[1]          # the paper's 1B: one criterion, its own task groups
    robust = paper_b.args[1][_menu("tasks", "buttons")][2]
    assert shown(fig, robust["args"][0]["visible"]) == {(1, "ppm", "robust"), (1, None, None)}
    assert "ifeval" in robust["args"][1]["yaxis2.categoryarray"] and "mmlu" not in robust["args"][1]["yaxis2.categoryarray"]


def test_figure_runs_tell_apart_by_source():
    "Two runs of one model (say a quick sweep and a criteria sweep) are two menu entries, in the order given."
    df = pd.concat([user_run(criteria=("ppm",)).assign(source="quick sweep"),
                    user_run(ratios=(2.67, 2.0), criteria=("ppm", "l2")).assign(source="criteria sweep")])
    fig = explorer_figure(df, paper=False)
    assert fig.layout.meta["models"] == ["SmolLM2-135M-Instruct (quick sweep)", "SmolLM2-135M-Instruct (criteria sweep)"]
    assert fig.layout.meta["criteria"] == [["ppm"], ["ppm", "l2"]]
    assert [st.label for st in fig.layout.sliders[1].steps] == ["2.67x", "2x"]


def test_save_explorer_is_self_contained(tmp_path):
    p = save_explorer(tmp_path / "x" / "explorer.html", user_run(), paper="3B")
    text = p.read_text()
    assert "cdn.plot.ly" not in text[:5000] and "Plotly.newPlot" in text and "SmolLM2-135M-Instruct" in text


def test_widget_updates_on_value_changes():
    w = explorer(user_run())
    assert w.model.value == "SmolLM2-135M-Instruct"
    assert list(w.criterion.options) == ["ppm", "random"] and w.criterion.value == "ppm"
    assert w.ratio.value == 2.4
    t0, f0 = w.table.value, w.figure.value
    assert "ifeval" in t0 and len(f0) > 10_000
    w.ratio.value = 1.6
    assert w.table.value != t0 and w.figure.value != f0
    ppm_table = w.table.value
    w.criterion.value = "random"
    assert w.ratio.value == 1.6 and w.table.value != ppm_table  # same ratio, the other criterion's numbers
    w.group.value = "fragile"
    assert "mmlu" in w.table.value and "ifeval" not in w.table.value
    w.model.value = "meta-llama/Llama-3.2-1B"
    assert [l for l, _ in w.ratio.options][:2] == ["4x", "3.6x"]
    assert w.criterion.options == ("ppm",)


def test_widget_state_lives_in_its_class():
    "The panel is an `ExplorerPanel` (state and handlers in one class), shown as its widgets; a baseline row may say NaN."
    from glu_pruning.explorer import ExplorerPanel
    df = user_run(criteria=("ppm",))
    df.loc[df.criterion == "none", "criterion"] = np.nan              # the unpruned rows, marked by a missing criterion
    w = explorer(df, paper=False)
    assert isinstance(w, ExplorerPanel) and not hasattr(w.box, "model")
    assert list(w.criterion.options) == ["ppm"] and [l for l, _ in w.ratio.options] == ["2.67x", "2.4x", "2x", "1.6x"]
    assert "application/vnd.jupyter.widget-view+json" in w._repr_mimebundle_()


def test_widget_says_what_is_missing():
    df = user_run(criteria=("ppm",))
    df = df[~((df.task == "ifeval") & (df.ratio == 2.0))]
    w = explorer(df, paper=False)
    w.ratio.value = 2.0
    assert "missing at 2x" in w.status.value and "ifeval" in w.status.value


def test_widget_errors():
    with pytest.raises(ValueError, match="nothing to explore"): explorer(None, paper=False)
    with pytest.raises(FileNotFoundError, match="no result store"): explorer("/no/such/store.sqlite")


def test_live_mode_prunes_and_caches(smollm2):
    w = explorer(user_run(criteria=("ppm",)), paper=False, live=smollm2, max_new_tokens=8)
    assert "pruned to 2.4x" in w.live.out.value
    w.ratio.value = 1.6
    out = w.live.out.value
    assert "pruned to 1.6x (922 neurons/layer)" in out and "baseline" in out
    base, now = w.live.result(None), w.live.result(1.6)
    assert now["ppl"] > base["ppl"] and now["params"] < base["params"]
    assert set(w.live.cache) == {None, 2.4, 1.6}
    w.ratio.value = 2.67                                   # the model's own ratio: the unpruned model, no pruning
    assert "unpruned" in w.live.out.value and set(w.live.cache) == {None, 2.4, 1.6}


def evidence_run():
    "`user_run` as an evidence table: arc_challenge at chance, only the 1.6x changes significant."
    df = user_run(criteria=("ppm",)).assign(group=lambda d: d.task.map({"mmlu": "fragile", "arc_challenge": "fragile",
                                                                        "ifeval": "robust", "truthfulqa_mc2": "robust"}))
    base = df[df.criterion == "none"].set_index("task").value
    d = df.value - df.task.map(base)
    return df.assign(n=200, ci_low=df.value - 0.05, ci_high=df.value + 0.05, delta=d, delta_ci_low=d - 0.04,
                     delta_ci_high=d + 0.04, significant=(df.ratio == 1.6), at_chance=df.task == "arc_challenge")


def test_figure_draws_changes_that_are_not_significant_hollow_and_hatched():
    fig = explorer_figure(evidence_run(), paper=False)
    line = next(t for t in fig.data if t.type == "scatter" and t.name == "mmlu")
    sym = dict(zip(line.x, line.marker.symbol))
    assert sym[1.6] == "circle" and sym[2.0] == "circle-open" and sym[2.4] == "circle-open" and sym[2.67] == "circle"
    k = bar_trace(fig, 0, "ppm", "fragile")
    assert fig.layout.sliders[0].active == 1                                   # opens at 2.4x: not significant
    assert list(fig.data[k].marker.pattern.shape) == ["/", "/"] and "n.s." in fig.data[k].text[0]
    step = fig.layout.sliders[0].steps[3]                                      # 1.6x: significant, solid bars
    assert step.args[0]["marker.pattern.shape"][list(step.args[2]).index(k)] == ["", ""]
    plain = explorer_figure(user_run(), paper=False)                           # no `significant` column: all solid
    assert set(plain.data[bar_trace(plain, 0, "ppm", "fragile")].marker.pattern.shape) == {""}


def test_figure_leaves_at_chance_tasks_out_of_group_means_and_says_so():
    fig = explorer_figure(evidence_run(), paper=False)
    means = {t.name: t for t in fig.data if t.type == "scatter" and "mean" in t.name and "band" not in t.name}
    assert set(means) == {"fragile tasks (mean, without arc_challenge: at chance)", "robust tasks (mean)"}
    mmlu = next(t for t in fig.data if t.type == "scatter" and t.name == "mmlu")
    fragile = means["fragile tasks (mean, without arc_challenge: at chance)"]
    assert list(fragile.y) == pytest.approx(sorted(mmlu.y))
    # the mean's 95 % band: one mmlu row per ratio, so mean ± 1.96 standard errors of that one task
    band = next(t for t in fig.data if t.name == "fragile mean: 95 % band")
    lo, hi = np.array(fragile.customdata, dtype=float).T
    assert band.fill == "toself" and np.all(lo <= np.array(fragile.y)) and np.all(np.array(fragile.y) <= hi)
    assert sorted(band.y) == pytest.approx(sorted(np.r_[lo, hi][~np.isnan(np.r_[lo, hi])]))


def test_figure_can_open_on_the_paper_with_your_run_one_menu_away():
    fig = explorer_figure(evidence_run(), first="paper")
    assert fig.layout.meta["models"] == ["Llama-3.2-1B (paper)", "Llama-3.2-3B (paper)", "SmolLM2-135M-Instruct"]
    assert {t.meta["model"] for t in fig.data if t.visible} == {0} and fig.layout.sliders[0].visible
    paper_lines = [t for t in fig.data if t.meta["model"] == 0 and t.type == "scatter" and t.meta["group"]]
    assert {s for t in paper_lines for s in np.atleast_1d(t.marker.symbol) if s is not None} <= {"circle"}
    assert fig.layout.updatemenus[0].buttons[2].label == "SmolLM2-135M-Instruct"


def test_widget_draws_an_evidence_table_and_the_paper_beside_it():
    w = explorer(evidence_run())
    assert w.model.value == "SmolLM2-135M-Instruct" and len(w.figure.value) > 10_000
    f0 = w.figure.value
    w.model.value = "meta-llama/Llama-3.2-1B"                                  # no intervals: drawn as before
    assert w.figure.value != f0 and "146.5 %" in w.table.value


def test_a_run_with_recovery_offers_plain_and_repaired_cuts_side_by_side():
    "Rows with `recover` = lsq become menu entries of their own ('PPM + least squares'); the panel gets a recovery menu."
    plain = user_run(criteria=("ppm",)).assign(recover="none")
    fixed = plain[plain.criterion == "ppm"].assign(recover="lsq", value=lambda d: d.value + 0.01)
    fig = explorer_figure(pd.concat([plain, fixed]), paper=False)
    assert fig.layout.meta["criteria"] == [["ppm", "ppm+lsq"]]
    crit_menu = {m.name: m for m in fig.layout.updatemenus}["criterion"]
    assert [b.label for b in crit_menu.buttons] == ["PPM", "PPM + least squares"]
    shown_lsq = shown(fig, crit_menu.buttons[1].args[0]["visible"])
    assert {c for _, c, _ in shown_lsq} == {"ppm+lsq", None}          # the repaired cut's traces (and the marker)
    w = explorer(pd.concat([plain, fixed]), paper=False)
    assert w.recover.layout.display is None and [v for _, v in w.recover.options] == ["none", "lsq"]
    w.ratio.value = 1.6
    plain_table = w.table.value
    w.recover.value = "lsq"
    assert w.table.value != plain_table and "lsq" not in w.current().criterion.unique()   # the baseline + the lsq rows
    assert set(w.current().recover) == {"none", "lsq"} and set(w.current()[w.current().ratio < 2.6].recover) == {"lsq"}
    w1 = explorer(plain, paper=False)
    assert w1.recover.layout.display == "none"                        # nothing repaired: no recovery menu
