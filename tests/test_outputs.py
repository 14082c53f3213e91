"""What readers see in committed outputs: no machine's paths, no tracebacks, no progress bars frozen mid-run.

Notebook outputs are committed (the docs site and GitHub show them without running anything), so whatever a
development machine printed is published: a `/work/...` or `/tmp/...` path, a traceback, a tqdm bar saved at
"0/65". This scans every notebook's outputs and the run manifests committed beside them.
"""
from __future__ import annotations
import json, re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LEAKS = {
    "a machine path": re.compile(r"(?<![\w.])/(?:work|tmp|root|home/\w+|Users/\w+)/"),
    "a traceback": re.compile(r"Traceback \(most recent call last\)"),
    "a progress bar frozen mid-run": re.compile(r"\b(\d+)/(\d+) \[|(?<![\w.])0\.00/[\d.]+[kMG]?\b|\b0 examples \["),
}
WIDGET = "application/vnd.jupyter.widget-view+json"


def _texts(out: dict):
    "Every piece of text an output shows (stream text, plain/HTML/markdown data)."
    if "text" in out: yield "".join(out["text"]) if isinstance(out["text"], list) else out["text"]
    for mime, v in out.get("data", {}).items():
        if mime.startswith("text/") or mime == "application/json":
            yield "".join(v) if isinstance(v, list) else json.dumps(v) if not isinstance(v, str) else v


def leaks(text: str) -> list[str]:
    found = []
    for what, rx in LEAKS.items():
        for m in rx.finditer(text):
            if what.startswith("a progress") and m.group(1) and m.group(1) == m.group(2): continue  # a finished bar
            found.append(f"{what}: …{text[max(0, m.start() - 40):m.end() + 40]!r}…")
    return found


def test_the_scanner_finds_what_it_should():
    assert leaks("saved to /tmp/tmpv896b91u/cli") and leaks("see /work/shared/data/hf/x")
    assert leaks("sweep:   0%|          | 0/65 [00:00<?, ?cell/s]") and leaks("0.00/6.43M [00:00<?, ?B/s]")
    assert not leaks("sweep: 100%|██████████| 65/65 [03:19<00:00, 3.1s/cell]")
    assert not leaks("$GLU_PRUNING_DATA/hf/Rowan/hellaswag is missing; the ratio 1/2 and 3/4")


NOTEBOOKS = sorted(p for p in (ROOT / "nbs").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT / "nbs")))
def test_committed_outputs_are_clean(nb):
    problems = []
    for i, cell in enumerate(json.loads(nb.read_text())["cells"]):
        for out in cell.get("outputs", []):
            if WIDGET in out.get("data", {}) and LEAKS["a progress bar frozen mid-run"].search(
                    "".join(out["data"].get("text/plain", ""))):
                problems.append(f"cell {i}: a progress bar saved as a widget (run `python tools/clean_outputs.py`)")
                continue
            for t in _texts(out): problems += [f"cell {i}: {p}" for p in leaks(t)]
    assert not problems, f"{nb.name}:\n" + "\n".join(problems[:10])


def test_committed_run_manifests_are_clean():
    for f in (ROOT / "nbs").rglob("*.json"):
        assert not leaks(f.read_text()), f"{f.relative_to(ROOT)}: {leaks(f.read_text())[:3]}"
