"""Build the demo item pool shipped inside glu_pruning: a seeded sample of every quick-suite task's items.

    python tools/build_demo_pool.py                      # from $GLU_PRUNING_DATA (or ../shared/data)
    python tools/build_demo_pool.py --data DIR --out glu_pruning/data/demo_pool

`glu-prune demo` on a fresh install (no data folder, no network) reads these files instead of the benchmarks.
For each task of the `quick` suite whose data is in the data folder, the pool keeps a seeded random sample of its
evaluation split (`ITEMS`, by the cost class of an item) and the few-shot examples its shots draw from; each file
holds the original JSON lines unchanged, in their original order, gzip-compressed without a timestamp, so the same
data folder and seed give byte-identical files. It writes `pool.json` (what `glu_pruning.taskdata` reads: the items
per task, the sha256 of every file's text, the pool's id) and `SOURCES.md` (per dataset: Hub id, split, licence,
items kept). NLTK's English `punkt_tab` (IFEval's sentence splitter, 240 KB) is copied when IFEval is in the pool.
"""
from __future__ import annotations
import argparse, gzip, hashlib, io, json, os, random, shutil, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SEED = 0
ITEMS = {"scored": 200, "generation": 40, "document": 10}   # evaluation items kept, by `Task.cost`
SUBTASK_ITEMS = 40      # per subtask of a group (MMLU: per subject)
FEWSHOT_ITEMS = 50      # a random few-shot sampler draws from these; `first_n` keeps exactly the first n_shot

# Per Hub dataset: (licence as its source states it, what it is). Every dataset in the pool must be listed here.
LICENCES = {
    "EleutherAI/wikitext_document_level": ("CC BY-SA 3.0 (and GFDL, as Wikipedia text)",
                                           "WikiText-2 (Merity et al. 2016), one record per Wikipedia article"),
    "EleutherAI/lambada_openai": ("MIT on the Hub card; LAMBADA itself is CC BY 4.0",
                                  "LAMBADA (Paperno et al. 2016), OpenAI's detokenized test set"),
    "cais/mmlu": ("MIT", "MMLU (Hendrycks et al. 2021)"),
    "openai/gsm8k": ("MIT", "GSM8K (Cobbe et al. 2021)"),
    "allenai/ai2_arc": ("CC BY-SA 4.0", "ARC (Clark et al. 2018)"),
    "baber/piqa": ("AFL-3.0", "PIQA (Bisk et al. 2020)"),
    "aps/super_glue": ("CC BY-SA 3.0", "BoolQ (Clark et al. 2019), from SuperGLUE"),
    "allenai/winogrande": ("CC BY (the v1.1 release README: CC BY 2.0)", "WinoGrande v1.1 (Sakaguchi et al. 2019)"),
    "truthfulqa/truthful_qa": ("Apache-2.0", "TruthfulQA (Lin et al. 2022)"),
    "google/IFEval": ("Apache-2.0", "IFEval (Zhou et al. 2023)"),
}
PUNKT_LICENCE = ("Apache-2.0 (the nltk_data repository's licence; NLTK lists Punkt's own licence as unclarified, "
                 "nltk/nltk_data#188)")


def _gz(text: str) -> bytes:
    "gzip bytes of `text` with no file name and no timestamp: the same text always gives the same bytes."
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as f: f.write(text.encode())
    return buf.getvalue()


def _records(path: Path) -> list[str]:
    return [l for l in path.read_text(encoding="utf-8").split("\n") if l.strip()]   # not splitlines: \u2028 is text


def _sample(lines: list[str], k: int, key: str) -> list[str]:
    "A seeded random `k` of `lines`, in their original order (all of them when k >= len)."
    if k >= len(lines): return list(lines)
    idx = sorted(random.Random(key).sample(range(len(lines)), k))
    return [lines[i] for i in idx]


