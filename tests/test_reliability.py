"""Nothing lost, nothing run (issue 9, core side): as an adversarial user meets `glu-prune`, in real subprocesses.

Output-folder guard, atomic and resumable saves under `kill -9` and Ctrl-C, no checkpoint code ever executed, target
validation, one-line errors for damaged files, a locked store that waits, and file modes from the umask."""
import json, os, shlex, signal, sqlite3, subprocess, sys, time
from pathlib import Path

import pytest

from helpers import tiny_folder

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


def glu(*args, stdin=None, umask=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "glu_pruning.cli", *map(str, args)], capture_output=True, text=True,
                          input=stdin, env=ENV, cwd=cwd, timeout=600,
                          preexec_fn=None if umask is None else (lambda: os.umask(umask)))


def one_line_error(r, *words):
    "Exit 1 with one `glu-prune ...: error:` line naming `words`, and no traceback."
    lines = [l for l in r.stderr.splitlines() if "error:" in l]
    assert r.returncode == 1 and lines and "Traceback" not in r.stderr, r.stderr[-2000:]
    for w in words: assert w in lines[-1], (w, lines[-1])


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def victim(tmp_path_factory) -> Path:
    return tiny_folder(tmp_path_factory.mktemp("m") / "victim")


# ---- 1, 2: the one output-folder guard -------------------------------------------------------------------------

@pytest.mark.parametrize("streaming", [False, True])
def test_output_is_the_input(victim, streaming):
    before = snapshot(victim)
    r = glu("prune", victim, "--ratio", "2", "--out", victim, "--overwrite", *(["--streaming"] if streaming else []))
    one_line_error(r, "is the input")
    assert snapshot(victim) == before


@pytest.mark.parametrize("streaming", [False, True])
def test_output_contains_the_input(tmp_path, streaming):
    a = tmp_path / "a"
    src = tiny_folder(a / "model")
    (a / "notes.txt").write_text("my notes")
    before = snapshot(a)
    r = glu("prune", src, "--ratio", "2", "--out", a, "--overwrite", *(["--streaming"] if streaming else []))
    one_line_error(r, "contains the input")
    assert snapshot(a) == before


@pytest.mark.parametrize("streaming", [False, True])
def test_overwrite_refuses_a_folder_that_is_not_ours(victim, tmp_path, streaming):
    docs = tmp_path / "docs"; docs.mkdir(); (docs / "thesis.txt").write_text("years of work")
    r = glu("prune", victim, "--ratio", "2", "--out", docs, "--overwrite", *(["--streaming"] if streaming else []))
    one_line_error(r, "not a glu_pruning output")
    assert (docs / "thesis.txt").read_text() == "years of work"


def test_overwrite_replaces_a_previous_output_only_when_done(victim, tmp_path):
    out = tmp_path / "out"
    assert glu("prune", victim, "--ratio", "2", "--out", out).returncode == 0
    r = glu("prune", victim, "--ratio", "1.5", "--out", out, "--overwrite", "--streaming")
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "pruning.json").read_text())["width_after"] == 96
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]   # no temporary or old folder left


# ---- 3: interrupted saves ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    "A model whose save takes long enough to be interrupted (~115 MB in float32, in 30 MB shards)."
    return tiny_folder(tmp_path_factory.mktemp("big") / "big", hidden=256, intermediate=4096, layers=8, vocab=4096,
                       max_shard_size="30MB")


