"The result store: transactions, resume after SIGKILL (a real subprocess, a real kill), tidy tables, comparisons."
import json, math, os, signal, sqlite3, subprocess, sys, textwrap, time
from pathlib import Path

import numpy as np
import pytest

from glu_pruning.store import Store, aggregate, compare, config_key, paired_bootstrap, results

ROOT = Path(__file__).resolve().parents[1]


def _env():
    return os.environ | {"PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def test_record_is_done_replace_forget(tmp_path):
    with Store(tmp_path / "s.sqlite") as st:
        st.add_variant("fp1", "m", ratio=2.0)
        cfg = {"n_shot": 0, "limit": 3}
        assert not st.is_done("fp1", "t", cfg)
        st.record("fp1", "t", cfg, [{"metric": "acc", "value": 0.5}], [{"metric": "acc", "doc": 0, "value": 1}])
        st.record("fp1", "t", cfg, [{"metric": "acc", "value": 0.25}])          # same cell: replaced
        assert st.is_done("fp1", "t", dict(reversed(cfg.items())))              # key ignores order
        assert len(st.cells()) == 1 and st.items("fp1", "t").empty
        assert results(st).value.tolist() == [0.25]
        assert st.forget("fp1") == 1 and not st.is_done("fp1", "t", cfg)
        with pytest.raises(ValueError, match="unknown aggregation"):
            st.record("fp1", "t", cfg, [{"metric": "acc", "value": 1, "agg": "median"}])
        assert not st.is_done("fp1", "t", cfg)                                  # a failed record writes nothing


def test_add_variant_is_idempotent_and_file_is_stable(tmp_path):
    p = tmp_path / "s.sqlite"
    with Store(p) as st:
        st.add_variant("fp1", "m", ratio=2.0, criterion="ppm", spec={"ratio": 2.0}, width=10)
        st.record("fp1", "t", {}, [{"metric": "acc", "value": 1.0}])
    before = p.read_bytes()
    with Store(p) as st:
        st.add_variant("fp1", "other name", ratio=3.0)       # first description wins, nothing is written
        assert st.variant("fp1")["model"] == "m" and st.variant("fp1")["meta"] == {"width": 10}
        assert st.is_done("fp1", "t", {})
    assert p.read_bytes() == before                         # a replaying notebook leaves its store untouched
    assert sorted(x.name for x in tmp_path.iterdir()) == ["s.sqlite"]


def test_schema_mismatch_is_refused(tmp_path):
    p = tmp_path / "s.sqlite"
    Store(p).close()
    con = sqlite3.connect(p); con.execute("UPDATE info SET value='0' WHERE key='schema'"); con.commit(); con.close()
    with pytest.raises(ValueError, match="schema"): Store(p)


SCHEMA_1 = """
CREATE TABLE variants(fingerprint TEXT PRIMARY KEY, model TEXT NOT NULL, ratio REAL, criterion TEXT NOT NULL DEFAULT 'none',
    base_fingerprint TEXT, spec TEXT, meta TEXT, created REAL);
CREATE TABLE cells(id INTEGER PRIMARY KEY, fingerprint TEXT NOT NULL, task TEXT NOT NULL, key TEXT NOT NULL,
    config TEXT NOT NULL, grp TEXT, finished REAL NOT NULL, seconds REAL, UNIQUE(fingerprint, task, key));
CREATE TABLE metrics(cell INTEGER NOT NULL REFERENCES cells(id) ON DELETE CASCADE, task TEXT NOT NULL,
    metric TEXT NOT NULL, value REAL, stderr REAL, higher_is_better INTEGER, n INTEGER, agg TEXT, PRIMARY KEY(cell, task, metric));
CREATE TABLE items(cell INTEGER NOT NULL REFERENCES cells(id) ON DELETE CASCADE, metric TEXT NOT NULL, doc TEXT NOT NULL,
    value REAL NOT NULL, weight REAL NOT NULL DEFAULT 1, PRIMARY KEY(cell, metric, doc));
CREATE TABLE info(key TEXT PRIMARY KEY, value TEXT);
INSERT INTO info VALUES('schema', '1');
"""


def test_a_schema_1_store_is_upgraded_once_and_reads_as_plain_slicing(tmp_path):
    "A store written before `recover` existed: the first open adds the column (all 'none'); later opens write nothing."
    from glu_pruning.evidence import evidence
    p = tmp_path / "old.sqlite"
    con = sqlite3.connect(p)
    con.executescript(SCHEMA_1)
    for fp, ratio, crit in (("b", 2.67, "none"), ("p", 2.0, "ppm")):   # as the schema-1 code wrote them
        con.execute("INSERT INTO variants VALUES(?,?,?,?,?,?,?,?)", (fp, "m", ratio, crit, "b", "{}", "{}", 0.0))
        cid = con.execute("INSERT INTO cells(fingerprint, task, key, config, grp, finished) VALUES(?,?,?,?,?,?)",
                          (fp, "arc_easy", config_key({"limit": 4}), json.dumps({"limit": 4}), "fragile", 0.0)).lastrowid
        con.execute("INSERT INTO metrics VALUES(?,?,?,?,?,?,?,?)", (cid, "arc_easy", "acc_norm", 0.5, None, 1, 4, "mean"))
        con.executemany("INSERT INTO items VALUES(?,?,?,?,?)", [(cid, "acc_norm", str(d), float(d % 2), 1.0) for d in range(4)])
    con.commit(); con.close()
    with Store(p) as st:
        assert st.con.execute("SELECT value FROM info WHERE key='schema'").fetchone()[0] == "2"
        assert st.variants().recover.tolist() == ["none", "none"]
    r = results(p)
    assert r.recover.tolist() == ["none", "none"] and r.value.tolist() == [0.5, 0.5]
    assert evidence(p).recover.tolist() == ["none", "none"]
    before = p.read_bytes()
    Store(p).close()                                        # upgraded once: opening again writes nothing
    assert p.read_bytes() == before


@pytest.mark.parametrize("name, recover", [("nbs/sweeps/smollm2-demo/results.sqlite", {"none"}),
                                           ("nbs/sweeps/smollm2-criteria-recovery/results.sqlite", {"none", "lsq"}),
                                           ("nbs/08_evidence.sqlite", {"none"}), ("nbs/11_evaluation.sqlite", {"none"}),
                                           ("nbs/efficiency_smollm2.sqlite", {"none"})])
def test_the_committed_stores_open_with_their_recoveries(tmp_path, name, recover):
    import shutil
    p = tmp_path / "copy.sqlite"
    shutil.copy(ROOT / name, p)                              # a copy: the test leaves the repository's files alone
    r = results(p)
    assert len(r) and set(r.recover) == recover


def test_a_recovered_variant_is_marked_even_when_first_described_plain(tmp_path):
    "`evaluate` sees only weights and may describe a recovered copy first; the sweep's description adds its recovery."
    with Store(tmp_path / "s.sqlite") as st:
        st.add_variant("r", "m", ratio=2.0, criterion="ppm", base_fingerprint="b")
        rec = [{"method": "lsq", "calibration": "gsm8k_train", "calibration_tokens": 3072}]
        st.add_variant("r", "m", ratio=2.0, criterion="ppm", base_fingerprint="b", recovery=rec)
        v = st.variant("r")
        assert v["recover"] == "lsq" and v["meta"]["recovery"] == rec
        st.add_variant("d", "m", 2.0, "ppm", recovery="distill")            # `record_distillation`'s form
        st.add_variant("x", "m", 2.0, "ppm", recover="lsq+distill")
        assert [st.variant(f)["recover"] for f in ("d", "x")] == ["distill", "lsq+distill"]


def test_compare_names_a_recovered_variant_by_recover(tmp_path):
    with Store(tmp_path / "s.sqlite") as st:
        for fp, crit, rec, vals in (("b", "none", None, [1, 1, 1, 1]), ("p", "ppm", None, [0, 0, 1, 1]),
                                    ("l", "ppm", "lsq", [1, 0, 1, 1])):
            st.add_variant(fp, "m", ratio=2.67 if fp == "b" else 2.0, criterion=crit, base_fingerprint="b", recover=rec)
            st.record(fp, "arc_easy", {"limit": 4}, [{"metric": "acc", "value": float(np.mean(vals)), "higher_is_better": True}],
                      [{"metric": "acc", "doc": d, "value": v} for d, v in enumerate(vals)])
        with pytest.raises(ValueError, match="several stored variants match 2.0.*recover="):
            compare(st, "baseline", 2.0)
        assert compare(st, "baseline", 2.0, recover="none").delta.tolist() == [-0.5]
        c = compare(st, "baseline", 2.0, recover="lsq")
        assert c.delta.tolist() == [-0.25] and c.attrs["recover_b"] == "lsq"


def test_results_columns_subtasks_and_seeds(tmp_path):
    st = Store(tmp_path / "s.sqlite")
    st.add_variant("b", "m", ratio=2.67)
    for seed, v in [(0, 0.2), (1, 0.4)]:
        st.record("b", "gsm8k", {"n_shot": 5, "seed": seed, "gen_kwargs": {"max_gen_toks": 16}},
                  [{"metric": "exact_match,flexible-extract", "value": v, "stderr": 0.1}], group="fragile")
    st.record("b", "mmlu", {"n_shot": 5, "seed": None},
              [{"metric": "acc", "value": 0.3}, {"metric": "acc", "value": 0.5, "task": "mmlu_anatomy"}], group="fragile")
    r = results(st)
    assert list(r.columns[:9]) == ["model", "ratio", "criterion", "recover", "task", "metric", "value", "stderr", "group"]
    assert {"fingerprint", "n_shot", "limit", "seed", "chat_template", "max_gen_toks", "lm_eval", "glu_pruning"} <= set(r.columns)
    assert len(r) == 3 and set(r.task) == {"gsm8k", "mmlu"}
    assert r[r.task == "gsm8k"].max_gen_toks.tolist() == [16, 16]
    assert len(results(st, subtasks=True)) == 4
    a = results(st, average_seeds=True)
    g = a[a.task == "gsm8k"].iloc[0]
    assert math.isclose(g.value, 0.3) and g.n_seeds == 2 and math.isclose(g.seed_std, np.std([0.2, 0.4], ddof=1))
    st.close()


def test_efficiency_rows_as_a_pseudo_task(tmp_path):
    "How the profiler stores latency/energy: metrics of a pseudo-task with the workload in the config."
    with Store(tmp_path / "s.sqlite") as st:
        st.add_variant("b", "m", ratio=2.67)
        cfg = {"workload": "mmlu_b1", "device": "cpu", "max_new_tokens": 50}
        st.record("b", "efficiency", cfg, [{"metric": "latency_ms", "value": 120.0, "stderr": 3.0, "higher_is_better": False},
                                           {"metric": "joules_per_token", "value": None}], group="efficiency", seconds=9)
        assert st.is_done("b", "efficiency", cfg)
        r = results(st)
    assert r.group.tolist() == ["efficiency"] * 2 and r.higher_is_better.iloc[0] is False
    assert r.value.isna().tolist() == [False, True]


def test_aggregate_and_bootstrap_known_answers():
    # word perplexity: exp(-Σ ll / Σ words) from per-document (ll/words, words)
    ll, words = np.array([-30.0, -10.0]), np.array([10.0, 2.0])
    assert math.isclose(aggregate(ll / words, words, "perplexity"), math.exp(40 / 12))
    assert math.isclose(aggregate(ll / words, words, "bits_per_byte"), 40 / 12 / math.log(2))
    # a constant shift is recovered with a zero-width interval
    a = np.linspace(0, 1, 50)
    r = paired_bootstrap(a, a + 0.1)
    assert math.isclose(r["delta"], 0.1) and math.isclose(r["ci_low"], 0.1) and math.isclose(r["ci_high"], 0.1)
    # the paired interval matches the textbook one for a mean of paired differences
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2, 3000).astype(float)
    b = np.where(rng.random(3000) < 0.2, 1 - a, a)
    r = paired_bootstrap(a, b, n_boot=4000, seed=1)
    d = b - a
    half = 1.96 * d.std(ddof=1) / math.sqrt(len(d))
    assert abs(r["ci_low"] - (d.mean() - half)) < 4e-3 and abs(r["ci_high"] - (d.mean() + half)) < 4e-3
    # pairing matters: the paired interval is much narrower than the unpaired one when items are shared
    unpaired = 1.96 * math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    assert (r["ci_high"] - r["ci_low"]) / 2 < 0.7 * unpaired


