"""The efficiency profiler: equal work (fixed tokens, EOS ignored), timing arithmetic, interleaving, energy in joules
with idle power subtracted (on a fake NVML here, on real NVML with the `gpu` marker), sizes, speedups and the CLI."""
import json

import pytest
import torch

from glu_pruning import efficiency as E
from glu_pruning.models import tiny_model
from glu_pruning.slicing import prune


@pytest.fixture(scope="module")
def tiny():
    return tiny_model()


def test_fixed_tokens_ignore_eos(tiny):
    m = tiny_model()
    ids = E.fixed_prompts(batch=3, prompt_tokens=8, vocab_size=256)
    first = m.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=1, do_sample=False)[:, -1]
    m.generation_config.eos_token_id = int(first[0])     # the model's own first token is now "end of sequence"
    r = E.timed_generate(m, ids, new_tokens=12)
    assert r["tokens"] == 36
    # the phases add up: prefill + 11 decode steps happen inside the whole call
    assert r["prefill_s"] + 11 * r["decode_s"] <= r["total_s"] + 1e-9


def test_fixed_prompts_with_tokenizer():
    class Tok:
        def __call__(self, text, add_special_tokens=False): return {"input_ids": [ord(c) for c in text]}
    p = E.fixed_prompts(Tok(), batch=8, prompt_tokens=64)
    assert p.shape == (8, 64) and len({tuple(r.tolist()) for r in p}) == 8   # 8 different rows


def test_profile_interleaves_and_counts(tiny, monkeypatch):
    half = prune(tiny, width=80, inplace=False, progress=False).model
    calls, real = [], E.timed_generate
    def spy(model, ids, new_tokens):
        calls.append((model is tiny, ids.shape[0]))
        return real(model, ids, new_tokens)
    monkeypatch.setattr(E, "timed_generate", spy)
    rows = E.profile({"baseline": tiny, "half": half}, batch_sizes=(1, 2), prompt_tokens=8, new_tokens=3,
                     warmup=1, repeats=2, progress=False)
    assert len(calls) == 2 * 3 * 2                      # batch sizes × (warm-up + repeats) × variants
    firsts = [calls[i][0] for i in range(0, 6, 2)]      # who went first in each round at batch 1
    assert firsts == [True, False, True]                # the starting variant rotates
    assert {(r["model"], r["batch"], r["repeats"]) for r in rows} == {(n, b, 2) for n in ("baseline", "half") for b in (1, 2)}
    r = next(r for r in rows if r["model"] == "half" and r["batch"] == 2)
    assert r["width"] == 80 and r["ratio"] == 1.25 and r["energy_j_per_token"] is None
    import statistics
    assert r["tokens_per_s"] == pytest.approx(statistics.median(2 * 3 / x["total_s"] for x in r["runs"]))
    assert r["total_ms"] == pytest.approx(statistics.median(x["total_s"] * 1e3 for x in r["runs"]))


def test_energy_idle_subtracted_in_joules(tiny, monkeypatch):
    "A fake GPU at 30 W idle and 130 W while generating: net energy = 100 W × generation time."
    fake = E.FakeNVML(30.0)
    real = E.timed_generate
    def busy(model, ids, new_tokens):
        fake.set_watts(130.0)
        try: return real(model, ids, new_tokens)
        finally: fake.set_watts(30.0)
    monkeypatch.setattr(E, "timed_generate", busy)
    rows = E.profile(tiny, batch_sizes=(2,), prompt_tokens=8, new_tokens=16, repeats=3, idle_seconds=0.3,
                     progress=False, nvml=fake)
    r = rows[0]
    assert r["energy_source"] == "nvml" and r["idle_w"] == pytest.approx(30.0, rel=0.05)
    expected = 100.0 * (r["total_ms"] / 1e3) / (2 * 16)          # J per generated token
    assert r["energy_j_per_token"] == pytest.approx(expected, rel=0.25)


