"""lm-eval's private API, used only through `glu_pruning.lm_eval_compat`: the installed version is one we tested, and
every function of the module works against it. On an lm-eval upgrade, run this file: if it passes, add the new
version to `TESTED_LM_EVAL` in nbs/08a_lm_eval_compat.ipynb."""
import inspect, math, warnings

import pytest

from glu_pruning import lm_eval_compat as compat


def test_installed_lm_eval_is_a_tested_version():
    v = compat.lm_eval_version()
    assert v in compat.TESTED_LM_EVAL, (
        f"lm-eval {v} is not in TESTED_LM_EVAL {compat.TESTED_LM_EVAL}: glu_pruning reaches into its private API "
        f"(see glu_pruning/lm_eval_compat.py). If the other tests of this file pass, add {v!r} to TESTED_LM_EVAL in "
        f"nbs/08a_lm_eval_compat.ipynb; otherwise pin pip install 'lm_eval=={compat.TESTED_LM_EVAL[-1]}'")


def test_an_untested_version_warns_once_with_the_fix(monkeypatch):
    monkeypatch.setattr(compat, "lm_eval_version", lambda: "9.9.9")
    monkeypatch.setattr(compat, "_WARNED", set())
    with pytest.warns(UserWarning, match=r"lm-eval 9.9.9 is not a version glu_pruning was tested with .*lm_eval==0\.4"):
        assert compat.check_lm_eval() is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert compat.check_lm_eval() is False        # once per process


def test_task_index_kinds_and_yaml_loader():
    idx = compat.task_index()
    assert {compat.entry_kind(idx[n]) for n in ("mmlu", "arc_easy")} == {"group", "task"}
    tags = [e for e in idx.values() if compat.entry_kind(e) == "tag"]
    assert tags and all(isinstance(e.tags, (set, frozenset, list, tuple)) for e in tags[:5])
    cfg = compat.load_yaml(idx["arc_easy"].yaml_path)
    assert cfg["dataset_name"] == "ARC-Easy" and cfg["task"] == "arc_easy"
    assert cfg["dataset_path"] == "allenai/ai2_arc"          # the `include`d base resolved
    sub = compat.task_index(__import__("pathlib").Path(idx["arc_easy"].yaml_path).parent)
    assert "arc_easy" in sub and "mmlu" not in sub


def test_hflm_attributes_and_scorer_replacement():
    "The HFLM attributes we read exist; the scorer can be replaced and the stock one called."
    from glu_pruning.models import load_model, tiny_model
    _, tok = load_model("smollm2-135m-instruct", device="cpu")
    model = tiny_model("llama", hidden=32, intermediate=64, layers=1, vocab=len(tok))
    lm = compat.hf_lm(model, tok, batch_size=2, max_length=64)
    assert all(hasattr(lm, a) for a in compat.HFLM_ATTRIBUTES), [a for a in compat.HFLM_ATTRIBUTES if not hasattr(lm, a)]
    reqs = [(None, [5, 6, 7], [8]), (None, [5, 6], [9, 10])]
    stock = compat.stock_loglikelihood(lm, reqs)
    assert len(stock) == 2 and all(math.isfinite(ll) and isinstance(g, bool) for ll, g in stock)
    def mine(self, requests, disable_tqdm=False, override_bs=None): return [(-1.0, False)] * len(requests)
    compat.set_loglikelihood(lm, mine)
    assert compat.loglikelihood_fn(lm) is mine
    assert lm.loglikelihood([type("I", (), {"args": ("a", " b")})()], disable_tqdm=True) == [(-1.0, False)]
    with compat.rows_per_batch(lm, 5): assert lm.batch_size_per_gpu == 5
    assert lm.batch_size_per_gpu == 2


def test_env_probe_is_skipped_only_inside():
    import lm_eval.evaluator as E
    probe = E.add_env_info
    with compat.no_env_probe(): assert E.add_env_info is not probe and E.add_env_info({}) is None
    assert E.add_env_info is probe


def test_public_api_we_rely_on():
    "simple_evaluate takes the sampled items (`samples=`); TaskManager.load returns tasks and groups."
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager
    assert {"samples", "limit", "apply_chat_template", "fewshot_as_multiturn", "gen_kwargs"} <= \
        set(inspect.signature(simple_evaluate).parameters)
    assert "task_list" in inspect.signature(TaskManager.load).parameters