def test_compare_pairs_shared_items_and_configs(tmp_path):
    st = Store(tmp_path / "s.sqlite")
    st.add_variant("base", "m", ratio=2.67)
    st.add_variant("p24", "m", ratio=2.4, criterion="ppm", base_fingerprint="base")
    cfg = {"n_shot": 0, "limit": None}
    va = [1] * 60 + [0] * 40
    vb = [1] * 60 + [1] * 30 + [0] * 10                   # b fixes 30 of a's 40 misses
    st.record("base", "ifeval", cfg, [{"metric": "acc", "value": np.mean(va), "higher_is_better": True}],
              [{"metric": "acc", "doc": i, "value": v} for i, v in enumerate(va)])
    st.record("p24", "ifeval", cfg, [{"metric": "acc", "value": np.mean(vb[:90]), "higher_is_better": True}],
              [{"metric": "acc", "doc": i, "value": v} for i, v in enumerate(vb[:90])])   # answered 90 of 100
    lla, llb = [-1.0, -2.0, -3.0], [-1.5, -2.5, -3.5]   # perplexity rises: a is better
    st.record("base", "lambada_openai", cfg, [{"metric": "perplexity", "value": math.exp(2), "higher_is_better": False, "agg": "perplexity"}],
              [{"metric": "perplexity", "doc": i, "value": v} for i, v in enumerate(lla)])
    st.record("p24", "lambada_openai", cfg, [{"metric": "perplexity", "value": math.exp(2.5), "higher_is_better": False, "agg": "perplexity"}],
              [{"metric": "perplexity", "doc": i, "value": v} for i, v in enumerate(llb)])
    st.record("p24", "mmlu", cfg, [{"metric": "acc", "value": 0.3}])      # only one side: not compared
    c = compare(st, "baseline", 2.4).set_index("task")
    assert sorted(c.index) == ["ifeval", "lambada_openai"]
    i = c.loc["ifeval"]
    assert i.n_items == 90 and math.isclose(i.delta, 30 / 90) and i.better == "b" and i.ci_low > 0.2
    l = c.loc["lambada_openai"]
    assert math.isclose(l.delta, math.exp(2.5) - math.exp(2)) and l.better == "a"
    assert compare(st, "p24", "base").set_index("task").loc["ifeval"].delta == pytest.approx(-30 / 90)
    with pytest.raises(ValueError, match="no stored variants match 1.5"): compare(st, "baseline", 1.5)
    st.close()


