"The ratio explorer: the in-browser figure's slider data, and the ipywidgets panel driven from code."
import numpy as np
import pandas as pd
import pytest

from glu_pruning.explorer import LivePanel, explorer, explorer_figure, save_explorer
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


def test_figure_has_a_slider_per_model_and_a_menu():
    fig = explorer_figure(user_run())
    models = fig.layout.meta["models"]
    assert models == ["SmolLM2-135M-Instruct", "Llama-3.2-1B (paper)", "Llama-3.2-3B (paper)"]
    assert len(fig.layout.sliders) == 3 and [s.visible for s in fig.layout.sliders] == [True, False, False]
    assert [st.label for st in fig.layout.sliders[0].steps] == ["2.67x", "2.4x", "2x", "1.6x"]
    buttons = fig.layout.updatemenus[0].buttons
    assert [b.label for b in buttons] == models
    for i, b in enumerate(buttons):                        # each menu entry shows its model's traces only
        vis = b.args[0]["visible"]
        assert len(vis) == len(fig.data) and vis[fig.layout.meta["bars"][i]]
        assert sum(vis[j] for j in fig.layout.meta["bars"]) == 1
    bar = fig.data[fig.layout.meta["bars"][0]]
    step = fig.layout.sliders[0].steps[-1]                 # 1.6x on the user's model
    at = dict(zip(bar.y, step.args[0]["x"][0]))
    assert at["mmlu"] == pytest.approx(100 * (0.4 - 0.1 * 0.321) / 0.4, abs=0.01)
    assert list(step.args[2]) == [fig.layout.meta["bars"][0]]   # a step rewrites only its own bar trace


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
