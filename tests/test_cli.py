"`glu-prune` end to end, in subprocesses, as a user runs it."
import json, subprocess, sys

import pytest
import torch
from transformers import AutoModelForCausalLM

from glu_pruning.models import tiny_model


def glu(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "glu_pruning.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    tiny_model("qwen3").save_pretrained(d)
    return d


def test_help_lists_commands():
    r = glu("--help")
    assert r.returncode == 0 and "prune" in r.stdout and "sweep" in r.stdout


def test_prune_tiny(tiny_dir, tmp_path):
    out = tmp_path / "out"
    r = glu("prune", tiny_dir, "--ratio", "1.5", "--round-to", "8", "--out", out)
    assert r.returncode == 0, r.stderr
    assert "160 → 96" in r.stdout and str(out) in r.stdout
    m = AutoModelForCausalLM.from_pretrained(out)
    assert m.config.intermediate_size == 96
    assert json.loads((out / "pruning.json").read_text())["spec"] == {"ratio": 1.5, "round_to": 8}


def test_refuses_non_empty_out(tiny_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    r = glu("prune", tiny_dir, "--percent", "40", "--out", out)
    assert r.returncode == 1 and "not empty" in r.stderr and "--overwrite" in r.stderr
    assert (out / "precious.txt").read_text() == "keep me"
    r = glu("prune", tiny_dir, "--percent", "40", "--out", out, "--overwrite")
    assert r.returncode == 1 and "not a glu_pruning output" in r.stderr
    assert (out / "precious.txt").read_text() == "keep me"


def test_overwrite_previous_output(tiny_dir, tmp_path):
    out = tmp_path / "out"
    assert glu("prune", tiny_dir, "--percent", "40", "--out", out).returncode == 0
    r = glu("prune", tiny_dir, "--percent", "50", "--out", out, "--overwrite")
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "pruning.json").read_text())["width_after"] == 80


@pytest.mark.parametrize("args,msg", [
    (["--ratio", "9"], "ask for a ratio below 2.5"),
    (["--width", "0"], "0 would keep nothing"),
    (["--ratio", "1.5", "--criterion", "magic"], "unknown criterion"),
])
def test_bad_input_is_one_clear_line(tiny_dir, tmp_path, args, msg):
    r = glu("prune", tiny_dir, *args, "--out", tmp_path / "o")
    assert r.returncode == 1 and msg in r.stderr and "Traceback" not in r.stderr


def test_two_specs_rejected_by_parser(tiny_dir, tmp_path):
    r = glu("prune", tiny_dir, "--ratio", "2", "--percent", "40", "--out", tmp_path / "o")
    assert r.returncode == 2 and "not allowed with" in r.stderr


def test_missing_model_message(tmp_path):
    r = glu("prune", tmp_path / "nope", "--ratio", "2", "--out", tmp_path / "o")
    assert r.returncode == 1 and "no such model folder" in r.stderr


def test_hub_id_offline_is_clear(tmp_path):
    import os
    r = subprocess.run([sys.executable, "-m", "glu_pruning.cli", "prune", "meta-llama/Llama-3.2-1B", "--ratio", "2.4",
                        "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 1 and "not reachable (offline)" in r.stderr and "Traceback" not in r.stderr


def test_demo_prune_saves_reloads(tmp_path):
    "The one-call recap of the slicing notebook on the bundled model, offline, in a fresh process."
    out = tmp_path / "demo"
    r = subprocess.run([sys.executable, "-c", f"from glu_pruning.slicing import demo_prune; demo_prune({str(out)!r})"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "1536 → 1152" in r.stdout and "134,515,008 → 114,608,448" in r.stdout
    assert "before" in r.stdout and "after" in r.stdout and str(out) in r.stdout
    assert (out / "model.safetensors").exists() and (out / "pruning.json").exists()


def test_cli_page_has_a_section_per_command():
    "The CLI page (nbs/18_cli.ipynb) documents every sub-command in COMMANDS, with its generated --help."
    from pathlib import Path
    from glu_pruning.cli import COMMANDS, command_help
    nb = json.loads((Path(__file__).parents[1] / "nbs" / "18_cli.ipynb").read_text())
    md = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    missing = [n for n in COMMANDS if f"## glu-prune {n}\n" not in md or f'command_help("{n}")' not in code]
    assert not missing, f"sub-commands without a section on the CLI page: {missing}"
    assert "`" not in "".join(nb["cells"][0]["source"]).splitlines()[1]   # the subtitle: no literal backticks
    assert command_help("sweep").startswith("usage: glu-prune sweep")
