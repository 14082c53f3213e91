"lm-eval on in-memory models, offline: every output type, derived configs, missing data, caching, seeds, the CLI."
import contextlib, io, json, math, os, shutil, socket, sys
from pathlib import Path

import pandas as pd
import pytest

from glu_pruning import evaluation as ev, prefix as px, taskdata as td
from glu_pruning.evaluation import evaluate
from glu_pruning.taskdata import SUITES, TaskSpec
from glu_pruning.store import Store, aggregate, results


@pytest.fixture(scope="module")
def root(data_dir):
    return td.data_root(data_dir)


@pytest.fixture(scope="module")
def tok(smollm2):
    return smollm2[1]


@pytest.fixture(scope="module")
def tiny(tok):
    "A two-layer random Llama that speaks SmolLM2's tokenizer: lm-eval plumbing at a fraction of the cost."
    from glu_pruning.models import tiny_model
    return tiny_model("llama", hidden=64, intermediate=128, layers=2, vocab=len(tok))


def _paper_leaves():
    return {e.name for s in SUITES["paper"] for e in td._leaves(td._spec_item(s))[1]}


def test_derived_configs_equal_stock_for_the_paper_suite(root):
    ok, missing = [], []
    for name in sorted(_paper_leaves()):
        n_shot = 5 if name.startswith(("mmlu", "gsm8k")) else 0
        over, why = td.offline_config(name, root, n_shot)
        if over is None:
            missing.append(name); assert "is missing" in why; continue
        assert td.derived_equals_stock(name, root, n_shot), name
        assert over["dataset_path"] == "json" and set(over) <= {"include", "task", *td.DATASET_FIELDS}
        ok.append(name)
    assert len(ok) == 57 + 10
    assert set(missing) == {"hellaswag", "leaderboard_musr_murder_mysteries", "leaderboard_musr_object_placements",
                            "leaderboard_musr_team_allocation"}


def test_offline_refuses_rather_than_changing_the_benchmark(tmp_path, root):
    # an eval split that is missing is never replaced by another split
    d = tmp_path / "allenai" / "ai2_arc" / "ARC-Easy"
    d.mkdir(parents=True)
    shutil.copy(root / "allenai/ai2_arc/ARC-Easy/validation.jsonl", d / "validation.jsonl")
    over, why = td.offline_config("arc_easy", tmp_path)
    assert over is None and "test.jsonl is missing" in why
    # a few-shot split that is missing is refused when shots are asked for, nulled when not
    shutil.copy(root / "allenai/ai2_arc/ARC-Easy/test.jsonl", d / "test.jsonl")
    assert td.offline_config("arc_easy", tmp_path, n_shot=0)[0]["training_split"] is None
    assert "train.jsonl is missing" in td.offline_config("arc_easy", tmp_path, n_shot=3)[1]


def test_task_table_matches_lm_eval():
    "The facts `glu_pruning.tasks.TASKS` states about each task are lm-eval's own."
    from glu_pruning.tasks import TASKS
    full = td._stock_index()
    for name, t in TASKS.items():
        assert td._entry(name).yaml_path == full[name].yaml_path, name   # the folder index agrees with the full one
        _, leaves = td._leaves(name)
        c = td.stock_config(leaves[0].name)
        assert (t.output, t.default_shots, t.sampler) == \
            (c.get("output_type"), c.get("num_fewshot"), (c.get("fewshot_config") or {}).get("sampler")), name
        assert ev.task_info(name) == (t.output, t.default_shots, t.sampler)
    assert all(s.group in ("fragile", "robust") for s in SUITES["paper"])


