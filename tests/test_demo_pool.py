"The demo item pool shipped in the package: it parses, a fresh install reads it, a data folder wins, it rebuilds byte for byte."
import gzip, hashlib, importlib.util, json, os, subprocess, sys, time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from glu_pruning import taskdata as td
from glu_pruning.taskdata import DEMO_POOL, SUITES, TaskSpec, demo_pool, from_pool
from glu_pruning.tasks import data_root

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
POOL = demo_pool()
QUICK = {s.task: s for s in SUITES["quick"]}


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    "This process as on a fresh install: no data folder, an empty home and cache, NLTK finding nothing, no network."
    import nltk
    monkeypatch.delenv("GLU_PRUNING_DATA", raising=False)
    monkeypatch.delenv("NLTK_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GLU_PRUNING_CACHE", str(tmp_path / "home" / "cache"))
    monkeypatch.setattr(nltk.data, "path", [])
    monkeypatch.setattr(nltk, "download", lambda *a, **k: pytest.fail("tried to download NLTK data"))
    monkeypatch.setattr(td, "hub_reachable", lambda *a, **k: False)
    monkeypatch.setattr(td, "_POOL_SAID", set())
    return tmp_path


def fresh_env(tmp_path) -> dict:
    "The environment of a subprocess on a fresh install (offline, no data folder, empty home and cache)."
    env = {k: v for k, v in os.environ.items() if k not in ("GLU_PRUNING_DATA", "NLTK_DATA")}
    return env | dict(HOME=str(tmp_path / "home"), GLU_PRUNING_CACHE=str(tmp_path / "home" / "cache"),
                      HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")


def test_pool_files_parse_and_match_the_manifest():
    assert POOL and POOL["id"].startswith("demo-pool/") and POOL["seed"] == 0
    on_disk = {str(p.relative_to(DEMO_POOL)) for p in DEMO_POOL.rglob("*") if p.is_file()}
    assert on_disk == set(POOL["files"]) | set(POOL["nltk_data"]) | {"pool.json", "SOURCES.md"}
    for rel, f in POOL["files"].items():
        text = gzip.decompress((DEMO_POOL / rel).read_bytes()).decode()
        recs = [json.loads(l) for l in text.split("\n") if l.strip()]
        assert len(recs) == f["items"] <= f["of"] and all(isinstance(r, dict) for r in recs), rel
        assert hashlib.sha256(text.encode()).hexdigest() == f["sha256"], rel
        assert td.check_jsonl(DEMO_POOL / rel) is None
    for rel, sha in POOL["nltk_data"].items():
        assert hashlib.sha256((DEMO_POOL / rel).read_bytes()).hexdigest() == sha
    size = sum((DEMO_POOL / p).stat().st_size for p in on_disk)
    assert size < 3_000_000, f"the demo pool is {size / 1e6:.1f} MB; keep it under 3 MB"
    sources = (DEMO_POOL / "SOURCES.md").read_text()
    assert POOL["id"] in sources and "samples for the demo only" in sources
    assert all(f"`{f['dataset']}`" in sources for f in POOL["files"].values())


def test_datasets_reads_every_pool_file(tmp_path):
    import datasets
    for rel, f in POOL["files"].items():
        ds = datasets.load_dataset("json", data_files={"x": str(DEMO_POOL / rel)}, cache_dir=str(tmp_path))["x"]
        assert len(ds) == f["items"], rel


def test_derived_configs_on_the_pool_equal_stock():
    for task, s in POOL["tasks"].items():
        spec = QUICK[task]
        for e in td._leaves(td._spec_item(spec))[1]:
            assert td.derived_equals_stock(e.name, DEMO_POOL / "hf", spec.n_shot or 0), e.name


def test_a_fresh_install_reads_the_quick_suite_from_the_pool(fresh, capfd):
    assert data_root() is None
    src = {t: td.task_source(s, data_root()) for t, s in QUICK.items()}
    assert {t for t, (kind, _) in src.items() if kind == "offline"} == set(POOL["tasks"])
    assert {t for t, (kind, _) in src.items() if kind == "unavailable"} == set(QUICK) - set(POOL["tasks"])
    files = [f for t in POOL["tasks"] for o in src[t][1].values() for f in o["dataset_kwargs"]["data_files"].values()]
    assert files and all(Path(f).is_relative_to(DEMO_POOL) for f in files)
    assert all(from_pool(QUICK[t]) for t in POOL["tasks"])
    err = capfd.readouterr().err
    assert err.count("using the demo item pool shipped with glu_pruning") == 1, err   # said once
    assert "set GLU_PRUNING_DATA (or --data-dir) for the full benchmarks" in err
    assert td.available_items(["arc_challenge", "mmlu"]) == {"arc_challenge": 200, "mmlu": 40}
    kind, why = td.task_source(TaskSpec("arc_challenge"), None)       # a full run is not drawn from the pool
    assert kind == "unavailable" and "holds 200 of its items, for a sample" in why


def test_a_configured_data_folder_wins(fresh, data_dir, monkeypatch):
    root = data_root(data_dir)
    kind, overs = td.task_source(QUICK["arc_challenge"], root)
    f = Path(overs["arc_challenge"]["dataset_kwargs"]["data_files"]["test"])
    assert kind == "offline" and f.is_relative_to(root) and not f.is_relative_to(DEMO_POOL)
    assert not from_pool(QUICK["arc_challenge"], root)
    assert td.available_items(["arc_challenge"], data_dir) == {"arc_challenge": 1172}
    monkeypatch.setenv("GLU_PRUNING_DATA", str(data_dir))
    assert not from_pool(QUICK["arc_challenge"], data_root())
    monkeypatch.delenv("GLU_PRUNING_DATA")
    (fresh / "home" / "cache" / "data").mkdir(parents=True)            # <cache>/data counts as configured too
    assert data_root() is not None and not from_pool(QUICK["arc_challenge"], data_root())


@pytest.fixture(scope="module")
def tok(smollm2):
    return smollm2[1]


@pytest.mark.timeout(600)
def test_every_pool_task_runs_from_the_pool_and_is_never_taken_for_full_data(fresh, tok, data_dir, tmp_path, capfd):
    "Each quick task the pool holds runs through lm-eval from it; its cells say so, and the full data is a new cell."
    from glu_pruning.evaluation import evaluate
    from glu_pruning.models import tiny_model
    from glu_pruning.store import Store
    tiny = tiny_model("llama", hidden=64, intermediate=128, layers=2, vocab=len(tok))
    specs = [replace(QUICK[t], limit=1, max_gen_toks=4 if QUICK[t].max_gen_toks else None) for t in POOL["tasks"]]
    t0 = time.perf_counter()
    with Store(tmp_path / "r.sqlite") as st:
        df = evaluate(tiny, tok, specs, store=st, progress=False)
        assert set(df.task) == set(POOL["tasks"]) and not df.attrs["unavailable"]
        configs = [json.loads(c) for c in df.config.unique()]
        assert configs and all(c["data"] == POOL["id"] for c in configs)
        n = len(st.cells())
        again = evaluate(tiny, tok, specs[:1], store=st, progress=False)              # the same cell: reused
        assert len(st.cells()) == n and len(again)
        full = evaluate(tiny, tok, specs[:1], store=st, data_dir=data_dir, progress=False)   # full data: its own cell
        assert len(st.cells()) == n + 1 and "data" not in json.loads(full.config.iloc[0])
    print(f"{len(specs)} pool tasks, 1 item each, in {time.perf_counter() - t0:.0f} s")
    assert capfd.readouterr().err.count("using the demo item pool") == 1


def _load_tool():
    spec = importlib.util.spec_from_file_location("build_demo_pool", ROOT / "tools" / "build_demo_pool.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.skipif(not (SHARED_DATA / "hf").is_dir(), reason="rebuilding the pool needs the full offline data "
                    "folder ../shared/data, which this checkout does not have")
def test_rebuilding_the_pool_gives_identical_files(tmp_path):
    m = _load_tool().build(SHARED_DATA, tmp_path / "pool")
    assert m["id"] == POOL["id"]
    built = sorted(str(p.relative_to(tmp_path / "pool")) for p in (tmp_path / "pool").rglob("*") if p.is_file())
    shipped = sorted(str(p.relative_to(DEMO_POOL)) for p in DEMO_POOL.rglob("*") if p.is_file())
    assert built == shipped
    for rel in shipped: assert (tmp_path / "pool" / rel).read_bytes() == (DEMO_POOL / rel).read_bytes(), rel


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from helpers import tiny_with_smollm2_tokenizer
    return tiny_with_smollm2_tokenizer(tmp_path_factory.mktemp("m") / "tiny")


@pytest.mark.timeout(900)
def test_a_sweep_and_its_report_on_a_fresh_install(tiny_dir, tmp_path):
    "The demo's path (sweep, then report) in a new process with no data folder, an empty cache and no network."
    out = tmp_path / "run"
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "glu_pruning.cli", "sweep", str(tiny_dir), "--ratios", "2.0",
                        "--suite", "quick:arc_challenge,piqa,truthfulqa_mc2,mmlu", "--limit", "2", "--out", str(out),
                        "--report"], env=fresh_env(tmp_path), capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    print(f"fresh-install sweep and report: {time.perf_counter() - t0:.0f} s")
    assert "8 cells evaluated, 0 reused" in r.stdout and (out / "report" / "report.html").exists()
    assert r.stderr.count("using the demo item pool shipped with glu_pruning") == 1, r.stderr[-3000:]
    df = pd.read_csv(out / "report" / "results.csv")
    assert set(df.task) == {"arc_challenge", "piqa", "truthfulqa_mc2", "mmlu"}


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_glu_prune_demo_small_on_a_fresh_install(tmp_path):
    "`glu-prune demo --budget small` (SmolLM2, 4 tasks, 6 items, 5 variants) with no data folder: 4.6 and 7.1 min on the shared 2-core dev machine."
    r = subprocess.run([sys.executable, "-m", "glu_pruning.cli", "demo", "--budget", "small", "--out", str(tmp_path / "d")],
                       env=fresh_env(tmp_path), capture_output=True, text=True, timeout=1800, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    page = tmp_path / "d" / "small" / "report" / "report.html"
    assert f"The report is at {page.resolve()}" in r.stdout and "20 cells evaluated" in r.stdout
    assert r.stderr.count("using the demo item pool shipped with glu_pruning") == 1