def test_energy_meter_reports_why_not():
    assert E.energy_meter("cpu") == (None, "none: no energy counter on cpu (reported as missing, not estimated)")
    class OldGPU(E.FakeNVML):
        def nvmlDeviceGetTotalEnergyConsumption(self, h): raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")
    meter, why = E.energy_meter(torch.device("cuda"), nvml=OldGPU())
    assert meter is None and "NOT_SUPPORTED" in why


def test_codecarbon_conversion():
    class T: final_emissions_data = type("D", (), {"energy_consumed": 0.002})()   # kWh
    assert E.codecarbon_joules(T()) == pytest.approx(7200.0)
    with pytest.raises(ValueError, match="stop"): E.codecarbon_joules(object())


def test_peak_memory_cpu():
    with E.PeakMemory("cpu") as big: x = torch.ones(256 << 20, dtype=torch.uint8); x += 1
    del x
    with E.PeakMemory("cpu") as small: pass
    if big.mb is None: pytest.skip("this kernel does not let a process reset its peak RSS")
    assert big.mb > 200 and small.mb < 50     # the block's own peak, not what was resident before it


def test_speedups_and_plot():
    base = dict(model="baseline", batch=1, width=100, ratio=4.0, linear_params=1000, decode_ms_per_token=10.0, tokens_per_s=50.0)
    half = dict(base, model="2.00x", width=50, ratio=2.0, linear_params=800, decode_ms_per_token=8.0, tokens_per_s=60.0, round_to=None)
    sp = {s["model"]: s for s in E.speedups([base, half])}
    assert sp["2.00x"]["speedup"] == pytest.approx(1.25) and sp["2.00x"]["ideal"] == pytest.approx(1.25)
    assert sp["2.00x"]["share_of_ideal"] == pytest.approx(1.0)
    assert E.speedups([base, half], "tokens_per_s")[1]["speedup"] == pytest.approx(1.2)
    import matplotlib; matplotlib.use("Agg")
    fig = E.plot_speedup([base, half])
    assert len(fig.axes[0].lines) >= 2


def test_stats_of_saved_pruned_model(tmp_path):
    from transformers import AutoModelForCausalLM
    from glu_pruning.slicing import save_pruned
    m = tiny_model()
    prune(m, ratio=1.5, round_to=32, progress=False)
    save_pruned(m, None, tmp_path / "p")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "p")
    loaded.glu_source = str(tmp_path / "p")            # what load_model records
    s = E.model_stats(loaded)
    assert (s["width"], s["round_to"], s["criterion"]) == (96, 32, "ppm")
    assert s["weight_bytes"] < s["disk_bytes"] < s["weight_bytes"] + 100_000   # the payload plus a header
    assert E._variant_name(loaded) == "1.50x (round_to=32)"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    "A tiny model folder with SmolLM2's tokenizer (so `load_model` and readable prompts work, fast)."
    from helpers import tiny_with_smollm2_tokenizer
    return tiny_with_smollm2_tokenizer(tmp_path_factory.mktemp("m") / "tiny")


QUICK = ["--prompt-tokens", "8", "--new-tokens", "3", "--repeats", "1", "--warmup", "0"]


