"Sweeps end to end: resuming after SIGKILL, reports of incomplete runs, the CLI and the demo with the small budget."
import json, os, signal, sqlite3, subprocess, sys, time
from pathlib import Path

import pandas as pd
import pytest

from glu_pruning.store import Store, results
from glu_pruning.report import DEMO_BUDGETS, missing_cells, report
from glu_pruning.sweep import MANIFEST_FILE, STORE_FILE, plan

ROOT = Path(__file__).resolve().parents[1]


def glu(*args, cwd=None, timeout=900):
    return subprocess.run([sys.executable, "-m", "glu_pruning.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)


def test_plan_baseline_first_and_dedup():
    cells = plan(576, 1536, ratios=[2.67, 2.4, 2.4001, 1.6], percents=[10], criteria=["ppm", "random"])
    assert [(c["criterion"], c["width"]) for c in cells] == [
        ("none", 1536), ("ppm", 1383), ("ppm", 922), ("random", 1383), ("random", 922)]
    with pytest.raises(ValueError, match="must be above 0"): plan(576, 1536, ratios=[-1])


SCRIPT = """
import sys
from glu_pruning.sweep import sweep
df = sweep("smollm2-135m-instruct", ratios=[2.0, 1.6], suite=["truthfulqa_mc1", "arc_challenge"], limit=3,
           out=sys.argv[1], progress=False)
print("EVALUATED", df.attrs["evaluated"], "REUSED", df.attrs["reused"])
"""


def finished_cells(db: Path) -> pd.DataFrame:
    if not db.exists(): return pd.DataFrame(columns=["fingerprint", "task", "finished"])
    con = sqlite3.connect(db, timeout=30)
    try: return pd.read_sql_query("SELECT fingerprint, task, finished FROM cells ORDER BY id", con)
    except pd.errors.DatabaseError: return pd.DataFrame(columns=["fingerprint", "task", "finished"])
    finally: con.close()


def test_sweep_resumes_after_sigkill(data_dir, tmp_path):
    "Kill a real sweep process mid-run; the rerun completes only the missing cells and keeps the finished ones."
    run = tmp_path / "run"
    env = dict(os.environ, GLU_PRUNING_DATA=str(data_dir))
    p = subprocess.Popen([sys.executable, "-c", SCRIPT, str(run)], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    db, deadline = run / STORE_FILE, time.time() + 600
    while time.time() < deadline and p.poll() is None and len(finished_cells(db)) < 2: time.sleep(0.5)
    assert p.poll() is None, f"the sweep ended before it could be killed: {p.communicate()}"
    p.send_signal(signal.SIGKILL)
    p.wait()
    before = finished_cells(db)
    assert 2 <= len(before) < 6, before
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(run)], env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"EVALUATED {6 - len(before)} REUSED {len(before)}" in r.stdout, r.stdout
    after = finished_cells(db)
    assert len(after) == 6
    kept = before.merge(after, on=["fingerprint", "task"], suffixes=("_before", "_after"))
    assert len(kept) == len(before) and (kept.finished_before == kept.finished_after).all()  # not redone
    manifest = json.loads((run / MANIFEST_FILE).read_text())
    assert missing_cells(results(db), manifest).empty


def fake_run(tmp_path, tasks=("mmlu", "arc_challenge", "ifeval", "truthfulqa_mc2"), skip=()):
    "A run directory whose store was written through the Store API (no model), with some cells left out."
    run = tmp_path / "fake"
    run.mkdir()
    cells = plan(576, 1536, ratios=[2.4, 2.0, 1.6])
    metric = {"mmlu": "acc", "arc_challenge": "acc_norm", "ifeval": "prompt_level_strict_acc", "truthfulqa_mc2": "acc"}
    with Store(run / STORE_FILE) as st:
        for i, c in enumerate(cells):
            c.update(fingerprint=f"fp{i}", params=135_000_000 - i * 10_000_000)
            st.add_variant(c["fingerprint"], "smollm2-135m-instruct", ratio=c["ratio"], criterion=c["criterion"],
                           spec=c["spec"], base_fingerprint="fp0")
            for t in tasks:
                if (c["ratio"], t) in skip: continue
                v = 0.4 - 0.05 * i if t in ("mmlu", "arc_challenge") else 0.3 + 0.02 * i
                st.record(c["fingerprint"], t, {"n_shot": 0}, [dict(metric=metric[t], value=v, stderr=0.02)],
                          group="fragile" if t in ("mmlu", "arc_challenge") else "robust")
    manifest = dict(model="smollm2-135m-instruct", label="SmolLM2 (fake)", model_type="llama", hidden=576, width=1536,
                    own_ratio=1536 / 576, suite="quick", tasks=list(tasks), criteria=["ppm"], cells=cells,
                    unavailable={"hellaswag": "hellaswag: validation.jsonl is missing"}, store=STORE_FILE)
    (run / MANIFEST_FILE).write_text(json.dumps(manifest))
    return run


def test_report_with_missing_tasks_says_what_is_missing(tmp_path):
    run = fake_run(tmp_path, skip={(2.0, "ifeval"), (1.6007, "ifeval"), (1.6007, "mmlu")})
    page = report(run, explorer=False)
    md = (page.parent / "report.md").read_text()
    assert "3 of 16 (variant, task) cells have no result yet" in md
    assert "ifeval: ppm 2x, ppm 1.6x" in md and "mmlu: ppm 1.6x" in md
    assert "**hellaswag**: not run, its data is not available" in md
    figs = sorted(p.name for p in (page.parent / "figures").iterdir())
    assert figs == ["correlation.png", "dichotomy.png", "params.png", "tasks.png"]
    html = page.read_text()
    assert html.count("data:image/png;base64") == 4 and "What is missing" in html
    csv = pd.read_csv(page.parent / "results.csv")
    assert len(csv) == 16 - 3 and set(csv.model) == {"SmolLM2 (fake)"}


def test_report_says_a_task_the_budget_left_out_is_not_a_missing_cell(tmp_path):
    "A budgeted run's plan.json names the tasks it dropped: the report says so and does not ask for a rerun."
    from glu_pruning.sweep import PLAN_FILE
    run = fake_run(tmp_path, skip={(r, "ifeval") for r in (2.6667, 2.401, 2.0, 1.6007)})   # no ifeval cell at all
    (run / PLAN_FILE).write_text(json.dumps(dict(budget_s=720.0, variants=3, n={"mmlu": 4}, dropped=["ifeval"])))
    md = (report(run, explorer=False).parent / "report.md").read_text()
    assert "- **ifeval**: left out by the 12-minute time budget" in md and "have no result yet" not in md


def test_report_of_a_complete_run_and_an_empty_one(tmp_path):
    run = fake_run(tmp_path)
    page = report(run, explorer=True)
    md = (page.parent / "report.md").read_text()
    assert "cells have no result yet" not in md and (page.parent / "explorer.html").stat().st_size > 3_000_000
    assert "MMLU vs TruthfulQA-MC2 on this run: r = -1.000" in md      # built perfectly anti-correlated
    (run / STORE_FILE).unlink()
    for f in run.glob(STORE_FILE + "-*"): f.unlink()
    page = report(run, out=tmp_path / "empty", explorer=False)
    assert "16 of 16 (variant, task) cells have no result yet" in (page.parent / "report.md").read_text()


def test_report_cli(tmp_path):
    run = fake_run(tmp_path)
    r = glu("report", run, "--no-explorer", "--out", tmp_path / "rep")
    assert r.returncode == 0, r.stderr
    assert "report.html" in r.stdout and (tmp_path / "rep" / "report.html").exists()
    r = glu("report", tmp_path / "nothing-here")
    assert r.returncode == 1 and "nothing-here does not exist" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "empty").mkdir()
    r = glu("report", tmp_path / "empty")
    assert r.returncode == 1 and "is neither a sweep run directory" in r.stderr


def test_demo_small_budget_then_rerun_reuses_the_store(data_dir, tmp_path):
    "The README's first command with CI's budget; the second run evaluates nothing."
    assert len(DEMO_BUDGETS["small"]["ratios"]) >= 4
    r = glu("demo", "--budget", "small", "--out", tmp_path / "demo", timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    page = tmp_path / "demo" / "small" / "report" / "report.html"
    assert f"The report is at {page.resolve()}" in r.stdout
    assert "0 reused from the store" in r.stdout
    df = pd.read_csv(page.parent / "results.csv")
    assert sorted(df.ratio.unique()) == [1.2014, 1.6007, 2.0, 2.4010, 2.6667]
    r2 = glu("demo", "--budget", "small", "--out", tmp_path / "demo", timeout=600)
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert "0 cells evaluated, 20 reused from the store" in r2.stdout, r2.stdout


def test_sweep_cli_with_the_baseline_ratio_in_the_list(data_dir, tmp_path):
    "`glu-prune sweep MODEL --ratios 2.67 2.0 ...`: 2.67 is SmolLM2's own ratio, so it is the baseline, not an error."
    out = tmp_path / "run"
    r = glu("sweep", "smollm2-135m-instruct", "--ratios", "2.67", "2.0", "--suite", "quick:arc_challenge", "--limit", 2,
            "--data-dir", data_dir, "--out", out, "--report")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 cells evaluated, 0 reused" in r.stdout and "report: " in r.stdout
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert [(c["criterion"], c["width"]) for c in manifest["cells"]] == [("none", 1536), ("ppm", 1152)]
    assert (out / "report" / "report.html").exists()
    r = glu("sweep", "smollm2-135m-instruct", "--suite", "quick:no_such_task", "--out", tmp_path / "bad")
    assert r.returncode == 1 and "not in the 'quick' suite" in r.stderr


def test_sweep_cli_passes_chat_template_and_seeds(tmp_path, monkeypatch):
    "`--chat-template` and `--seeds` reach `evaluate` through `sweep` (instruct models want the template)."
    import glu_pruning.report as sw
    from glu_pruning.cli import main
    got = {}
    def fake_sweep(model, tok, **kw):
        got.update(kw)
        df = pd.DataFrame(); df.attrs.update(evaluated=0, reused=0)
        return df
    monkeypatch.setattr(sw, "sweep", fake_sweep)
    monkeypatch.setattr(sw, "load_model", lambda *a, **k: (None, None))
    assert main(["sweep", "tiny", "--ratios", "2.0", "--out", str(tmp_path), "--chat-template", "--seeds", "0", "1"]) in (0, None)
    assert got["apply_chat_template"] is True and got["seeds"] == [0, 1] and got["ratios"] == [2.0]
    assert got["target_ci"] is None and got["block"] is None
    assert main(["sweep", "tiny", "--out", str(tmp_path), "--target-ci", "0.03", "--block", "16", "--budget", "10m"]) in (0, None)
    assert got["target_ci"] == 0.03 and got["block"] == 16 and got["budget"] == "10m"


def test_data_criteria_calibrate_on_text_no_task_scores(data_dir, tmp_path):
    "An activation criterion swept with the wikitext task calibrates on text no task scores: no warning; own texts work too."
    import warnings
    from glu_pruning.models import load_model, tiny_model
    from glu_pruning.sweep import sweep
    _, tok = load_model("smollm2-135m-instruct")
    m = tiny_model("llama", hidden=64, intermediate=128, layers=2, vocab=len(tok))
    kw = dict(ratios=[1.5], criteria=["activation"], suite="quick:wikitext", data_dir=data_dir, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        df = sweep(m, tok, out=tmp_path / "a", **kw)
    assert set(df.criterion) == {"none", "activation"}
    df = sweep(m, tok, out=tmp_path / "b", texts=["Some calibration text from another corpus. " * 20], **kw)
    assert set(df.criterion) == {"none", "activation"}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    "A tiny Llama folder (hidden 64, 160 neurons: 2.5x) with SmolLM2's tokenizer, so real CLI sweeps take seconds."
    from helpers import tiny_with_smollm2_tokenizer
    return tiny_with_smollm2_tokenizer(tmp_path_factory.mktemp("m") / "tiny")


def _save_many(args):
    "Worker: save a manifest with one cell of its own, many times, into a shared folder."
    from glu_pruning.sweep import _save_manifest
    folder, k = args
    for _ in range(15):
        _save_manifest(Path(folder) / MANIFEST_FILE, dict(
            base_fingerprint="fp", tasks=["mmlu"], criteria=["ppm"], unavailable={}, started=str(k),
            cells=[dict(criterion="none", width=160, tasks=["mmlu"]), dict(criterion="ppm", width=100 + k, tasks=["mmlu"])]))
    return k


def test_manifest_merges_under_a_lock_across_processes(tmp_path):
    "Four processes merge into one manifest at once: every cell survives, no temporary file is shared or left over."
    import multiprocessing as mp
    with mp.get_context("spawn").Pool(4) as pool:
        assert sorted(pool.map(_save_many, [(str(tmp_path), k) for k in range(4)])) == [0, 1, 2, 3]
    m = json.loads((tmp_path / MANIFEST_FILE).read_text())
    assert sorted(c["width"] for c in m["cells"]) == [100, 101, 102, 103, 160]
    assert sorted(p.name for p in tmp_path.iterdir()) == [MANIFEST_FILE]   # no .tmp (nor lock) file left behind


def test_two_sweeps_with_different_ratios_into_one_folder(tiny_dir, data_dir, tmp_path):
    "Issue 9, case 7: two `glu-prune sweep` processes into one --out at the same time; the report covers both."
    out = tmp_path / "run"
    common = ["--suite", "quick:arc_challenge", "--limit", "2", "--data-dir", str(data_dir), "--out", str(out)]
    procs = [subprocess.Popen([sys.executable, "-m", "glu_pruning.cli", "sweep", str(tiny_dir), "--ratios", r, *common],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in ("2.0", "1.0")]
    outs = [p.communicate(timeout=900) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for _, e in outs]
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert sorted(c["width"] for c in manifest["cells"]) == [64, 128, 160]   # both runs' variants, one baseline
    assert all(c.get("fingerprint") for c in manifest["cells"])
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    r = glu("report", out, "--no-explorer")
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(pd.read_csv(out / "report" / "results.csv").ratio.unique()) == [1.0, 2.0, 2.5]
    assert "Nothing: every task was evaluated for every variant." in (out / "report" / "report.md").read_text()


def test_sweep_says_which_ratios_it_skipped(tiny_dir, data_dir, tmp_path):
    "Issue 9, case 8: `--ratios 9` is at or above the model's own ratio: the baseline runs and the skip is said; NaN is an error."
    out = tmp_path / "run"
    r = glu("sweep", tiny_dir, "--ratios", "9", "--suite", "quick:arc_challenge", "--limit", 2, "--data-dir", data_dir,
            "--out", out)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "ratio 9 is at or above the model's own 2.5x: skipped" in r.stderr
    assert [c["criterion"] for c in json.loads((out / MANIFEST_FILE).read_text())["cells"]] == ["none"]
    r = glu("sweep", tiny_dir, "--ratios", "nan", "--out", tmp_path / "nan")
    assert r.returncode == 1 and "Traceback" not in r.stderr and "nan" in r.stderr, r.stderr[-2000:]


def test_report_of_a_store_written_by_eval(tiny_dir, data_dir, tmp_path):
    "Issue 9, case 12: `glu-prune report` works on what `glu-prune eval` wrote: the folder or the store file."
    db = tmp_path / "evals" / "results.sqlite"
    for target in ([], ["--ratio", "2.0"]):
        r = glu("eval", tiny_dir, *target, "--tasks", "arc_challenge", "--limit", 2, "--data-dir", data_dir, "--store", db)
        assert r.returncode == 0, r.stderr[-2000:]
    r = glu("report", db.parent, "--no-explorer")
    assert r.returncode == 0, r.stderr[-2000:]
    md = (db.parent / "report" / "report.md").read_text()
    assert "no sweep manifest" in md and "| arc_challenge | acc_norm |" in md
    assert sorted(pd.read_csv(db.parent / "report" / "results.csv").ratio.unique()) == [2.0, 2.5]
    r = glu("report", db, "--no-explorer")
    assert r.returncode == 0 and (tmp_path / "evals" / "results-report" / "report.html").exists(), r.stderr[-2000:]


@pytest.fixture(scope="module")
def tok(smollm2):
    return smollm2[1]


def test_sweep_target_ci_adds_seeded_blocks_and_a_rerun_redoes_none(tok, data_dir, tmp_path):
    "--target-ci: blocks of 6 items are added until the target, the items or the budget stop it; stored blocks are reused."
    from glu_pruning.evidence import evidence
    from glu_pruning.models import tiny_model
    from glu_pruning.sweep import sweep
    model = tiny_model("llama", hidden=64, intermediate=128, layers=2, vocab=len(tok))
    kw = dict(ratios=(1.0,), suite="quick:lambada_openai", out=tmp_path / "run", progress=False, block=6)  # perplexity: never exact
    sweep(model, tok, target_ci=1e-9, budget=45, **kw)                    # a target no interval reaches: the budget stops it
    m = json.loads((tmp_path / "run" / MANIFEST_FILE).read_text())["target_ci"]
    (row,) = m["tasks"]
    assert row["stopped"] == "budget" and row["blocks"] >= 2 and row["n"] == 6 * row["blocks"]
    cells = finished_cells(tmp_path / "run" / STORE_FILE)
    assert len(cells) == 2 * row["blocks"]                               # every block on both variants
    ev = evidence(tmp_path / "run" / STORE_FILE)
    assert set(ev.n) == {6 * row["blocks"]}                              # the blocks pool into one paired sample
    again = sweep(model, tok, target_ci=1e6, **kw)                       # any interval meets it: stops on the target
    (row2,) = json.loads((tmp_path / "run" / MANIFEST_FILE).read_text())["target_ci"]["tasks"]
    assert row2["stopped"] == "target" and again.attrs["evaluated"] == 0
    assert len(finished_cells(tmp_path / "run" / STORE_FILE)) == len(cells)   # nothing new evaluated
    with pytest.raises(ValueError, match="target_ci must be a positive"): sweep(model, tok, target_ci=0, **kw)


@pytest.fixture
def no_data(tmp_path, monkeypatch):
    "This process with no data folder configured (so samples come from the demo pool) and no network."
    from glu_pruning import taskdata as td
    monkeypatch.delenv("GLU_PRUNING_DATA", raising=False)
    monkeypatch.setenv("GLU_PRUNING_CACHE", str(tmp_path / "cache"))   # no <cache>/data either
    monkeypatch.setattr(td, "hub_reachable", lambda *a, **k: False)
    return tmp_path


def test_a_stored_block_counts_only_when_drawn_from_the_same_items(tmp_path):
    "A block stored from the demo pool is not the same block of the full data (its config's `data`), nor the reverse."
    from glu_pruning.sweep import _block_done, _has_block
    from glu_pruning.taskdata import demo_pool
    pool = demo_pool()["id"]
    with Store(tmp_path / "r.sqlite") as st:
        for fp, data in (("a", pool), ("b", pool), ("b", None)):
            st.add_variant(fp, "m", 2.0, "ppm", {}, "base")
            st.record(fp, "piqa", {"limit": 4, "sample_start": 4} | ({"data": data} if data else {}),
                      [dict(metric="acc", value=0.5, n=4)], [dict(metric="acc", doc=d, value=d % 2) for d in range(4)])
        assert _has_block(st, "a", "piqa", 4, 4, pool) and not _has_block(st, "a", "piqa", 4, 4)   # full data: not stored
        assert not _has_block(st, "a", "piqa", 4, 0, pool) and not _has_block(st, "a", "piqa", 8, 4, pool)
        assert _block_done(st, ["a", "b"], "piqa", 4, 4, pool) and not _block_done(st, ["a", "b"], "piqa", 4, 4)
        assert _has_block(st, "b", "piqa", 4, 4)


@pytest.mark.timeout(900)
def test_budget_and_target_ci_on_the_demo_pool_stay_within_its_items(no_data, tok, tmp_path):
    "With no data folder a budget plans no more items than the pool holds, and target_ci stops when its items run out."
    from glu_pruning.evidence import evidence
    from glu_pruning.models import tiny_model
    from glu_pruning.sweep import PLAN_FILE, sweep
    from glu_pruning.taskdata import available_items, demo_pool
    have = available_items(["wikitext"])["wikitext"]
    assert have == demo_pool()["tasks"]["wikitext"]["items"] == 10           # the full split has 62
    model = tiny_model("llama", hidden=64, intermediate=128, layers=2, vocab=len(tok))
    kw = dict(ratios=(1.0,), suite="quick:wikitext", progress=False)
    t0 = time.perf_counter()
    sweep(model, tok, budget="10m", out=tmp_path / "budget", **kw)            # far more time than 10 documents need
    p = json.loads((tmp_path / "budget" / PLAN_FILE).read_text())
    assert p["n"] == {"wikitext": have} and p["available"] == {"wikitext": have}
    ev = evidence(tmp_path / "budget" / STORE_FILE)
    assert set(ev.n) == {have}
    cfgs = [json.loads(c) for c in results(tmp_path / "budget" / STORE_FILE).config]
    assert {c.get("data") for c in cfgs} == {demo_pool()["id"]}
    md = report(tmp_path / "budget", explorer=False, paper=False).with_name("report.md").read_text()
    assert "*Items from the demo pool*: wikitext (the pool holds 10 of its 62 items) drew its items" in md
    t1 = time.perf_counter()
    sweep(model, tok, target_ci=1e-9, block=4, out=tmp_path / "ci", **kw)     # no target reached: the items stop it
    (row,) = json.loads((tmp_path / "ci" / MANIFEST_FILE).read_text())["target_ci"]["tasks"]
    assert row["stopped"] == "items" and row["blocks"] == 3 and row["n"] == have   # ceil(10 / 4) blocks, 10 items
    assert set(evidence(tmp_path / "ci" / STORE_FILE).n) == {have}
    print(f"budget sweep {t1 - t0:.0f} s, target_ci sweep {time.perf_counter() - t1:.0f} s")