def test_every_output_type_offline_on_smollm2(smollm2, root, tmp_path):
    model, tok = smollm2
    specs = [TaskSpec("lambada_openai", 0, limit=6),                       # loglikelihood
             TaskSpec("wikitext", 0, limit=1),                             # loglikelihood_rolling
             TaskSpec("arc_easy", 0, limit=8),                             # multiple_choice
             TaskSpec("gsm8k", 5, limit=1, max_gen_toks=16),               # generate_until with filters
             TaskSpec("ifeval", 0, limit=2, max_gen_toks=16)]              # generate_until, IFEval scoring
    st = Store(tmp_path / "s.sqlite")
    df = evaluate(model, tok, specs, store=st, data_dir=root.parent, progress=False)
    assert df.attrs["unavailable"] == {}
    by = {t: set(g.metric) for t, g in df.groupby("task")}
    assert by["lambada_openai"] == {"perplexity", "acc"}
    assert by["wikitext"] == {"word_perplexity", "byte_perplexity", "bits_per_byte"}
    assert by["arc_easy"] == {"acc", "acc_norm"}
    assert by["gsm8k"] == {"exact_match,strict-match", "exact_match,flexible-extract", ev.AT_CAP}
    assert by["ifeval"] == {"prompt_level_strict_acc", "inst_level_strict_acc", "prompt_level_loose_acc",
                            "inst_level_loose_acc", ev.AT_CAP}
    v = df.set_index(["task", "metric"]).value
    assert 1 < v["wikitext", "word_perplexity"] < 1e4 and 1 < v["lambada_openai", "perplexity"] < 1e5
    rates = df[~df.metric.str.contains("perplexity|bits")]
    assert rates.value.between(0, 1).all()
    assert df.set_index("task").n.groupby(level=0).first().to_dict() == \
        {"lambada_openai": 6, "wikitext": 1, "arc_easy": 8, "gsm8k": 1, "ifeval": 2}
    assert (df.model == "smollm2-135m-instruct").all() and (df.criterion == "none").all()
    assert df.ratio.iloc[0] == pytest.approx(1536 / 576, abs=1e-4)
    # stored per-item scores reproduce lm-eval's number for every metric (including word perplexity)
    for r in df.itertuples():
        it = st.items(r.fingerprint, r.task, r.metric)
        assert len(it), (r.task, r.metric)
        agg = st.con.execute("SELECT agg FROM metrics m JOIN cells c ON c.id=m.cell WHERE c.fingerprint=? AND "
                             "c.task=? AND m.metric=?", (r.fingerprint, r.task, r.metric)).fetchone()[0]
        assert math.isclose(aggregate(it.value, it.weight, agg), r.value, rel_tol=1e-6), (r.task, r.metric)
    gen = df[df.task.isin(["gsm8k", "ifeval"])]
    assert (gen.max_gen_toks == 16).all() and df[df.task == "arc_easy"].max_gen_toks.isna().all()
    assert set(df.max_length) == {2048}
    st.close()


def test_variants_are_not_served_from_a_shared_cache(smollm2, root):
    "lm-eval's caches are keyed by request, not model: a pruned variant must get its own answers."
    from glu_pruning.slicing import prune
    model, tok = smollm2
    spec = [TaskSpec("lambada_openai", 0, limit=4)]
    st = Store(":memory:")
    a = evaluate(model, tok, spec, store=st, data_dir=root, progress=False)
    rep = prune(model, ratio=2.0, inplace=False, progress=False)
    b = evaluate(rep.model, tok, spec, store=st, data_dir=root, progress=False)
    pa, pb = (x.set_index("metric").value["perplexity"] for x in (a, b))
    assert a.fingerprint.iloc[0] != b.fingerprint.iloc[0] and pa != pb
    assert b.criterion.iloc[0] == "ppm" and b.ratio.iloc[0] == pytest.approx(rep.ratio_after, abs=1e-4)
    assert st.variant(b.fingerprint.iloc[0])["base_fingerprint"] == a.fingerprint.iloc[0]
    # the HFLM wrapper really carries the settings
    lm = ev.hflm(model, tok, batch_size=4, max_length=512)
    assert (lm.batch_size, lm.max_length, lm.tokenizer is tok) == (4, 512, True)


def test_finished_cells_are_skipped(tiny, tok, root, tmp_path, monkeypatch):
    p = tmp_path / "s.sqlite"
    spec = [TaskSpec("winogrande", 0, limit=4)]
    first = evaluate(tiny, tok, spec, store=p, data_dir=root, progress=False)
    def boom(*a, **k): raise AssertionError("a finished cell was evaluated again")
    monkeypatch.setattr(ev, "_run_cell", boom)
    again = evaluate(tiny, tok, spec, store=p, data_dir=root, progress=False)
    pd.testing.assert_frame_equal(first, again)
    with pytest.raises(AssertionError, match="again"):   # a new config is a new cell
        evaluate(tiny, tok, [TaskSpec("winogrande", 0, limit=5)], store=p, data_dir=root, progress=False)