def test_cli_bench(tmp_path, tiny_dir, capsys):
    from glu_pruning.cli import main
    d = tiny_dir
    out = tmp_path / "rows.json"
    assert main(["bench", str(d), "--ratios", "1.6", "1.5", "--round-to", "0", "32", "--batch-sizes", "1", "2",
                 *QUICK, "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "already profiled; skipped" in text
    rows = json.loads(out.read_text())
    # 1.6x → 103 neurons (1.61x), rounded down to 96 (1.50x); 1.5x → 96 with or without rounding: profiled once
    assert {r["model"] for r in rows} == {"baseline", "1.61x", "1.50x (round_to=32)"}
    assert {r["width"] for r in rows} == {160, 103, 96}
    assert len(rows) == 3 * 2 and all(r["source"] == str(d) for r in rows)
    assert main(["bench", str(d), "--ratios", "1.5", "--criterion", "wanda", "--repeats", "1"]) == 1


@pytest.mark.gpu
def test_profile_on_gpu_with_nvml_energy():
    if not torch.cuda.is_available(): pytest.skip("no CUDA GPU")
    from glu_pruning.models import load_model
    model, tok = load_model("smollm2-135m-instruct", dtype="bfloat16", device="cuda")
    pruned = prune(model, ratio=1.6, inplace=False, progress=False).model
    rows = E.profile({"baseline": model, "1.60x": pruned}, tok, batch_sizes=(1, 8), new_tokens=64, repeats=3,
                     idle_seconds=3, progress=False)
    for r in rows:
        assert r["energy_source"] == "nvml" and r["idle_w"] > 0
        assert r["energy_j_per_token"] is not None and r["energy_j_per_token"] > 0
        assert r["peak_mem_mb"] > r["weight_bytes"] / 2**20 and r["work_mem_mb"] > 0


def test_store_round_trip(tmp_path, tiny):
    pytest.importorskip("glu_pruning.store")
    from glu_pruning.store import results
    half = prune(tiny, width=80, inplace=False, progress=False).model
    rows = E.profile({"baseline": tiny, "half": half}, batch_sizes=(1, 2), prompt_tokens=8, new_tokens=3, repeats=2,
                     progress=False)
    f = tmp_path / "s.sqlite"
    assert E.record_profile(f, rows) == 4
    back = {(r["model"], r["batch"]): r for r in E.load_profile(f)}
    for r in rows:
        b = back[r["model"], r["batch"]]
        assert b["decode_ms_per_token"] == pytest.approx(r["decode_ms_per_token"]) and b["width"] == r["width"]
        assert b["linear_params"] == r["linear_params"] and b["fingerprint"] == r["fingerprint"]
    df = results(f)
    assert set(df.task) == {"efficiency"} and set(df.group) == {"efficiency"}
    assert E.load_profile(f, device="cuda") == []                       # config filters
    E.record_profile(f, rows)                                           # same cells again: replaced, not doubled
    assert len(E.load_profile(f)) == 4


def test_cli_bench_run_folder(tmp_path, tiny_dir, capsys):
    "A sweep's run folder: its weight-only variants are profiled and land in its results.sqlite."
    pytest.importorskip("glu_pruning.store")
    from glu_pruning.cli import main
    run = tmp_path / "run"; run.mkdir()
    from glu_pruning.models import load_model
    m, _ = load_model(str(tiny_dir), device="cpu")
    ppm = prune(m, ratio=1.5, inplace=False, progress=False)
    (run / "sweep.json").write_text(json.dumps({"model": str(tiny_dir), "tasks": ["arc_easy"], "cells": [  # as `sweep` writes it
        {"criterion": "none", "spec": {}, "width": 160, "ratio": 2.5},
        {"criterion": "ppm", "spec": {"ratio": 1.5}, "width": 96, "ratio": 1.5, "fingerprint": ppm.fingerprint},
        {"criterion": "l2", "spec": {"percent": 40.0}, "width": 96, "ratio": 1.5},
        {"criterion": "wanda", "spec": {"ratio": 1.5}, "width": 96, "ratio": 1.5}]}))
    assert main(["bench", str(run), "--batch-sizes", "1", *QUICK]) == 0
    out = capsys.readouterr().out
    assert "skipped wanda" in out and "note:" not in out          # the ppm variant is the very one the sweep made
    rows = E.load_profile(run / "results.sqlite")
    assert {r["model"] for r in rows} == {"baseline", "ppm 1.50x", "l2 1.50x"}
    assert ppm.fingerprint in {r["fingerprint"] for r in rows}
    assert next(r for r in rows if r["model"] == "l2 1.50x")["spec"] == {"percent": 40.0}


def test_cli_bench_refuses_zero_batch_size_before_loading():
    "`glu-prune bench MODEL --batch-sizes 0`: one line saying what is wrong, in a real process, before any model loads."
    import subprocess, sys
    r = subprocess.run([sys.executable, "-m", "glu_pruning.cli", "bench", "no/such/model", "--batch-sizes", "0"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "batch sizes must be whole numbers ≥ 1, got [0]" in r.stderr
    with pytest.raises(ValueError, match="at least 2"): E.profile(tiny_model(), new_tokens=1)