def plan(data: Path) -> tuple[dict, dict, list[str]]:
    "({file: (role, items wanted, n_shot for few-shot files)}, {task: {leaf: eval file}}, {task left out: why})."
    from glu_pruning.tasks import TASKS
    from glu_pruning.taskdata import SUITES, _fewshot_split, _leaves, _spec_item, offline_config, stock_config
    want, tasks, left = {}, {}, {}
    for spec in SUITES["quick"]:
        _, leaves = _leaves(_spec_item(spec))
        n_shot = spec.n_shot or 0
        missing = next((why for e in leaves for over, why in [offline_config(e.name, data, n_shot)] if over is None), None)
        if missing: left[spec.task] = missing; continue
        k = SUBTASK_ITEMS if spec.subtasks else ITEMS[TASKS[spec.task].cost]
        tasks[spec.task] = {}
        for e in leaves:
            cfg = stock_config(e.name)
            base = f"{cfg['dataset_path']}/{cfg.get('dataset_name') or 'default'}"
            ev = f"{base}/{cfg.get('test_split') or cfg['validation_split']}.jsonl"
            want[ev] = ("evaluation", max(k, want.get(ev, ("", 0))[1]), 0)
            tasks[spec.task][e.name] = ev
            fs = _fewshot_split(cfg)
            if n_shot and fs and f"{base}/{fs}.jsonl" != ev:
                first_n = (cfg.get("fewshot_config") or {}).get("sampler") == "first_n"
                want[f"{base}/{fs}.jsonl"] = ("few-shot", n_shot if first_n else FEWSHOT_ITEMS, n_shot)
    return want, tasks, left