def _no_network(monkeypatch):
    for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"): monkeypatch.delenv(v, raising=False)
    def refuse(*a, **k): raise OSError("network is unreachable (test)")
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.timeout(180)
def test_missing_data_is_reported_and_the_rest_runs(tiny, tok, root, monkeypatch):
    _no_network(monkeypatch)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        df = evaluate(tiny, tok, [TaskSpec("hellaswag", 0, limit=2), TaskSpec("piqa", 0, limit=2),
                                  TaskSpec("leaderboard_musr", 0, limit=2)], data_dir=root, progress=False)
    assert set(df.task) == {"piqa"}
    un = df.attrs["unavailable"]
    assert sorted(un) == ["hellaswag", "leaderboard_musr"]
    assert "glu-prune data download" in un["hellaswag"] and "not reachable" in un["hellaswag"]
    assert "hellaswag" in err.getvalue() and "Traceback" not in err.getvalue()
    assert td.check_data("paper", root).keys() == {"hellaswag", "leaderboard_musr"}


@pytest.mark.timeout(60)
def test_no_data_folder_and_no_network(tiny, tok, monkeypatch):
    _no_network(monkeypatch)
    monkeypatch.delenv("GLU_PRUNING_DATA", raising=False)
    df = evaluate(tiny, tok, [TaskSpec("arc_easy", 0, limit=2)], progress=False)
    assert df.empty and "no data folder given" in df.attrs["unavailable"]["arc_easy"]
    with pytest.raises(FileNotFoundError, match="glu-prune data download"):
        evaluate(tiny, tok, "quick", data_dir="/no/such/folder")


def test_ifeval_never_downloads_punkt(tmp_path, root, monkeypatch):
    import nltk
    monkeypatch.setattr(nltk.data, "path", [])
    monkeypatch.delenv("NLTK_DATA", raising=False)
    monkeypatch.setattr(nltk, "download", lambda *a, **k: pytest.fail("tried to download punkt_tab"))
    (tmp_path / "hf").symlink_to(root)                 # the data without its nltk_data folder
    kind, why = td.task_source(TaskSpec("ifeval"), tmp_path / "hf")
    assert kind == "unavailable" and "punkt_tab" in why
    assert td.use_nltk_data(root)                      # DIR/nltk_data next to DIR/hf is found
    assert td.task_source(TaskSpec("ifeval"), root)[0] == "offline"


def test_seeds_chat_template_and_generation_settings(tiny, tok, root):
    st = Store(":memory:")
    specs = [TaskSpec("gsm8k", 5, limit=1, max_gen_toks=4), TaskSpec("arc_easy", 0, limit=2)]
    df = evaluate(tiny, tok, specs, store=st, seeds=(0, 1), data_dir=root, progress=False)
    assert set(df[df.task == "gsm8k"].seed) == {0, 1}
    assert df[df.task == "arc_easy"].seed.isna().all() and len(df[df.task == "arc_easy"]) == 2   # one seed-free cell
    assert (df[df.task == "gsm8k"].n_shot == 5).all()
    chat = evaluate(tiny, tok, specs[1:], store=st, apply_chat_template=True, data_dir=root, progress=False)
    assert chat.chat_template.all() and len(st.cells()) == 4
    g = evaluate(tiny, tok, specs[:1], store=st, generation_kwargs={"max_gen_toks": 2}, data_dir=root, progress=False)
    assert g.max_gen_toks.tolist() == [2, 2, 2] and len(st.cells()) == 5     # strict, flexible, and the share at the cap
    avg = results(st, average_seeds=True)
    assert avg[avg.task == "gsm8k"].groupby("max_gen_toks").n_seeds.first().to_dict() == {2: 1, 4: 2}
    st.close()