def start(*args):
    return subprocess.Popen([sys.executable, "-m", "glu_pruning.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)


def wait_for(folder: Path, pattern: str, proc, timeout=300):
    "Wait until a file matching `pattern` appears in `folder` while `proc` runs."
    t0 = time.time()
    while not (folder.is_dir() and any(folder.glob(pattern))):
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < timeout, f"{pattern} never appeared in {folder}"
        time.sleep(0.002)


def complete_or_absent(out: Path):
    "What an interrupted save may leave: nothing at `out`, or a complete model (with pruning.json)."
    assert not out.exists() or (out / "pruning.json").exists() and (out / "config.json").exists(), \
        sorted(p.name for p in out.iterdir())


@pytest.mark.parametrize("streaming", [False, True])
def test_kill_9_during_save_leaves_nothing_or_a_complete_folder_and_the_rerun_works(big, tmp_path, streaming):
    out = tmp_path / "out"
    args = ["prune", big, "--ratio", "2", "--out", out, *(["--streaming"] if streaming else [])]
    p = start(*args)
    wait_for(tmp_path / ".out.partial", "*.safetensors" if streaming else "config.json", p)   # mid-save
    p.send_signal(signal.SIGKILL); p.wait()
    complete_or_absent(out)
    r = glu(*args)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((out / "pruning.json").read_text())["width_after"] == 512
    assert not (tmp_path / ".out.partial").exists()


# On an idle machine the streamed 115 MB take a tenth of a second, so the child may finish before the signal lands:
# this one writes its tensors at a tenth of a second each, leaving seconds between the first shard and the last.
SLOW_WRITES = ("import sys, time\n"
               "from glu_pruning.safetensors import ShardWriter\n"
               "_write = ShardWriter.write\n"
               "def write(self, name, t): time.sleep(0.1); return _write(self, name, t)\n"
               "ShardWriter.write = write\n"
               "from glu_pruning.cli import main\n"
               "sys.argv = ['glu-prune', *sys.argv[1:]]\n"
               "sys.exit(main())")


def test_ctrl_c_says_exactly_what_to_run_and_that_works(big, tmp_path):
    out = tmp_path / "out"
    p = subprocess.Popen([sys.executable, "-c", SLOW_WRITES, "prune", str(big), "--ratio", "2", "--streaming", "--out",
                          str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                         # a shell's background job (a CI runner's `cmd &`) inherits SIGINT ignored: give it back
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    wait_for(tmp_path / ".out.partial", "*.safetensors", p)   # a finished shard: the run is half done
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130 and "Traceback" not in err, err
    i = next(i for i, l in enumerate(err.splitlines()) if "interrupted" in l)
    cmd = shlex.split(err.splitlines()[i + 1])
    assert cmd[0] == "glu-prune" and cmd[1] == "prune" and str(out) in cmd
    complete_or_absent(out)
    r = glu(*cmd[1:])
    assert r.returncode == 0, r.stderr[-2000:]
    assert (out / "pruning.json").exists()


# ---- 4: no checkpoint code is ever run --------------------------------------------------------------------------

EVIL = "open({marker!r}, 'w').write('ran')\nraise SystemExit('the checkpoint code ran')\n"   # transformers runs a copy


@pytest.fixture
def remote(tmp_path) -> Path:
    d = tiny_folder(tmp_path / "remote")
    for f, key, val in (("config.json", "auto_map", {"AutoConfig": "evil.C", "AutoModelForCausalLM": "evil.M"}),
                        ("tokenizer_config.json", "auto_map", {"AutoTokenizer": ["evil.T", None]})):
        cfg = json.loads((d / f).read_text()); cfg[key] = val; (d / f).write_text(json.dumps(cfg))
    (d / "evil.py").write_text(EVIL.format(marker=str(tmp_path / "PWNED")))
    return d


@pytest.mark.parametrize("streaming", [False, True])
def test_remote_code_never_runs(remote, tmp_path, streaming):
    r = glu("prune", remote, "--ratio", "2", "--out", tmp_path / "o", *(["--streaming"] if streaming else []),
            stdin="y\ny\ny\n")
    assert not (remote.parent / "PWNED").exists(), r.stderr[-2000:]
    assert "custom code" not in r.stdout + r.stderr
    assert r.returncode == 0, r.stderr[-2000:]


# ---- 6, 8: targets ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args,words", [
    (["--ratio", "1", "--round-to", "200"], ["round_to=200", "largest allowed round_to here is 64"]),
    (["--ratio", "2", "--round-to", "0"], ["round_to=0"]),
    (["--ratio", "nan"], ["ratio=nan is not a finite number"]),
    (["--ratio", "inf"], ["ratio=inf is not a finite number"]),
    (["--ratio", "0"], ["ratio=0.0 must be above 0"]),
    (["--ratio", "-2"], ["ratio=-2.0 must be above 0"]),
    (["--width", "0"], ["width=0 must be above 0"]),
    (["--percent", "0"], ["percent=0.0"]),
])
@pytest.mark.parametrize("streaming", [False, True])
def test_bad_targets_are_one_line_errors(victim, tmp_path, args, words, streaming):
    r = glu("prune", victim, *args, "--out", tmp_path / "o", *(["--streaming"] if streaming else []))
    one_line_error(r, *words)
    assert not (tmp_path / "o").exists()


def test_a_target_that_prunes_almost_everything_warns(victim, tmp_path):
    r = glu("prune", victim, "--ratio", "0.0001", "--out", tmp_path / "o")
    assert r.returncode == 0 and "keeps only 1 of 160 neurons" in r.stderr, r.stderr


# ---- 9: damaged inputs are one line ---------------------------------------------------------------------------------

def damaged(tmp_path, how: str) -> Path:
    d = tiny_folder(tmp_path / how)
    st, cfg = d / "model.safetensors", d / "config.json"
    if how == "truncated": st.write_bytes(st.read_bytes()[:5000])
    if how == "garbage": st.write_bytes(b"this is not a safetensors file at all " * 40)
    if how == "config": cfg.write_text(cfg.read_text()[:40])
    if how == "width": cfg.write_text(json.dumps(json.loads(cfg.read_text()) | {"intermediate_size": 128}))
    return d


@pytest.mark.parametrize("how,words", [("truncated", ["damaged or truncated"]), ("garbage", ["damaged or truncated"]),
                                       ("config", ["config.json is not valid JSON"]),
                                       ("width", ["do not have the sizes its config.json gives"])])
def test_damaged_model_in_memory(tmp_path, how, words):
    one_line_error(glu("prune", damaged(tmp_path, how), "--ratio", "2", "--out", tmp_path / "o"), *words)


@pytest.mark.parametrize("how,words", [("truncated", ["is truncated"]), ("garbage", ["is not a safetensors file"]),
                                       ("config", ["config.json is not valid JSON"])])
def test_damaged_model_streaming(tmp_path, how, words):
    one_line_error(glu("prune", damaged(tmp_path, how), "--ratio", "2", "--streaming", "--out", tmp_path / "o"), *words)


def test_debug_shows_the_traceback(tmp_path):
    r = glu("prune", damaged(tmp_path, "config"), "--ratio", "2", "--out", tmp_path / "o", "--debug")
    assert r.returncode == 1 and "Traceback" in r.stderr


def test_garbage_store_is_one_line(tmp_path):
    f = tmp_path / "results.sqlite"; f.write_text("not a database\n" * 200)
    r = subprocess.run([sys.executable, "-c", f"from glu_pruning.store import Store; Store({str(f)!r})"],
                       capture_output=True, text=True, env=ENV)
    assert r.returncode == 1 and "results.sqlite is not a glu_pruning result store" in r.stderr


def test_a_locked_store_waits_with_a_progress_line(tmp_path):
    f = tmp_path / "results.sqlite"
    subprocess.run([sys.executable, "-c", f"from glu_pruning.store import Store; Store({str(f)!r}).close()"], env=ENV,
                   check=True)
    holder = subprocess.Popen([sys.executable, "-c", "import sqlite3, sys, time\n"
                               f"c = sqlite3.connect({str(f)!r}, isolation_level=None); c.execute('BEGIN EXCLUSIVE')\n"
                               "print('locked', flush=True); time.sleep(8); c.execute('ROLLBACK')"],
                              stdout=subprocess.PIPE, text=True, env=ENV)
    assert holder.stdout.readline().strip() == "locked"
    t0 = time.time()
    r = subprocess.run([sys.executable, "-c", "from glu_pruning.store import Store\n"
                        f"s = Store({str(f)!r}); s.add_variant('abc', 'tiny'); print(s.variant('abc')['model'])"],
                       capture_output=True, text=True, env=ENV, timeout=120)
    holder.wait()
    assert r.returncode == 0 and r.stdout.strip() == "tiny", r.stderr
    assert "results.sqlite is locked by another process; waiting" in r.stderr and time.time() - t0 > 5


# ---- 11: file modes follow the umask ----------------------------------------------------------------------------------

@pytest.mark.parametrize("umask", [0o022, 0o002])
@pytest.mark.parametrize("streaming", [False, True])
def test_saved_files_get_umask_modes(victim, tmp_path, umask, streaming):
    out = tmp_path / "o"
    r = glu("prune", victim, "--ratio", "2", "--out", out, *(["--streaming"] if streaming else []), umask=umask)
    assert r.returncode == 0, r.stderr[-2000:]
    assert {oct(p.stat().st_mode & 0o777) for p in out.iterdir()} == {oct(0o666 & ~umask)}
    assert oct(out.stat().st_mode & 0o777) == oct(0o777 & ~umask)
