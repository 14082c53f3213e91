"""Scale-out evaluation: lm-eval's data parallelism under `accelerate launch` gives the same metric as one process.

On GPUs the documented command is `accelerate launch -m lm_eval --model hf ...`. Here, on CPU, two things differ and
this test spells both out:
- `accelerate launch --cpu --num_processes 2` starts several processes only through MPI (`--mpirun_hostfile`);
  without MPI we let accelerate start them with torchrun and tell it to stay on CPU (gloo backend):
  `ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 ...`.
- lm-eval's HF backend splits the data across processes only when it sees more than one GPU, so the script below
  hands it the rank and world size that accelerate reports. Everything else (sharding the documents by rank,
  padding, gathering the per-document results on rank 0, aggregating) is lm-eval's own data-parallel code.
"""
import json, os, shutil, subprocess, sys
from pathlib import Path

import pytest

# ~45 s on 2 cores: two lm-eval runs of SmolLM2 on 20 ARC-Easy questions (one of them with two processes)

SCRIPT = r'''
import json, sys
from accelerate import Accelerator
from lm_eval import simple_evaluate
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager

model_dir, include, out, limit = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
lm = HFLM(pretrained=model_dir, dtype="float32", batch_size=1, device="cpu")
acc = Accelerator()
if acc.num_processes > 1 and lm.world_size == 1:   # the HF backend only does this itself when it sees >1 GPU
    lm.accelerator, lm._rank, lm._world_size = acc, acc.process_index, acc.num_processes
seen = []
ll = lm.loglikelihood
lm.loglikelihood = lambda reqs, **kw: (seen.append(len(reqs)), ll(reqs, **kw))[1]
res = simple_evaluate(model=lm, tasks=["arc_easy_offline"], limit=limit, task_manager=TaskManager(include_path=include))
Path = __import__("pathlib").Path
Path(out, f"rank{lm.rank}.json").write_text(json.dumps(dict(
    world=lm.world_size, requests=sum(seen),
    results=None if res is None else {k: v for k, v in res["results"]["arc_easy_offline"].items() if k != "alias"})))
'''


def offline_task(tmp: Path) -> Path | None:
    "arc_easy exactly as lm-eval ships it, reading the offline copy of its test split."
    import lm_eval.tasks
    from glu_pruning.tasks import data_root as data_dir
    d = data_dir()
    data = d / "allenai/ai2_arc/ARC-Easy/test.jsonl" if d else None
    if data is None or not data.exists(): return None
    stock = Path(lm_eval.tasks.__file__).parent / "arc" / "arc_easy.yaml"
    inc = tmp / "tasks"; inc.mkdir()
    (inc / "arc_easy_offline.yaml").write_text(
        f"include: {stock}\ntask: arc_easy_offline\ntag: []\ndataset_path: json\ndataset_name: null\n"
        f"training_split: null\nvalidation_split: null\ndataset_kwargs:\n  data_files:\n    test: {data}\n")
    return inc


def run(cmd, env):
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]


def test_data_parallel_same_metric_as_one_process(tmp_path):
    if shutil.which("accelerate") is None and not (Path(sys.executable).parent / "accelerate").exists():
        pytest.skip("accelerate is not installed")
    inc = offline_task(tmp_path)
    if inc is None: pytest.skip("offline ARC-Easy data not found (set GLU_PRUNING_DATA)")
    from glu_pruning.models import DEFAULT_MODEL, gguf_to_plain, resolve_alias
    model = str(gguf_to_plain(resolve_alias(DEFAULT_MODEL)))
    script = tmp_path / "eval.py"; script.write_text(SCRIPT)
    one, two = tmp_path / "one", tmp_path / "two"; one.mkdir(); two.mkdir()
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS="1")
    limit = "20"
    run([sys.executable, str(script), model, str(inc), str(one), limit], env)
    accelerate = str(Path(sys.executable).parent / "accelerate")
    run([accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
         "--dynamo_backend", "no", str(script), model, str(inc), str(two), limit], dict(env, ACCELERATE_USE_CPU="1"))

    single = json.loads((one / "rank0.json").read_text())
    r0, r1 = (json.loads((two / f"rank{i}.json").read_text()) for i in (0, 1))
    assert single["world"] == 1 and r0["world"] == r1["world"] == 2
    assert single["requests"] == 80                                  # 20 questions × 4 answers
    assert r0["requests"] == r1["requests"] == 40                    # each process scored half of them
    assert r1["results"] is None                                     # rank 0 gathers and aggregates
    for metric in ("acc,none", "acc_norm,none"):
        assert r0["results"][metric] == single["results"][metric], metric
    assert r0["results"]["acc,none"] > 0.25                          # and it is a real score, above chance