def test_download_data_writes_the_offline_layout(tmp_path, root, monkeypatch):
    "The writer, with the Hub replaced by the local copy: what it writes is what the offline tasks read."
    import datasets, nltk
    real = datasets.load_dataset
    calls = []
    def fake(path, name=None, **kw):
        calls.append((path, name))
        base = root / path / (name or "default")
        return real("json", data_files={p.stem: str(p) for p in base.glob("*.jsonl")})
    monkeypatch.setattr(td, "hub_reachable", lambda *a, **k: True)
    monkeypatch.setattr(datasets, "load_dataset", fake)
    monkeypatch.setattr(nltk, "download", lambda pkg, download_dir, quiet: shutil.copytree(
        root.parent / "nltk_data", download_dir, dirs_exist_ok=True))
    out = tmp_path / "data"
    files = td.download_data(out, ["arc_easy", "ifeval"], progress=False)
    assert calls == [("allenai/ai2_arc", "ARC-Easy"), ("google/IFEval", None)]
    assert (out / "hf/allenai/ai2_arc/ARC-Easy/test.jsonl").exists() and (out / "nltk_data/tokenizers/punkt_tab").is_dir()
    assert len(files) == 5
    read = lambda p: [json.loads(l) for l in open(p)]
    assert read(out / "hf/google/IFEval/default/train.jsonl") == read(root / "google/IFEval/default/train.jsonl")
    assert td.offline_config("arc_easy", td.data_root(out))[0] is not None
    assert td.download_data(out, ["arc_easy"], progress=False) == []        # present files are kept


def test_cli_eval_and_data(tmp_path, data_dir, capsys):
    from glu_pruning.cli import main
    store = tmp_path / "cli.sqlite"
    assert main(["eval", "smollm2-135m-instruct", "--ratio", "2.4", "--tasks", "winogrande", "--limit", "4",
                 "--store", str(store), "--data-dir", str(data_dir), "--device", "cpu"]) == 0
    out = capsys.readouterr()
    assert "winogrande" in out.out and "acc" in out.out and "pruned to width 1383" in out.err
    r = results(store)
    assert r.criterion.tolist() == ["ppm"] and r.ratio.iloc[0] == pytest.approx(1383 / 576, abs=1e-4)
    assert main(["data", "download", str(tmp_path / "d"), "--tasks", "arc_easy"]) == 1    # offline: one line
    assert "needs the Hugging Face Hub" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_suite_on_smollm2(smollm2, root, tmp_path):
    model, tok = smollm2
    df = evaluate(model, tok, "quick", store=tmp_path / "q.sqlite", data_dir=root, progress=False)
    assert set(df.task) == {s.task for s in SUITES["quick"]} - {"hellaswag", "leaderboard_musr"}
    assert sorted(df.attrs["unavailable"]) == ["hellaswag", "leaderboard_musr"]


def test_offline_mode_tries_only_what_the_datasets_cache_holds(tmp_path, root, monkeypatch):
    import datasets
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path))
    assert td.task_source(TaskSpec("hellaswag"), root)[0] == "unavailable"
    (tmp_path / "Rowan___hellaswag").mkdir()          # what `datasets` leaves after an online load
    assert td.task_source(TaskSpec("hellaswag"), root)[0] == "hub"


def _recorded_requests(model, tok, specs, root, monkeypatch):
    "The loglikelihood requests lm-eval sends for `specs`, with its own answers (shared-context scoring off)."
    from lm_eval.models.huggingface import HFLM
    rec, orig = [], HFLM._loglikelihood_tokens
    def spy(self, requests, disable_tqdm=False, override_bs=None):
        out = orig(self, requests, True, override_bs)
        rec.extend(zip(requests, out))
        return out
    with monkeypatch.context() as m:
        m.setattr(HFLM, "_loglikelihood_tokens", spy)
        evaluate(model, tok, specs, data_dir=root, progress=False, share_prefix=False)
    return rec


