#!/usr/bin/env python
"""Render the docs site offline: nbdev's processed notebooks -> static HTML, as the Quarto site would show them.

The published site is built by Quarto (`nbdev-docs`, see .github/workflows/deploy.yaml). Quarto needs a download,
so on an offline machine this script does the same job with what the dev environment has:

1. `nbdev.serve.proc_nbs` writes `_proc/`: every notebook with its `show_doc` cells executed, `#| hide` cells
   removed and front matter (title, description, output file) added, exactly what Quarto would receive.
2. Each processed notebook becomes one HTML page (nbconvert's `basic` template for the cells) inside a page shell
   with the sidebar from `nbs/sidebar.yml` and `nbs/styles.css`. Quarto cell options are honoured: `echo: false`,
   `output: false`, `include: false`; `#|` lines are not shown.
3. Math (`$...$`, `$$...$$`) in markdown is typeset as MathML (latex2mathml), which browsers render natively with no
   script or font download; Quarto typesets the same source with MathJax on the published site.
4. plotly figures in outputs load plotly.js from its CDN; here the CDN address is swapped for a local copy of the
   same file (`plotly.min.js` from the installed plotly package), so the pages work with no network. The "Open in
   Colab" badge image is swapped for a local drawing of it the same way.

`--readme` also writes README.md from `nbs/index.ipynb` (what `nbdev-readme` does with Quarto); `--readme-only`
does just that, in a second.

Usage: python tools/render_docs.py [--out _docs] [--only GLOB] [--no-proc] [--readme] [--workers N]
"""
from __future__ import annotations
import argparse, base64, fnmatch, html, json, re, shutil, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS, PROC = ROOT / "nbs", ROOT / "_proc"
CDN_RE = re.compile(r'<script[^>]*src="https://cdn\.plot\.ly/plotly-[\d.]+(?:\.min)?\.js"[^>]*></script>')
DIRECTIVE_RE = re.compile(r"^\s*#\|\s*([\w-]+)\s*:?\s*(.*?)\s*$")


def directives(src: str) -> tuple[dict, str]:
    "Quarto/nbdev `#| key: value` options of a code cell, and its source without them."
    opts, keep = {}, []
    for line in src.splitlines():
        m = DIRECTIVE_RE.match(line)
        if m: opts[m.group(1)] = m.group(2).strip().lower() or "true"
        else: keep.append(line)
    return opts, "\n".join(keep).strip("\n")


def front_matter(nb: dict) -> dict:
    "The YAML front matter nbdev puts in a processed notebook's first raw cell (title, description, output-file)."
    import yaml
    for c in nb["cells"]:
        src = "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
        if c["cell_type"] == "raw" and src.lstrip().startswith("---"):
            body = src.strip().strip("-")
            try: return yaml.safe_load(body) or {}
            except yaml.YAMLError: return {}
    return {}


def callouts(md: str) -> str:
    "Quarto `::: {.callout-note}` blocks -> HTML divs (the markdown inside still renders)."
    md = re.sub(r"^:::\s*\{\.(callout-\w+)[^}]*\}\s*$", r'<div class="callout \1">\n', md, flags=re.M)
    return re.sub(r"^:::\s*$", "\n</div>", md, flags=re.M)


def quarto_links(md: str) -> str:
    "`[text](url){target=\"_blank\" style=\"...\"}` (Quarto link attributes) -> an HTML link with those attributes."
    return re.sub(r'\[([^\]]+)\]\(([^)\s]+)\)\{([^}]*)\}', lambda m: f'<a href="{m.group(2)}" {m.group(3)}>{m.group(1)}</a>', md)


COLAB_BADGE_URL = "https://colab.research.google.com/assets/colab-badge.svg"
COLAB_BADGE_SVG = (  # the badge's look (117×20), drawn here so an offline page shows it
    '<svg xmlns="http://www.w3.org/2000/svg" width="117" height="20" role="img" aria-label="Open in Colab">'
    '<rect width="117" height="20" rx="3" fill="#555"/><rect x="24" width="93" height="20" rx="3" fill="#1a73e8"/>'
    '<circle cx="9" cy="10" r="5" fill="none" stroke="#f9ab00" stroke-width="3"/>'
    '<circle cx="16" cy="10" r="5" fill="none" stroke="#f9ab00" stroke-width="3"/>'
    '<text x="70" y="14" fill="#fff" font-family="Verdana,sans-serif" font-size="11" text-anchor="middle">'
    'Open in Colab</text></svg>')
