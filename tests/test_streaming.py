"""Streaming pruning (`glu_pruning.streaming.prune_checkpoint`): same bytes as in-memory prune + save_pruned,
across families, shard layouts and criteria; resume after an interruption; clear errors."""
import json, os
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from glu_pruning import streaming
from glu_pruning.models import tiny_model
from glu_pruning.slicing import prune, save_pruned
from glu_pruning.safetensors import open_checkpoint, read_tensor
from glu_pruning.streaming import prune_checkpoint
from helpers import synthetic_checkpoint


def in_memory(src: Path, out: Path, **kw) -> Path:
    "The reference: load the checkpoint as stored, prune in memory, save."
    m = AutoModelForCausalLM.from_pretrained(src, dtype="auto")
    prune(m, progress=False, **kw)
    return save_pruned(m, None, out)


def files(d: Path) -> dict:
    return {f.name: f.read_bytes() for f in sorted(d.iterdir())}


def same_tensors(a: Path, b: Path):
    ta, tb = open_checkpoint(a).tensors, open_checkpoint(b).tensors
    assert set(ta) == set(tb)
    for k in ta: assert torch.equal(read_tensor(ta[k]), read_tensor(tb[k])), k


CASES = [  # family, tiny_model overrides, prune spec
    ("llama", {}, dict(ratio=1.5)),
    ("llama", dict(tie_word_embeddings=True), dict(percent=40)),
    ("llama", dict(mlp_bias=True), dict(width=100, criterion="l2")),
    ("phi3", {}, dict(ratio=2.0)),                       # fused gate_up_proj
    ("phi3", dict(tie_word_embeddings=True), dict(ratio=1.2, round_to=16, criterion="random", seed=3)),
    ("qwen2", {}, dict(ratio=2.0, criterion="vow")),
    ("mistral", {}, dict(percent=25, criterion="pon")),
    ("gemma", {}, dict(ratio=2.0)),                      # tied embeddings, scaled embeddings
]


@pytest.mark.parametrize("family,overrides,spec", CASES)
def test_bit_identical_to_in_memory(tmp_path, family, overrides, spec):
    src = tmp_path / "src"
    tiny_model(family, **overrides).save_pretrained(src)
    a = prune_checkpoint(str(src), tmp_path / "stream", progress=False, **spec)
    b = in_memory(src, tmp_path / "memory", **spec)
    fa, fb = files(a), files(b)
    assert list(fa) == list(fb)
    for name in fa: assert fa[name] == fb[name], f"{family} {spec}: {name} differs"
    meta = json.loads(fa["pruning.json"])
    assert meta["width_after"] == json.loads(fa["config.json"])["intermediate_size"] < 160


def test_sharded_checkpoint(tmp_path):
    "Many small shards, layers straddling shard boundaries: same tensors and config, index mirrors the source."
    src = tmp_path / "src"
    tiny_model("llama", layers=3).save_pretrained(src, max_shard_size="60KB")
    ck = open_checkpoint(src)
    assert len(ck.shards) > 3
    a = prune_checkpoint(str(src), tmp_path / "stream", ratio=1.5, progress=False)
    b = in_memory(src, tmp_path / "memory", ratio=1.5)
    same_tensors(a, b)
    for f in ("config.json", "generation_config.json", "pruning.json", "README.md"):
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    ia, isrc = (json.loads((d / "model.safetensors.index.json").read_text()) for d in (a, src))
    assert ia["weight_map"] == isrc["weight_map"]
    assert ia["metadata"]["total_size"] == sum(i.nbytes for i in open_checkpoint(a).tensors.values())
    n_after = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(a).parameters())
    assert ia["metadata"]["total_parameters"] == n_after


def test_synthetic_llama_layout(tmp_path):
    "The benchmark's synthetic checkpoint at a small size: streamed output equals the in-memory one."
    src = synthetic_checkpoint(tmp_path / "syn", "llama-3.2-3b", max_shard_size=1 << 20, num_hidden_layers=2,
                               hidden_size=192, intermediate_size=512, num_attention_heads=3, head_dim=64,
                               num_key_value_heads=1, vocab_size=512)
    assert len(open_checkpoint(src).shards) > 1
    a = prune_checkpoint(str(src), tmp_path / "stream", ratio=2.4, progress=False)
    b = in_memory(src, tmp_path / "memory", ratio=2.4)
    same_tensors(a, b)
    assert json.loads((a / "config.json").read_text()) == json.loads((b / "config.json").read_text())
    assert (a / "pruning.json").read_bytes() == (b / "pruning.json").read_bytes()


class Stop(KeyboardInterrupt): pass


def test_resume_after_interruption(tmp_path, monkeypatch):
    src = tmp_path / "src"
    tiny_model("phi3", layers=3).save_pretrained(src, max_shard_size="60KB")
    shards = list(open_checkpoint(src).shards)
    ref = prune_checkpoint(str(src), tmp_path / "ref", ratio=1.5, progress=False)

    out, closes = tmp_path / "out", []
    real_close = streaming.ShardWriter.close
    def close_then_stop(self):
        if len(closes) == 2: raise Stop()
        closes.append(self.path.name)
        return real_close(self)
    monkeypatch.setattr(streaming.ShardWriter, "close", close_then_stop)
    with pytest.raises(Stop): prune_checkpoint(str(src), out, ratio=1.5, progress=False)
    monkeypatch.setattr(streaming.ShardWriter, "close", real_close)

    part = tmp_path / ".out.partial"   # the run writes into a sibling folder; the output folder does not exist yet
    state = json.loads((part / ".glu_streaming.json").read_text())
    assert state["done"] == shards[:2] and not out.exists()
    assert (part / (shards[2] + ".partial")).exists()
    kept = {f: os.stat(part / f) for f in shards[:2]}

    prune_checkpoint(str(src), out, ratio=1.5, progress=False)
    for f, st in kept.items():   # finished shards were verified and kept, not rewritten
        assert (os.stat(out / f).st_ino, os.stat(out / f).st_mtime_ns) == (st.st_ino, st.st_mtime_ns)
    assert files(out) == files(ref)
    assert not (out / ".glu_streaming.json").exists() and not part.exists()


