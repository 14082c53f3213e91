"Sweeps with recovery after slicing (`recover=`, `--recover`): the plan, the store, resuming, distillation, the CLI and the report."
import json, subprocess, sys
from pathlib import Path

import pandas as pd
import pytest

from glu_pruning.store import Store, results
from glu_pruning.sweep import LSQ_TOKENS, MANIFEST_FILE, STORE_FILE, _save_manifest, plan


def glu(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "glu_pruning.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def test_plan_makes_each_cut_once_per_recovery():
    cells = plan(576, 1536, ratios=[2.0, 1.6], criteria=["ppm", "random"], recover=["none", "lsq"])
    assert [(c["criterion"], c["width"], c["recover"]) for c in cells] == [
        ("none", 1536, "none"), ("ppm", 1152, "none"), ("ppm", 1152, "lsq"), ("ppm", 922, "none"), ("ppm", 922, "lsq"),
        ("random", 1152, "none"), ("random", 1152, "lsq"), ("random", 922, "none"), ("random", 922, "lsq")]
    assert {c.get("recover_tokens") for c in cells if c["recover"] == "lsq"} == {LSQ_TOKENS}
    only = plan(576, 1536, ratios=[2.0], recover="distill", recover_steps=7)
    assert [(c["recover"], c.get("recover_steps"), c.get("recover_tokens")) for c in only] == [
        ("none", None, None), ("distill", 7, 7 * 1024)]                     # the baseline once, never recovered
    assert [c["recover"] for c in plan(576, 1536, ratios=[2.0])] == ["none", "none"]   # default: plain slicing
    with pytest.raises(ValueError, match="recover_steps=0 must be a positive"): plan(576, 1536, [2.0], recover="distill", recover_steps=0)
    with pytest.raises(ValueError, match="calibration_tokens=0"): plan(576, 1536, [2.0], recover="lsq", calibration_tokens=0)


def test_manifest_keeps_plain_and_recovered_cells_of_one_width_apart(tmp_path):
    base = dict(base_fingerprint="fp", tasks=["mmlu"], criteria=["ppm"], unavailable={}, started="a")
    one = dict(criterion="ppm", width=1152, tasks=["mmlu"])
    _save_manifest(tmp_path / MANIFEST_FILE, dict(base, recover=["none"], cells=[dict(one)]))       # an older run: no recover
    m = _save_manifest(tmp_path / MANIFEST_FILE, dict(base, recover=["none", "lsq"], cells=[
        dict(one, recover="none", fingerprint="p"), dict(one, recover="lsq", recover_tokens=3072, fingerprint="l")]))
    assert sorted((c.get("recover", "none"), c["fingerprint"]) for c in m["cells"]) == [("lsq", "l"), ("none", "p")]
    assert m["recover"] == ["none", "lsq"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    "A tiny Llama (hidden 64, 160 neurons: 2.5x) with SmolLM2's tokenizer, loaded: a sweep with recovery takes seconds."
    from helpers import tiny_with_smollm2_tokenizer
    from glu_pruning.models import load_model
    folder = tiny_with_smollm2_tokenizer(tmp_path_factory.mktemp("m") / "tiny")
    model, tok = load_model(str(folder), device="cpu")
    return folder, model, tok


def test_sweep_with_lsq_stores_both_and_a_rerun_neither_evaluates_nor_refits(tiny, data_dir, tmp_path, monkeypatch):
    from glu_pruning import sweep as sw
    from glu_pruning.evidence import evidence
    _, model, tok = tiny
    kw = dict(ratios=[1.5], criteria=["ppm"], recover=["none", "lsq"], calibration_tokens=300,
              suite="quick:arc_challenge,lambada_openai", limit=3, out=tmp_path / "run", data_dir=data_dir, progress=False)
    df = sw.sweep(model, tok, **kw)
    assert df.attrs["evaluated"] == 6
    with Store(tmp_path / "run" / STORE_FILE) as st:
        v = st.variants().set_index("recover")
        lsq = st.variant(v.loc["lsq", "fingerprint"])
    assert sorted(v.index) == ["lsq", "none", "none"] and v.fingerprint.nunique() == 3
    assert v.loc["lsq", "criterion"] == "ppm"
    rec = lsq["meta"]["recovery"][0]
    assert rec["method"] == "lsq" and rec["calibration"] == "gsm8k_train+arc_train+mmlu_validation"
    assert rec["calibration_tokens"] >= 300 and lsq["base_fingerprint"] == v[v.criterion == "none"].fingerprint.iloc[0]
    cells = json.loads((tmp_path / "run" / MANIFEST_FILE).read_text())["cells"]
    assert [c["recover"] for c in cells] == ["none", "none", "lsq"] and cells[2]["recovery"]["method"] == "lsq"
    assert set(df.recover) == {"none", "lsq"} and set(results(tmp_path / "run" / STORE_FILE).recover) == {"none", "lsq"}
    ev = evidence(tmp_path / "run" / STORE_FILE)
    assert sorted(ev.recover) == ["lsq", "lsq", "none", "none", "none", "none"]
    assert ev[ev.recover == "lsq"].delta.notna().all()          # compared with the unpruned baseline, paired
    made = []
    real = sw._variant
    monkeypatch.setattr(sw, "_variant", lambda m, cell, *a, **k: made.append(cell["recover"]) or real(m, cell, *a, **k))
    again = sw.sweep(model, tok, **kw)
    assert (again.attrs["evaluated"], again.attrs["reused"]) == (0, 6)
    assert "lsq" not in made                                   # all its cells stored: no re-fit
    assert len(again) == len(df)


def test_sweep_with_a_few_distillation_steps(tiny, data_dir, tmp_path):
    from glu_pruning.sweep import sweep
    _, model, tok = tiny
    df = sweep(model, tok, ratios=[1.5], recover=["none", "distill"], recover_steps=2, suite="quick:arc_challenge",
               limit=2, out=tmp_path / "run", data_dir=data_dir, progress=False)
    assert df.attrs["evaluated"] == 3 and set(df.recover) == {"none", "distill"}
    with Store(tmp_path / "run" / STORE_FILE) as st:
        v = st.variants()
        d = st.variant(v[v.recover == "distill"].fingerprint.iloc[0])
    assert v.fingerprint.nunique() == 3
    rec = d["meta"]["recovery"][-1]
    assert rec["method"] == "distill" and rec["steps"] == 2 and rec["calibration_tokens"] >= 2 * 1024
    assert isinstance(rec["final_loss"], float) and rec["final_loss"] > 0
    cell = json.loads((tmp_path / "run" / MANIFEST_FILE).read_text())["cells"][-1]
    assert cell["recover"] == "distill" and cell["recovery"]["final_loss"] == rec["final_loss"]
    assert not list((tmp_path / "run").glob("checkpoint-*"))   # a sweep's distillation writes no checkpoint


def test_sweep_cli_recover_and_the_report(tiny, data_dir, tmp_path):
    "`glu-prune sweep ... --recover none lsq` end to end; the report shows plain and recovered side by side."
    folder = tiny[0]
    out = tmp_path / "run"
    args = ["sweep", folder, "--ratios", "2.0", "--recover", "none", "lsq", "--calibration-tokens", "256",
            "--suite", "quick:arc_challenge", "--limit", 2, "--data-dir", data_dir, "--out", out]
    r = glu(*args, "--report")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "3 cells evaluated, 0 reused" in r.stdout and "report: " in r.stdout
    csv = pd.read_csv(out / "report" / "results.csv")
    assert "recover" in csv and sorted(csv.recover) == ["lsq", "none", "none"]
    md = (out / "report" / "report.md").read_text()
    assert "ppm+lsq 2x" in md and "## Recovery after slicing" in md and "after slicing: plain, least squares" in md
    assert "Nothing: every task was evaluated for every variant." in md
    r = glu(*args)
    assert r.returncode == 0 and "0 cells evaluated, 3 reused" in r.stdout, r.stderr[-3000:]
    r = glu("sweep", folder, "--ratios", "2.0", "--recover", "magic", "--out", tmp_path / "bad")
    assert r.returncode != 0 and "invalid choice: 'magic'" in r.stderr


def test_missing_cells_tell_a_recovered_copy_from_the_plain_one(tmp_path):
    from glu_pruning.report import manifest_from_store, missing_cells
    cells = plan(576, 1536, ratios=[2.0], recover=["none", "lsq"])
    have = pd.DataFrame(dict(criterion=["none", "ppm"], ratio=[2.6667, 2.0], task=["mmlu", "mmlu"]))   # no recover: plain
    miss = missing_cells(have, dict(tasks=["mmlu"], cells=cells))
    assert miss.values.tolist() == [["ppm", 2.0, "lsq", "mmlu"]]
    with Store(tmp_path / "s.sqlite") as st:
        st.add_variant("l", "m", 2.0, "ppm", base_fingerprint="b", recovery=[dict(method="lsq", calibration_tokens=9)])
        st.record("l", "mmlu", {}, [dict(metric="acc", value=0.3)])
    m = manifest_from_store(tmp_path / "s.sqlite")
    assert [(c["recover"], c["recovery"]["calibration_tokens"]) for c in m["cells"]] == [("lsq", 9)]