MATH_RE = re.compile(r"(?<!\\)\$\$(.+?)\$\$|(?<![\\$\w])\$(?!\s)([^$\n]+?)(?<!\s)\$(?![\w$])", re.S)
CODE_RE = re.compile(r"(```.*?```|`[^`\n]*`)", re.S)


def typeset_math(md: str) -> str:
    "`$$...$$` (display) and `$...$` (inline) LaTeX in markdown -> MathML; code spans and blocks are left alone."
    from latex2mathml.converter import convert
    def _one(m):
        display = m.group(1) is not None
        tex = (m.group(1) if display else m.group(2)).strip()
        try: mathml = convert(tex, display="block" if display else "inline")
        except Exception: return m.group(0)   # not LaTeX after all (e.g. two prices on a line): leave the text
        return f'\n\n<div class="math">{mathml}</div>\n\n' if display else mathml
    parts = CODE_RE.split(md)
    return "".join(p if i % 2 else MATH_RE.sub(_one, p) for i, p in enumerate(parts))


def prepare(nb: dict) -> dict:
    "Apply Quarto cell options as nbconvert tags, so the exporter shows what the site would."
    cells = []
    for c in nb["cells"]:
        src = "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
        if c["cell_type"] == "raw": continue  # front matter
        if c["cell_type"] == "markdown":
            if src.strip() == "<!-- WARNING: THIS FILE WAS AUTOGENERATED! DO NOT EDIT! -->": continue
            c["source"] = typeset_math(callouts(src))
            cells.append(c); continue
        # widget views need a kernel (and their saved state, which we do not keep): a static page shows nothing there
        c["outputs"] = [o for o in c.get("outputs", []) if "application/vnd.jupyter.widget-view+json" not in o.get("data", {})]
        for o in c.get("outputs", []):   # show_doc's Quarto link attributes -> plain HTML links
            md = o.get("data", {}).get("text/markdown")
            if md is not None: o["data"]["text/markdown"] = quarto_links("".join(md) if isinstance(md, list) else md)
        opts, code = directives(src)
        if opts.get("include") == "false" or opts.get("hide") == "true": continue
        tags = set(c.get("metadata", {}).get("tags", []))
        if opts.get("echo") == "false" or not code.strip(): tags.add("remove_input")
        if opts.get("output") == "false": tags.add("remove_output")
        if not code.strip() and not c.get("outputs"): continue
        c["source"] = code
        c.setdefault("metadata", {})["tags"] = sorted(tags)
        cells.append(c)
    keys = {"code": {"id", "cell_type", "source", "metadata", "outputs", "execution_count"},
            "markdown": {"id", "cell_type", "source", "metadata", "attachments"}}
    nb["cells"] = [{k: v for k, v in c.items() if k in keys[c["cell_type"]]} for c in cells]  # nbdev adds e.g. has_sd
    for c in nb["cells"]:
        c["metadata"] = {"tags": c.get("metadata", {}).get("tags", [])}
        if c["cell_type"] == "code": c.setdefault("execution_count", None); c.setdefault("outputs", [])
    return nb


def sidebar() -> list[tuple[str, list[str]]]:
    "Sections and their pages from nbs/sidebar.yml: [(section title or '', [notebook paths])]."
    import yaml
    f = NBS / "sidebar.yml"
    contents = yaml.safe_load(f.read_text())["website"]["sidebar"]["contents"] if f.exists() else []
    out, top = [], []
    for item in contents:
        if isinstance(item, str): top.append(item)
        elif isinstance(item, dict) and "section" in item:
            out.append((item["section"], [p for p in item.get("contents", []) if isinstance(p, str)]))
    return [("", top)] + out


def page_name(nb_path: Path, fm: dict) -> str:
    rel = nb_path.relative_to(PROC)
    name = fm.get("output-file") or re.sub(r"^\d+_", "", rel.stem) + ".html"
    return str(rel.parent / name) if str(rel.parent) != "." else name