def test_interrupted_run_of_another_job_starts_over(tmp_path, monkeypatch):
    src = tmp_path / "src"
    tiny_model("llama", layers=3).save_pretrained(src, max_shard_size="60KB")
    real_close = streaming.ShardWriter.close
    def stop(self): raise Stop()
    monkeypatch.setattr(streaming.ShardWriter, "close", stop)
    with pytest.raises(Stop): prune_checkpoint(str(src), tmp_path / "out", ratio=1.5, progress=False)
    monkeypatch.setattr(streaming.ShardWriter, "close", real_close)
    out = prune_checkpoint(str(src), tmp_path / "out", ratio=1.2, progress=False)
    assert json.loads((out / "pruning.json").read_text())["spec"] == {"ratio": 1.2}


def test_resume_rewrites_a_damaged_shard(tmp_path, monkeypatch):
    src = tmp_path / "src"
    tiny_model("llama", layers=3).save_pretrained(src, max_shard_size="60KB")
    shards = list(open_checkpoint(src).shards)
    ref = prune_checkpoint(str(src), tmp_path / "ref", width=64, progress=False)
    out, n = tmp_path / "out", []
    real_close = streaming.ShardWriter.close
    def close_then_stop(self):
        if len(n) == 1: raise Stop()
        n.append(1)
        return real_close(self)
    monkeypatch.setattr(streaming.ShardWriter, "close", close_then_stop)
    with pytest.raises(Stop): prune_checkpoint(str(src), out, width=64, progress=False)
    monkeypatch.setattr(streaming.ShardWriter, "close", real_close)
    with open(tmp_path / ".out.partial" / shards[0], "r+b") as f: f.truncate(100)   # a damaged "finished" shard
    prune_checkpoint(str(src), out, width=64, progress=False)
    assert files(out) == files(ref)


def test_existing_output(tmp_path):
    src = tmp_path / "src"
    tiny_model("llama").save_pretrained(src)
    out = prune_checkpoint(str(src), tmp_path / "out", ratio=1.5, progress=False)
    with pytest.raises(FileExistsError, match="overwrite=True"): prune_checkpoint(str(src), out, ratio=1.5, progress=False)
    prune_checkpoint(str(src), out, ratio=2.0, overwrite=True, progress=False)
    assert json.loads((out / "config.json").read_text())["intermediate_size"] == 128
    with pytest.raises(ValueError, match="is the input"): prune_checkpoint(str(src), src, ratio=1.5, overwrite=True)
    with pytest.raises(ValueError, match="contains the input"):
        prune_checkpoint(str(src), tmp_path, ratio=1.5, overwrite=True)
    assert (src / "model.safetensors").exists()


def test_clear_errors(tmp_path, monkeypatch):
    src = tmp_path / "src"
    tiny_model("llama").save_pretrained(src)
    with pytest.raises(ValueError, match="weight-only criterion"):
        prune_checkpoint(str(src), tmp_path / "o", ratio=1.5, criterion="wanda")
    with pytest.raises(ValueError, match="unknown criterion"):
        prune_checkpoint(str(src), tmp_path / "o", ratio=1.5, criterion="nope")
    with pytest.raises(ValueError, match="ratio below"): prune_checkpoint(str(src), tmp_path / "o", ratio=9.0)
    cfg = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps(cfg | {"quantization_config": {"quant_method": "bitsandbytes"}}))
    with pytest.raises(ValueError, match="quantized"): prune_checkpoint(str(src), tmp_path / "o", ratio=1.5)
    (src / "config.json").write_text(json.dumps(cfg | {"model_type": "gpt2"}))
    with pytest.raises(ValueError, match="non-gated"): prune_checkpoint(str(src), tmp_path / "o", ratio=1.5)
    (src / "model.safetensors").unlink()
    (src / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="safetensors"): prune_checkpoint(str(src), tmp_path / "o", ratio=1.5)
    import huggingface_hub
    def offline(*a, **k): raise OSError("offline")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(OSError, match="local checkpoint folder"): prune_checkpoint("someorg/somemodel", tmp_path / "o", ratio=1.5)
    assert not (tmp_path / "o").exists()


def test_cli_streaming(tmp_path, capsys):
    from glu_pruning.cli import main
    src = tmp_path / "src"
    tiny_model("llama").save_pretrained(src)
    assert main(["prune", str(src), "--streaming", "--ratio", "1.5", "--out", str(tmp_path / "out")]) == 0
    assert json.loads((tmp_path / "out" / "pruning.json").read_text())["width_after"] == 96
    assert main(["prune", str(src), "--streaming", "--ratio", "1.5", "--criterion", "activation",
                 "--out", str(tmp_path / "o2")]) == 1
    assert "weight-only" in capsys.readouterr().err


def test_not_enough_disk(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple
    src = tmp_path / "src"
    tiny_model("llama").save_pretrained(src)
    monkeypatch.setattr(streaming.shutil, "disk_usage", lambda p: namedtuple("U", "total used free")(1, 1, 1000))
    with pytest.raises(OSError, match="GB free"): prune_checkpoint(str(src), tmp_path / "o", ratio=1.5, progress=False)