def test_shared_prefix_scoring_matches_lm_eval(smollm2, root, monkeypatch):
    "Each shared context and few-shot block run once give lm-eval's log-likelihoods and greedy flags."
    model, tok = smollm2
    specs = [TaskSpec("truthfulqa_mc2", 0, limit=2),             # a 6-question prompt before multi-token answers
             TaskSpec("mmlu", 5, limit=1, subtasks=("mmlu_astronomy", "mmlu_virology")),  # 5-shot, one-token answers
             TaskSpec("arc_easy", 0, limit=3),                    # one question, several multi-token answers
             TaskSpec("winogrande", 0, limit=3),                  # shares too little: lm-eval's own batches
             TaskSpec("wikitext", 0, limit=1)]                    # rolling windows
    rec = _recorded_requests(model, tok, specs, root, monkeypatch)
    reqs, stock = [r for r, _ in rec], [a for _, a in rec]
    routed = []
    real_stock = px.stock_loglikelihood
    monkeypatch.setattr(px, "stock_loglikelihood", lambda lm, rs, quiet=True, bs=None: routed.extend(rs) or real_stock(lm, rs, quiet, bs))
    lm = ev.hflm(model, tok)
    ours = lm._loglikelihood_tokens(reqs, disable_tqdm=True)
    assert len(ours) == len(stock) > 30
    for (o_ll, o_greedy), (s_ll, s_greedy), r in zip(ours, stock, reqs):
        assert math.isclose(o_ll, s_ll, rel_tol=1e-4, abs_tol=2e-3), (r[0], o_ll, s_ll)
        assert o_greedy == s_greedy, r[0]
    assert 0 < len(routed) < len(reqs) / 2          # WinoGrande and the perplexity windows went to lm-eval's path
    shared = {tuple(r[1]) for r in reqs} - {tuple(r[1]) for r in routed}
    assert max(p for p, _ in px.prefix_clusters(shared)) >= 100   # the few-shot prompts were shared


def test_shared_prefix_truncates_like_lm_eval(smollm2):
    "Requests longer than max_length are left to lm-eval, which truncates them from the left."
    model, tok = smollm2
    lm = ev.hflm(model, tok, max_length=48)
    ctx = tok("Question: " + "the quick brown fox jumps over the lazy dog " * 8 + "\nAnswer:").input_ids
    reqs = [(None, ctx, tok(a).input_ids) for a in (" yes", " no, it does not")]
    assert len(ctx) > 49
    ours, stock = lm._loglikelihood_tokens(reqs, disable_tqdm=True), px.stock_loglikelihood(lm, reqs)
    assert ours == stock


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "phi3", "olmo2", "granite"])
def test_shared_prefix_across_architectures(family, tok):
    "The key/value cache reuse holds for every family, sliding-window attention included (window < shared prefix)."
    import torch
    from transformers import AutoConfig
    from glu_pruning.models import tiny_model
    kw = {"sliding_window": 24} if "sliding_window" in AutoConfig.for_model(family).to_dict() else {}
    if family == "qwen2": kw["use_sliding_window"] = True
    model = tiny_model(family, hidden=64, intermediate=128, layers=2, vocab=len(tok), **kw).eval()
    lm = ev.hflm(model, tok, batch_size=2)
    g = torch.Generator().manual_seed(0)
    ids = lambda n: torch.randint(3, len(tok), (n,), generator=g).tolist()
    shots = ids(90)
    reqs = [(None, shots + q, ids(n)) for q in (ids(5), ids(9)) for n in (1, 3, 6)] + [(None, ids(12), ids(4))]
    ours, stock = lm._loglikelihood_tokens(reqs, disable_tqdm=True), px.stock_loglikelihood(lm, reqs)
    for (o, _), (s, _) in zip(ours, stock):
        assert math.isclose(o, s, rel_tol=1e-4, abs_tol=1e-3), (family, o, s)


def test_tasks_loaded_once_give_the_same_answers(tok, root):
    "A task loaded for one variant and reused for the next scores exactly as one loaded afresh."
    import lm_eval.evaluator as E
    from glu_pruning.models import tiny_model
    a, b = (tiny_model("llama", hidden=64, intermediate=128, layers=2, vocab=len(tok), seed=s) for s in (0, 1))
    specs = [TaskSpec("ifeval", 0, limit=3, max_gen_toks=8), TaskSpec("arc_easy", 0, limit=4)]
    probe = E.add_env_info
    def run(m):
        st = Store(":memory:")
        df = evaluate(m, tok, specs, store=st, data_dir=root, progress=False)
        fp = df.fingerprint.iloc[0]
        return df.set_index(["task", "metric"]).value.to_dict(), st.items(fp, "ifeval", "inst_level_loose_acc").value.tolist()
    run(a)
    assert len(ev._TASKS) >= 2                      # both tasks kept for the next variant
    cached = run(b)
    ev._TASKS.clear()
    assert run(b) == cached
    assert E.add_env_info is probe                  # lm-eval's environment report is skipped only while we run
    with pytest.raises(ValueError, match="generation_batch_size"):
        evaluate(a, tok, specs, data_dir=root, progress=False, generation_batch_size=0)