def shell(title: str, desc: str, body: str, nav: str, depth: int, extra_css: str) -> str:
    up = "../" * depth
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)} – glu_pruning</title>
<link rel="stylesheet" href="{up}site.css"><link rel="stylesheet" href="{up}styles.css">
<style>{extra_css}</style>
</head><body>
<header class="site-header"><a href="{up}index.html">glu_pruning</a></header>
<div class="site"><nav class="sidebar">{nav}</nav>
<main class="content"><h1 class="title">{html.escape(title)}</h1>
{f'<p class="description">{html.escape(desc)}</p>' if desc else ''}
{body}
</main></div></body></html>
"""


SITE_CSS = """
body{margin:0;font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#212529;line-height:1.55}
.site-header{background:#2780e3;padding:.6rem 1.2rem}.site-header a{color:#fff;font-weight:600;text-decoration:none;font-size:1.15rem}
.site{display:flex;align-items:flex-start}
.sidebar{flex:0 0 15rem;padding:1rem;position:sticky;top:0;max-height:100vh;overflow:auto;font-size:.92rem}
.sidebar .section{font-weight:600;margin:.8rem 0 .2rem;color:#555}.sidebar a{display:block;padding:.12rem 0;color:#2780e3;text-decoration:none}
.sidebar a.active{font-weight:700;color:#111}
.content{flex:1;min-width:0;max-width:64rem;padding:1rem 2rem 4rem}
.title{margin-bottom:.2rem}.anchor-link{visibility:hidden;text-decoration:none;margin-left:.3rem}
h1:hover .anchor-link,h2:hover .anchor-link,h3:hover .anchor-link,h4:hover .anchor-link{visibility:visible}.description{font-size:1.15rem;color:#555;margin-top:0}
pre{background:#f7f7f9;padding:.6rem .8rem;border-radius:4px;overflow-x:auto;font-size:.86rem}
code{font-size:.88em}
.jp-Cell{margin:.6rem 0}.jp-InputArea-prompt,.jp-OutputPrompt{display:none}
.jp-OutputArea-output pre{background:#fff;border-left:3px solid #e3e3e3}
.jp-RenderedImage img,img{max-width:100%;height:auto}
table{border-collapse:collapse;font-size:.88rem;margin:.5rem 0}th,td{border:1px solid #dee2e6;padding:.2rem .5rem}
.callout{border-left:4px solid #2780e3;background:#f3f8fd;padding:.4rem 1rem;margin:1rem 0}
.callout-warning{border-color:#ff7518;background:#fff6ef}.callout-important{border-color:#c0392b;background:#fdf1f0}
"""


def render_page(nb_path: Path, out_dir: Path, nav_items, exporter) -> tuple[str, str]:
    nb_json = json.loads(nb_path.read_text())
    fm = front_matter(nb_json)
    name = page_name(nb_path, fm)
    import nbformat
    nb = nbformat.reads(json.dumps(prepare(nb_json)), as_version=4)  # joins multi-line strings
    body, _ = exporter.from_notebook_node(nb)
    depth = name.count("/")
    up = "../" * depth
    local = f'<script charset="utf-8" src="{up}plotly.min.js"></script>'
    body, n_cdn = CDN_RE.subn(local, body)
    def _link(m):
        stem = re.sub(r"(^|/)[0-9]+_", lambda k: k.group(1), m.group(1))
        return f'href="{stem}.html{m.group(2) or ""}"'
    body = re.sub(r'href="(?!https?:|#|/)([^"]+?)\.ipynb(#[^"]*)?"', _link, body)
    body = body.replace(COLAB_BADGE_URL, f"{up}colab-badge.svg")
    body = re.sub(r'<a href="https://glu-pruning\.github\.io/glu_pruning/([^"]+)"', rf'<a href="{up}\1"', body)
    nav = []
    for section, pages in nav_items:
        if section: nav.append(f'<div class="section">{html.escape(section)}</div>')
        for p, (t, href) in pages:
            cls = ' class="active"' if href == name else ""
            nav.append(f'<a{cls} href="{up}{href}">{html.escape(t)}</a>')
    from pygments.formatters import HtmlFormatter
    css = HtmlFormatter(style="default").get_style_defs(".highlight")
    title = fm.get("title") or nb_path.stem
    out = out_dir / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(shell(title, fm.get("description", ""), body, "\n".join(nav), depth, css))
    return name, ("plotly" if n_cdn else "")


def nav_table(pages: list[Path]) -> list:
    "Sidebar entries [(section, [(path, (title, href))])] in sidebar.yml order, then any page it misses."
    info = {}
    for p in pages:
        fm = front_matter(json.loads(p.read_text()))
        info[str(p.relative_to(PROC))] = (fm.get("title") or p.stem, page_name(p, fm))
    out, seen = [], set()
    for section, items in sidebar():
        rows = [(i, info[i]) for i in items if i in info]
        seen |= {i for i, _ in rows}
        if rows: out.append((section, rows))
    rest = [(k, v) for k, v in sorted(info.items()) if k not in seen]
    if rest: out.append(("More", rest))
    return out


def readme(index_nb: Path, out: Path):
    """README.md from the source notebook `nbs/index.ipynb` (what `nbdev-readme` does with Quarto): markdown cells as
    they are, shown code fenced, text outputs fenced; figures and HTML tables stay on the docs site."""
    nb = json.loads(index_nb.read_text())
    parts = []
    for c in prepare(nb)["cells"]:
        src = c["source"] if isinstance(c["source"], str) else "".join(c["source"])
        tags = set(c.get("metadata", {}).get("tags", []))
        if c["cell_type"] == "markdown":
            parts.append(src.strip()); continue
        if "remove_input" not in tags and src.strip(): parts.append(f"```python\n{src.strip()}\n```")
        if "remove_output" in tags: continue
        for o in c.get("outputs", []):
            d = o.get("data", {})
            if o.get("output_type") == "stream": text = "".join(o["text"])
            elif "text/markdown" in d: parts.append("".join(d["text/markdown"]).strip()); continue
            elif "image/png" in d or "text/html" in d: continue
            else: text = "".join(d.get("text/plain", ""))
            if text.strip(): parts.append(f"```\n{text.rstrip()}\n```")
    out.write_text("\n\n".join(p for p in parts if p) + "\n")


def process(only: str, workers: int) -> list[str]:
    "Run nbdev's docs processing into _proc/, one notebook at a time, so one broken notebook spoils only its page."
    from nbdev.serve import proc_nbs
    nbs = sorted(p for p in NBS.rglob("*.ipynb") if not any(s.startswith((".", "_")) for s in p.relative_to(NBS).parts)
                 and fnmatch.fnmatch(str(p.relative_to(NBS)), only))
    failed = []
    try: proc_nbs(str(NBS), n_workers=workers, file_re="^(" + "|".join(re.escape(p.name) for p in nbs) + ")$")
    except Exception:
        for p in nbs:
            try: proc_nbs(str(NBS), n_workers=0, file_re="^" + re.escape(p.name) + "$")
            except Exception as e: failed.append(f"{p.relative_to(NBS)}: {str(e).splitlines()[0][:200]}")
    return failed


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "_docs"), help="output folder (default: _docs)")
    ap.add_argument("--only", default="*", help="render only processed notebooks matching this glob")
    ap.add_argument("--no-proc", action="store_true", help="reuse _proc/ instead of running nbdev's processing")
    ap.add_argument("--readme", action="store_true", help="also write README.md from nbs/index.ipynb")
    ap.add_argument("--readme-only", action="store_true", help="only write README.md from nbs/index.ipynb")
    ap.add_argument("--workers", type=int, default=2, help="processes for nbdev's notebook processing")
    a = ap.parse_args(argv)
    if a.readme_only:
        readme(NBS / "index.ipynb", ROOT / "README.md")
        return print(f"wrote {ROOT / 'README.md'} from nbs/index.ipynb")
    failed = [] if a.no_proc else process(a.only, a.workers)
    pages = sorted(p for p in PROC.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
    if not pages: sys.exit(f"no processed notebooks in {PROC}; run without --no-proc")
    out_dir = Path(a.out); out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "site.css").write_text(SITE_CSS)
    (out_dir / "colab-badge.svg").write_text(COLAB_BADGE_SVG)
    if (NBS / "styles.css").exists(): shutil.copy(NBS / "styles.css", out_dir / "styles.css")
    from nbconvert import HTMLExporter
    from traitlets.config import Config
    ex = HTMLExporter(config=Config(TagRemovePreprocessor=dict(enabled=True, remove_input_tags={"remove_input"},
                                                               remove_all_outputs_tags={"remove_output"})),
                      template_name="basic", exclude_input_prompt=True, exclude_output_prompt=True)
    nav = nav_table(pages)
    done, plotly = [], False
    for p in pages:
        if not fnmatch.fnmatch(str(p.relative_to(PROC)), a.only): continue
        name, kind = render_page(p, out_dir, nav, ex)
        plotly |= kind == "plotly"
        done.append(name)
    if plotly:
        import plotly as _pl
        shutil.copy(Path(_pl.__file__).parent / "package_data" / "plotly.min.js", out_dir / "plotly.min.js")
    if a.readme: readme(NBS / "index.ipynb", ROOT / "README.md")
    print(f"rendered {len(done)} page(s) into {out_dir}: {', '.join(done)}")
    if failed:
        print("nbdev could not process: " + "; ".join(failed) + " (their pages are stale or missing)", file=sys.stderr)
        sys.exit(1)
    return done


if __name__ == "__main__":
    main()