def test_two_processes_write_concurrently(tmp_path):
    p = tmp_path / "s.sqlite"
    Store(p).close()
    code = textwrap.dedent(f"""
        import sys
        from glu_pruning.store import Store
        st = Store({str(p)!r})
        for i in range(40):
            st.record("fp" + sys.argv[1], "t", {{"i": i}}, [{{"metric": "acc", "value": i}}],
                      [{{"metric": "acc", "doc": d, "value": 1}} for d in range(20)])
        st.close()
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(k)], env=_env()) for k in range(2)]
    assert [pr.wait(timeout=120) for pr in procs] == [0, 0]
    with Store(p) as st:
        assert len(st.cells()) == 80
        assert st.con.execute("SELECT count(*) FROM items").fetchone()[0] == 80 * 20


RUNNER = textwrap.dedent("""
    import sys
    from transformers import AutoTokenizer
    from glu_pruning.models import tiny_model
    from glu_pruning.evaluation import evaluate, TaskSpec
    store, tok_dir = sys.argv[1], sys.argv[2]
    tok = AutoTokenizer.from_pretrained(tok_dir)
    model = tiny_model("llama", hidden=64, intermediate=128, layers=2, vocab=len(tok))
    tasks = [TaskSpec(t, 0, limit=12) for t in ("arc_easy", "piqa", "winogrande", "boolq")]
    df = evaluate(model, tok, tasks, store=store, progress=False)
    print("TASKS", sorted(set(df.task)))
""")


def _cells(p):
    try:
        con = sqlite3.connect(f"file:{p}?mode=ro", uri=True, timeout=5)
        try: return con.execute("SELECT task, id, finished FROM cells ORDER BY id").fetchall()
        finally: con.close()
    except sqlite3.Error: return []


def test_resume_after_sigkill(tmp_path, data_dir):
    "Kill a real evaluation with SIGKILL after its first cell: the file stays sound and the rerun does only the rest."
    from glu_pruning.models import gguf_to_plain, resolve_alias
    tok_dir = gguf_to_plain(resolve_alias("smollm2-135m-instruct"))
    store, script = tmp_path / "run.sqlite", tmp_path / "runner.py"
    script.write_text(RUNNER)
    proc = subprocess.Popen([sys.executable, str(script), str(store), str(tok_dir)], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not _cells(store): time.sleep(0.05)
    assert proc.poll() is None, f"the runner ended before it could be killed: {proc.communicate()[1][-2000:]!r}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    # the file is readable and consistent, and holds only whole cells
    con = sqlite3.connect(store)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    survivors = con.execute("SELECT task, id, finished FROM cells ORDER BY id").fetchall()
    for (cid,) in con.execute("SELECT id FROM cells"):
        assert con.execute("SELECT count(*) FROM metrics WHERE cell=?", (cid,)).fetchone()[0] > 0
        assert con.execute("SELECT count(*) FROM items WHERE cell=?", (cid,)).fetchone()[0] > 0
    con.close()
    assert 1 <= len(survivors) < 4, survivors
    # the rerun completes only what is missing: the surviving cells are untouched
    out = subprocess.run([sys.executable, str(script), str(store), str(tok_dir)], env=_env(), capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "TASKS ['arc_easy', 'boolq', 'piqa', 'winogrande']" in out.stdout
    after = _cells(store)
    assert len(after) == 4 and after[:len(survivors)] == survivors


def test_reading_a_missing_store_is_an_error_not_an_empty_table(tmp_path):
    "A typo in a store path says so, and leaves no empty database behind."
    from glu_pruning.efficiency import load_profile
    from glu_pruning.store import compare, results
    missing = tmp_path / "runs" / "typo.sqlite"
    for read in (results, lambda p: compare(p, "baseline", 2.4), load_profile):
        with pytest.raises(FileNotFoundError, match="no result store at"):
            read(missing)
    assert not missing.exists() and not missing.parent.exists()