def build(data, out, seed: int = SEED, punkt: bool = True) -> dict:
    "Write the pool from the data folder `data` into `out`; return the manifest (also written as out/pool.json)."
    from glu_pruning.tasks import TASKS, data_root
    data = data_root(data)
    if data is None: raise FileNotFoundError("no data folder: pass --data DIR (the offline benchmark folder)")
    out = Path(out)
    want, tasks, left = plan(data)
    for sub in ("hf", "nltk_data"): shutil.rmtree(out / sub, ignore_errors=True)   # only what this tool writes
    files = {}
    for rel, (role, k, n_shot) in sorted(want.items()):
        lines = _records(data / rel)
        kept = lines[:k] if role == "few-shot" and k == n_shot else _sample(lines, k, f"demo-pool/{rel}/{seed}")
        text = "\n".join(kept) + "\n"
        dest = out / "hf" / (rel + ".gz")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(_gz(text))
        path, config, split = rel.rsplit("/", 2)
        files[f"hf/{rel}.gz"] = dict(dataset=path, config=config, split=split.removesuffix(".jsonl"), role=role,
                                     items=len(kept), of=len(lines), sha256=hashlib.sha256(text.encode()).hexdigest())
    leaves = {leaf: files[f"hf/{ev}.gz"]["items"] for t in tasks.values() for leaf, ev in t.items()}
    summary = {t: dict(items=min(leaves[l] for l in ls), subtasks=len(ls) if len(ls) > 1 else None,
                       of=TASKS[t].items) for t, ls in tasks.items()}
    nltk = {}
    if punkt and "ifeval" in tasks:
        src = next(d for d in (data / "nltk_data", data.parent / "nltk_data") if d.is_dir())
        for f in sorted((src / "tokenizers/punkt_tab/english").iterdir()):
            dest = out / "nltk_data/tokenizers/punkt_tab/english" / f.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, dest)
            nltk[str(dest.relative_to(out))] = hashlib.sha256(f.read_bytes()).hexdigest()
    ident = hashlib.sha256(json.dumps([files, nltk], sort_keys=True).encode()).hexdigest()[:8]
    manifest = dict(id=f"demo-pool/{ident}", seed=seed, tasks=summary, leaves=leaves, files=files, nltk_data=nltk,
                    left_out=left)
    (out / "pool.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    (out / "SOURCES.md").write_text(sources_md(manifest))
    return manifest


def sources_md(m: dict) -> str:
    "The pool's README: what it is, and per dataset its Hub id, splits, items kept and licence."
    missing = sorted({f["dataset"] for f in m["files"].values()} - set(LICENCES))
    if missing: raise ValueError(f"no licence recorded for {missing}; add each to LICENCES in tools/build_demo_pool.py")
    rows = []
    for p, f in sorted(m["files"].items()):
        lic, what = LICENCES[f["dataset"]]
        rows.append(f"| `{f['dataset']}` | {f['config']} | {f['split']} ({f['role']}) | {f['items']} of {f['of']:,} "
                    f"| {lic} | {what} |")
    mmlu = sum(1 for f in m["files"].values() if f["dataset"] == "cais/mmlu" and f["role"] == "evaluation")
    total = sum(f["items"] for f in m["files"].values() if f["role"] == "evaluation")
    return f"""# The demo item pool (samples for the demo only)

These files let `glu-prune demo` (and any evaluation asking for a sample of a task below) run on a fresh install
with no benchmark data folder and no network. They are **not the benchmarks**: each is a seeded random sample of a
task's evaluation split ({total:,} items over {len(m['tasks'])} tasks), plus the few-shot examples that split's
shots are drawn from. Numbers measured on them estimate the full benchmarks' with the wider intervals of their
smaller n; every result read from here is stored with `data` = `{m['id']}` in its cell config, so it is never
mistaken for (or reused as) a result on the full data. For the full benchmarks set `GLU_PRUNING_DATA` (or
`--data-dir`) to a data folder, e.g. one filled by `glu-prune data download DIR`; a configured folder always wins.

- **Built by** `python tools/build_demo_pool.py` from the offline copies of the Hugging Face datasets that lm-eval
  reads (layout `hf/<hub id>/<config>/<split>.jsonl`), seed {m['seed']}. Each file holds the original JSON lines
  unchanged and in their original order, gzip-compressed; `pool.json` has every file's sha256 (of its text).
- **Items per task** (per subject for MMLU's {mmlu} subjects of the quick suite): {', '.join(f"{t} {s['items']}" for t, s in m['tasks'].items())}.
- **Not here**: {', '.join(m['left_out']) or 'nothing'}{' (their data was not in the folder the pool was built from)' if m['left_out'] else ''}.
- Each dataset keeps its own licence (below), not the package's Apache-2.0; the share-alike ones (CC BY-SA) stay
  under theirs with attribution to their authors.

| Hub dataset | config | split (role) | items kept | licence (as its source states it) | what |
|---|---|---|---|---|---|
{chr(10).join(rows)}
""" + ("" if not m["nltk_data"] else f"""
`nltk_data/tokenizers/punkt_tab/english/`: NLTK's English Punkt sentence tokenizer (`punkt_tab`), which IFEval's
scorer needs, copied unchanged (sha256 in `pool.json`). Licence: {PUNKT_LICENCE}.
""")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=os.environ.get("GLU_PRUNING_DATA") or str(ROOT.parent / "shared" / "data"),
                    help="the offline benchmark data folder (default $GLU_PRUNING_DATA, else ../shared/data)")
    ap.add_argument("--out", default=str(ROOT / "glu_pruning" / "data" / "demo_pool"), help="the pool folder to write")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--no-punkt", action="store_true", help="leave NLTK's punkt_tab out (IFEval then needs a data folder)")
    a = ap.parse_args(argv)
    m = build(a.data, a.out, a.seed, punkt=not a.no_punkt)
    size = sum(p.stat().st_size for p in Path(a.out).rglob("*") if p.is_file())
    print(f"{m['id']}: {len(m['files'])} files, {size / 1e6:.2f} MB in {a.out}; items per task: "
          + ", ".join(f"{t} {s['items']}" for t, s in m["tasks"].items()))
    for t, why in m["left_out"].items(): print(f"left out {t}: {why}")


if __name__ == "__main__":
    main()
