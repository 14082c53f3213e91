"`pip install glu_pruning`: the wheel and sdist build, and the wheel works in a fresh virtual environment."
import os, subprocess, sys, venv
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


def test_wheel_in_fresh_venv_runs_cli(dist, tmp_path):
    "A fresh venv gets the CPU torch first, then the wheel with its (lean) dependencies; the CLI prunes a model."
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    run([str(py), "-m", "pip", "install", "-q", "torch==2.13.0"])
    run([str(py), "-m", "pip", "install", "-q", str(next(dist.glob("glu_pruning-*.whl")))])
    # the core install is lean: no lm-eval, seaborn or ipywidgets
    r = run([str(py), "-c", "import importlib.util as u; print([m for m in ('lm_eval','seaborn','ipywidgets') if u.find_spec(m)])"])
    assert r.stdout.strip() == "[]"
    glu = env_dir / "bin" / "glu-prune"
    assert "prune" in run([str(glu), "--help"]).stdout
    src = tmp_path / "tiny"
    run([str(py), "-c", f"from glu_pruning.models import tiny_model; tiny_model('mistral').save_pretrained({str(src)!r})"])
    r = run([str(glu), "prune", str(src), "--percent", "50", "--out", str(tmp_path / "out")],
            env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd=tmp_path)
    assert "160 → 80" in r.stdout
    assert (tmp_path / "out" / "model.safetensors").exists()
