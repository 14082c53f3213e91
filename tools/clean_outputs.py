#!/usr/bin/env python
"""Strip what a reader should never see from committed notebook outputs: progress bars saved mid-run.

A tqdm bar is saved with the notebook as a widget view (or stderr text) frozen at whatever it showed when the
output was captured ("0/65", "0.00/6.43M"); on the docs site, GitHub and Colab it reads as a job that never ran.
This removes those outputs from the notebooks given, or from every notebook under nbs/, and the saved widget state
that no remaining output shows (nbclient keeps every bar's state in the notebook's metadata).
tests/test_outputs.py checks the result. Run it before committing executed notebooks:

    python tools/clean_outputs.py [NOTEBOOK ...]
"""
from __future__ import annotations
import json, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WIDGET = "application/vnd.jupyter.widget-view+json"
PROGRESS = re.compile(r"\d+%\|| \d+(?:\.\d+)?[kMG]?/\d+(?:\.\d+)?[kMG]? \[|examples/s\]|it/s\]|\?it/s")


def _text(v) -> str: return "".join(v) if isinstance(v, list) else str(v)


def is_progress(out: dict) -> bool:
    "A tqdm bar: a widget view whose plain-text face is a bar, or stderr lines that are all bars."
    data = out.get("data", {})
    if WIDGET in data: return bool(PROGRESS.search(_text(data.get("text/plain", ""))))
    if out.get("name") == "stderr":
        lines = [l for l in re.split(r"[\r\n]", _text(out.get("text", ""))) if l.strip()]
        return bool(lines) and all(PROGRESS.search(l) for l in lines)
    return False


def clean(path: Path) -> int:
    nb = json.loads(path.read_text())
    n = 0
    for c in nb["cells"]:
        if c.get("cell_type") != "code": continue
        keep = [o for o in c.get("outputs", []) if not is_progress(o)]
        n += len(c.get("outputs", [])) - len(keep)
        c["outputs"] = keep
    views = any(WIDGET in o.get("data", {}) for c in nb["cells"] for o in c.get("outputs", []))
    stale = not views and "widgets" in nb.get("metadata", {})   # saved widget state no remaining output shows
    if stale: del nb["metadata"]["widgets"]
    if n or stale: path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return n


if __name__ == "__main__":
    paths = [Path(p) for p in sys.argv[1:]] or sorted(p for p in (ROOT / "nbs").rglob("*.ipynb")
                                                      if ".ipynb_checkpoints" not in p.parts)
    for p in paths:
        n = clean(p)
        if n: print(f"{p}: removed {n} progress-bar output(s)")