def test_sample_is_seeded_paired_and_not_the_first_items(tiny, tok, root):
    "A limited task scores a seeded random sample: the same items for every variant, not the first N."
    from glu_pruning.models import tiny_model
    other = tiny_model("llama", hidden=64, intermediate=128, layers=2, vocab=len(tok), seed=7)
    st = Store(":memory:")
    specs = [TaskSpec("arc_challenge", 0, limit=12), TaskSpec("mmlu", 5, limit=3, subtasks=("mmlu_anatomy", "mmlu_virology"))]
    for m in (tiny, other): evaluate(m, tok, specs, store=st, data_dir=root, progress=False)
    cells = st.cells()
    assert cells.fingerprint.nunique() == 2 and {c["sample_seed"] for c in cells.config} == {0}
    for task in ("arc_challenge", "mmlu"):
        a, b = (sorted(st.items(fp, task, "acc").doc) for fp in cells.fingerprint.unique())
        assert a == b, task                                     # paired
        assert len(a) == (12 if task == "arc_challenge" else 6)
    docs = sorted(int(d) for d in st.items(cells.fingerprint.iloc[0], "arc_challenge", "acc").doc)
    assert docs != list(range(12)) and docs == ev.sample_items("arc_challenge", 1172, 12)
    # another sample seed is another sample, and another cell
    df = evaluate(tiny, tok, specs[:1], store=st, sample_seed=1, data_dir=root, progress=False)
    seed1 = st.items(df.fingerprint.iloc[0], "arc_challenge", "acc", config=st.cells().config.iloc[-1]).doc
    assert len(st.cells()) == 5 and sorted(int(d) for d in seed1) == ev.sample_items("arc_challenge", 1172, 12, seed=1) != docs


def test_chat_template_default_and_generation_cap_share(tiny, tok, root):
    "Generation tasks use the tokenizer's chat template unless told not to; the share of answers at the cap is stored."
    st = Store(":memory:")
    spec = [TaskSpec("ifeval", 0, limit=2, max_gen_toks=4), TaskSpec("arc_easy", 0, limit=2)]
    on = evaluate(tiny, tok, spec, store=st, data_dir=root, progress=False)
    assert on.groupby("task").chat_template.first().to_dict() == {"arc_easy": False, "ifeval": True}
    cap = on.set_index(["task", "metric"]).value["ifeval", ev.AT_CAP]
    assert cap == 1.0          # a random model never stops on its own within 4 tokens
    off = evaluate(tiny, tok, spec[:1], store=st, apply_chat_template=False, data_dir=root, progress=False)
    assert not off.chat_template.any() and len(st.cells()) == 3
    assert ev.use_chat_template("ifeval", type("T", (), {"chat_template": None})()) is False   # no template: off


