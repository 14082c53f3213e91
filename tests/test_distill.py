"Distillation (`glu_pruning.distill`): a few steps on a tiny model, crash and resume, the store, the CLI."
import json

import pytest
import torch
from transformers import AutoModelForCausalLM, TrainerCallback

from glu_pruning.distill import distill, distill_loss
from glu_pruning.models import find_mlps, fingerprint, tiny_model
from glu_pruning.slicing import prune, save_pruned
from glu_pruning.store import Store

KW = dict(batch_size=2, max_length=32, lr=1e-3, save_steps=4, progress=False)


@pytest.fixture(scope="module")
def setup(smollm2, data_dir):
    from glu_pruning.scoring import calibration_texts
    tok = smollm2[1]
    teacher = tiny_model("llama", hidden=32, intermediate=96, layers=2, vocab=len(tok), initializer_range=0.3)
    return teacher, tok, calibration_texts(6)


def student(teacher): return prune(teacher, ratio=2.0, inplace=False, progress=False).model


class Crash(TrainerCallback):
    def on_step_end(self, args, state, control, **k):
        if state.global_step == 6: raise KeyboardInterrupt("simulated crash")


def test_distill_runs_resumes_and_records(setup, tmp_path):
    teacher, tok, texts = setup
    ref, rec = distill(student(teacher), teacher, tok, texts, steps=8, out_dir=tmp_path / "a", store=tmp_path / "s.sqlite", **KW)
    assert [s for s, _ in rec["loss"]] == list(range(1, 9)) and rec["resumed"] is False
    mlp_before, mlp_after = find_mlps(student(teacher))[0].w_down, find_mlps(ref)[0].w_down
    assert not torch.equal(mlp_before, mlp_after)                                  # the MLPs trained
    assert torch.equal(ref.model.layers[0].self_attn.q_proj.weight, teacher.model.layers[0].self_attn.q_proj.weight)
    with Store(tmp_path / "s.sqlite") as st:
        items = st.items(fingerprint(ref), "distill", "loss")
        assert len(items) == 8 and st.variant(fingerprint(ref))["meta"]["recovery"] == "distill"
    with pytest.raises(KeyboardInterrupt):
        distill(student(teacher), teacher, tok, texts, steps=8, out_dir=tmp_path / "b", callbacks=[Crash()], **KW)
    assert (tmp_path / "b" / "checkpoint-4").is_dir()
    again, rec_b = distill(student(teacher), teacher, tok, texts, steps=8, out_dir=tmp_path / "b", **KW)
    assert rec_b["resumed"] is True
    torch.testing.assert_close(find_mlps(again)[1].w_down, find_mlps(ref)[1].w_down, rtol=1e-4, atol=1e-5)


def test_distill_loss_masks_padding():
    z = torch.randn(1, 3, 5)
    zs = z.clone(); zs[0, 2, 0] += 3.0     # differs only at a padded position
    assert distill_loss(zs, z, torch.tensor([[1, 1, 0]])).item() == pytest.approx(0.0, abs=1e-6)
    assert distill_loss(zs, z).item() > 0


def test_cli_recover(setup, tmp_path):
    from glu_pruning.cli import main
    teacher, tok, texts = setup
    tdir = tmp_path / "teacher"; teacher.save_pretrained(tdir); tok.save_pretrained(tdir)
    m = AutoModelForCausalLM.from_pretrained(tdir)
    prune(m, ratio=2.0, progress=False)
    pdir = save_pruned(m, tok, tmp_path / "pruned")
    assert main(["recover", str(pdir), "--teacher", str(tdir), "--steps", "3", "--calibration", "6",
                 "--batch-size", "2", "--device", "cpu"]) == 0
    out = tmp_path / "pruned-distilled"
    meta = json.loads((out / "pruning.json").read_text())
    assert meta["recovery"][-1]["method"] == "distill" and meta["recovery"][-1]["steps"] == 3
    assert "distil" in (out / "README.md").read_text().lower()
    back = AutoModelForCausalLM.from_pretrained(out)
    assert back.config.intermediate_size == 64 and not (tmp_path / "pruned-distilled.checkpoints").exists()
    assert main(["recover", str(tmp_path), "--teacher", str(tdir), "--steps", "1"]) == 1   # not a pruned folder