def test_malformed_jsonl_line_is_one_sentence(tiny, tok, root, tmp_path, capsys):
    "A broken line in the data folder names the file and the line, in Python and on the command line."
    d = tmp_path / "allenai" / "ai2_arc" / "ARC-Easy"
    d.mkdir(parents=True)
    lines = (root / "allenai/ai2_arc/ARC-Easy/test.jsonl").read_text().splitlines()
    (d / "test.jsonl").write_text("\n".join(lines[:3] + ['{"id": "broken", "question": '] + lines[3:20]) + "\n")
    ev._TASKS.clear()
    with pytest.raises(ValueError, match=r"test.jsonl line 4 is not valid JSON"):
        evaluate(tiny, tok, [TaskSpec("arc_easy", 0, limit=2)], data_dir=tmp_path, progress=False)
    from glu_pruning.cli import main
    assert main(["eval", "smollm2-135m-instruct", "--tasks", "arc_easy", "--limit", "2", "--data-dir", str(tmp_path),
                 "--store", str(tmp_path / "s.sqlite"), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    msg = [l for l in err.splitlines() if l.startswith("glu-prune eval: error:")]   # the rest: progress bars
    assert len(msg) == 1 and "test.jsonl line 4 is not valid JSON" in msg[0] and "Traceback" not in err


@pytest.mark.parametrize("args,msg", [(["--ratio", "0"], "ratio=0.0 must be above 0"),
                                      (["--width", "0"], "width=0 must be above 0"),
                                      (["--ratio", "nan"], "ratio=nan is not a finite number"),
                                      (["--percent", "100"], "percent=100.0 must be above 0 and below 100"),
                                      (["--limit", "0"], "--limit 0 must be a positive number of items"),
                                      (["--limit", "-3"], "--limit -3 must be a positive number of items")])
def test_cli_eval_refuses_bad_targets_and_limits(args, msg, tmp_path):
    "`eval --ratio 0` used to store the unpruned model as a variant; now these exit 1 with one line, loading nothing."
    import subprocess
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    r = subprocess.run([sys.executable, "-m", "glu_pruning.cli", "eval", *args, "--tasks", "arc_easy",
                        "--store", str(tmp_path / "s.sqlite")], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 1, r.stderr
    assert msg in r.stderr and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "s.sqlite").exists()


def test_limit_must_be_positive_in_python(tiny, tok):
    for bad in (0, -3, 2.5):
        with pytest.raises(ValueError, match="positive number of items"):
            evaluate(tiny, tok, [TaskSpec("arc_easy", 0)], limit=bad, progress=False)
    with pytest.raises(ValueError, match="positive number of items"):
        evaluate(tiny, tok, [TaskSpec("arc_easy", 0, limit=0)], progress=False)


def test_cli_eval_with_a_data_criterion(tmp_path, data_dir, capsys):
    "`eval --criterion wanda` calibrates like `prune` does instead of failing with the Python API's message."
    from glu_pruning.cli import main
    store = tmp_path / "w.sqlite"
    assert main(["eval", "smollm2-135m-instruct", "--ratio", "2.4", "--criterion", "wanda", "--calibration", "2",
                 "--tasks", "winogrande", "--limit", "2", "--store", str(store), "--data-dir", str(data_dir),
                 "--device", "cpu"]) == 0
    assert "with wanda" in capsys.readouterr().err
    assert results(store).criterion.tolist() == ["wanda"]


def test_sample_blocks_tile_the_seeded_order():
    "Block j of size k is order[j·k : (j+1)·k]: blocks are disjoint, block 0 is the plain sample, and together they nest."
    from glu_pruning.evaluation import sample_items
    b = [set(sample_items("arc_challenge", 1172, 10, 0, start=10 * j)) for j in range(3)]
    assert b[0] == set(sample_items("arc_challenge", 1172, 10)) and not (b[0] & b[1]) and not (b[1] & b[2])
    assert b[0] | b[1] | b[2] == set(sample_items("arc_challenge", 1172, 30))
    assert sample_items("arc_challenge", 25, 10, start=20) == sorted(set(range(25)) - set(sample_items("arc_challenge", 25, 20)))
    with pytest.raises(ValueError, match="sample start 30 is outside the 25 items"): sample_items("arc_challenge", 25, 10, start=30)


def test_evaluate_records_a_recovered_variant_as_recovered(smollm2, data_dir, tmp_path):
    "A model pruned with recover='lsq' outside a sweep is stored with recover='lsq' and its recovery record, not as plain."
    from glu_pruning.evaluation import variant_info
    from glu_pruning.models import tiny_model
    from glu_pruning.scoring import calibration_texts
    from glu_pruning.slicing import prune
    from glu_pruning.store import Store
    tok = smollm2[1]
    m = tiny_model("llama", hidden=32, intermediate=96, layers=2, vocab=len(tok))
    prune(m, ratio=2.0, criterion="ppm", recover="lsq", tokenizer=tok, texts=calibration_texts(4), progress=False)
    info = variant_info(m)
    assert info["recovery"][0]["method"] == "lsq"
    with Store(tmp_path / "r.sqlite") as st:
        st.add_variant(**info)
        v = st.variants().set_index("fingerprint").loc[info["fingerprint"]]
    assert v.recover == "lsq" and v.criterion == "ppm"
    plain = tiny_model("llama", hidden=32, intermediate=96, layers=2, vocab=len(tok))
    prune(plain, ratio=2.0, criterion="ppm", progress=False)
    assert variant_info(plain)["recovery"] == []
