"""The docs site in a real browser: render the explorer page as the site shows it, open it in headless Chromium,
move the in-browser ratio slider and change the model, task-group and criterion menus, and check that the figure
changes each time.

Chromium is driven over the DevTools protocol through a pipe (`--remote-debugging-pipe`), so no Python browser
package is needed. Set GLU_SCREENSHOTS=DIR to keep the screenshots for a look.
Skips, saying why, where no Chromium binary is installed (`apt-get install -y chromium`); GLU_CHROMIUM=PATH picks one.
"""
from __future__ import annotations
import base64, functools, http.server, json, os, shutil, subprocess, sys, tempfile, threading, time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("GLU_CHROMIUM") or next(
    (shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome", "chrome") if shutil.which(b)), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary on PATH: `apt-get install -y "
                                                              "chromium` (Debian) to run the in-browser docs test")


class Browser:
    "A headless Chromium page driven over the DevTools protocol on fds 3/4 (NUL-separated JSON messages)."
    def __init__(self, width=1280, height=900):
        cmd_r, self._cmd_w = os.pipe()      # we write commands, Chromium reads them on fd 3
        self._res_r, res_w = os.pipe()      # Chromium writes replies and events on fd 4
        self.profile = tempfile.mkdtemp(prefix="glu-chromium-")
        def child():  # fds 3/4 in the child, whatever numbers the pipes got here (dup first: they may be 3 or 4)
            a, b = os.dup(cmd_r), os.dup(res_w)
            os.dup2(a, 3); os.dup2(b, 4)
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             "--no-default-browser-check", "--remote-debugging-pipe", f"--user-data-dir={self.profile}",
             "--hide-scrollbars", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=child, close_fds=False)  # close_fds would close 3/4 after preexec_fn
        os.close(cmd_r); os.close(res_w)
        self._buf, self._id, self.events, self.session = b"", 0, [], None
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log"): self.call(f"{domain}.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    def _read(self, timeout=60.0) -> dict:
        deadline = time.time() + timeout
        while b"\0" not in self._buf:
            if time.time() > deadline: raise TimeoutError("no message from Chromium")
            import select
            r, _, _ = select.select([self._res_r], [], [], 0.5)
            if r:
                chunk = os.read(self._res_r, 1 << 20)
                if not chunk: raise RuntimeError("Chromium closed the DevTools pipe")
                self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method: str, timeout=60.0, **params):
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if self.session and not method.startswith("Target."): msg["sessionId"] = self.session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        while True:
            m = self._read(timeout)
            if m.get("id") == self._id:
                if "error" in m: raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            self.events.append(m)

    def wait_event(self, method: str, timeout=60.0):
        for i, e in enumerate(self.events):
            if e.get("method") == method: return self.events.pop(i)
        deadline = time.time() + timeout
        while time.time() < deadline:
            m = self._read(deadline - time.time())
            if m.get("method") == method: return m
            self.events.append(m)
        raise TimeoutError(f"no {method} event")

    def goto(self, url: str):
        self.call("Page.navigate", url=url)
        self.wait_event("Page.loadEventFired")

    def js(self, expr: str):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r: raise RuntimeError(f"JS error in {expr[:80]!r}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait_js(self, expr: str, timeout=30.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            v = self.js(expr)
            if v: return v
            time.sleep(0.2)
        raise TimeoutError(f"timed out waiting for {expr!r}")

    def click(self, x: float, y: float):
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def screenshot(self, path: Path, clip: dict | None = None) -> bytes:
        kw = dict(format="png")
        if clip: kw["clip"] = dict(clip, scale=1)
        data = base64.b64decode(self.call("Page.captureScreenshot", **kw)["data"])
        path.write_bytes(data)
        return data

    def close(self):
        try: self.call("Browser.close", timeout=5)
        except Exception: pass
        try: self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired: self.proc.kill(); self.proc.wait()
        os.close(self._cmd_w); os.close(self._res_r)
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    "The explorer page rendered as the docs site shows it (committed outputs, local plotly.js), served over HTTP."
    out = tmp_path_factory.mktemp("site")
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "render_docs.py"), "--only", "15_explorer.ipynb",
                        "--out", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert (out / "explorer.html").exists() and (out / "plotly.min.js").exists()
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a): pass
    handler = functools.partial(Quiet, directory=str(out))
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", out
    srv.shutdown()


@pytest.fixture(scope="module")
def page(site):
    b = Browser()
    yield b
    b.close()


def shots_dir(tmp_path) -> Path:
    d = Path(os.environ.get("GLU_SCREENSHOTS") or tmp_path)
    d.mkdir(parents=True, exist_ok=True)
    return d


# JS helpers: the first explorer figure on the page (it carries `layout.meta.bars`), what it shows now.
FIG = "[...document.querySelectorAll('.js-plotly-plot')].find(g => g.layout && g.layout.meta && g.layout.meta.bars)"
STATE = f"""(() => {{ const g = {FIG}; const i = g.layout.sliders.findIndex(s => s.visible !== false);
  const shown = g.data.filter(t => t.visible !== false), bars = shown.filter(t => t.type === 'bar');
  return {{slider: i, active: g.layout.sliders[i].active, label: g.layout.sliders[i].steps[g.layout.sliders[i].active].label,
          bars: bars.map(t => t.x), tasks: bars.map(t => t.y).flat(), names: bars.map(t => t.name),
          views: shown.map(t => [t.meta.model, t.meta.criterion, t.meta.group]),
          menus: g.layout.updatemenus.map(m => m.buttons[m.active || 0].label),
          marker_x: g.data[g.layout.meta.markers[i]].x[0],
          rows: [...g.querySelectorAll('.yaxislayer-above text, .yaxislayer-below text')].map(t => t.textContent),
          paths: [...g.querySelectorAll('.barlayer path')].map(p => p.getAttribute('d')).join('|')}}; }})()"""


def pick(page, menu: int, label: str):
    "Open the figure's menu number `menu` (0 model, 1 tasks, 2 criterion) and click its entry `label`."
    hdr = page.js(f"""(() => {{ const r = {FIG}.querySelectorAll('.updatemenu-header')[{menu}].getBoundingClientRect();
                   return [r.x + r.width / 2, r.y + r.height / 2]; }})()""")
    page.click(*hdr)
    time.sleep(0.5)
    items = page.js(f"""[...{FIG}.querySelectorAll('.updatemenu-dropdown-button')].map(b => {{ const r = b.getBoundingClientRect();
                     return [r.x + r.width / 2, r.y + r.height / 2, b.textContent]; }})""")
    hit = [it for it in items if it[2] == label]
    assert hit, f"menu {menu} has no entry {label!r}: {[it[2] for it in items]}"
    page.click(*hit[0][:2])
    page.wait_js(f"{FIG}.layout.updatemenus[{menu}].buttons[{FIG}.layout.updatemenus[{menu}].active].label === {json.dumps(label)}")
    time.sleep(0.8)   # let plotly redraw


@needs_chromium
def test_explorer_slider_changes_the_figure(site, page, tmp_path):
    url, out = site
    shots = shots_dir(tmp_path)
    page.goto(f"{url}/explorer.html")
    page.wait_js(f"(() => {{ const g = {FIG}; return !!(g && g._fullLayout && g.querySelector('.slider-group')); }})()")
    assert page.js("typeof Plotly") == "object", "plotly.js did not load from the local copy"
    page.js(f"{FIG}.scrollIntoView()")
    time.sleep(0.5)
    box = page.js(f"(() => {{ const r = {FIG}.getBoundingClientRect(); return {{x: r.x + scrollX, y: r.y + scrollY, width: r.width, height: r.height}}; }})()")  # page coordinates
    before = page.js(STATE)
    models = page.js(f"{FIG}.layout.meta.models")
    assert before["menus"] == [models[0], "all tasks", "PPM"]
    png0 = page.screenshot(shots / "explorer_0_initial.png", box)
    # Move the slider: click the tick of a different step on the visible slider's rail.
    ticks = page.js("""[...document.querySelectorAll('.slider-group .slider-tick-rect')].map(t => {
        const r = t.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })""")
    assert len(ticks) >= 4, f"expected a tick per ratio, found {len(ticks)}"
    target = 1 if before["active"] != 1 else 2
    page.click(*ticks[target])
    page.wait_js(f"{FIG}.layout.sliders.find(s => s.visible !== false).active === {target}")
    time.sleep(0.8)   # let plotly redraw the bars
    after = page.js(STATE)
    png1 = page.screenshot(shots / "explorer_1_slider_moved.png", box)
    assert after["label"] != before["label"]
    assert after["bars"] != before["bars"], "the bar values did not change with the slider"
    assert after["paths"] != before["paths"], "the drawn bars (SVG) did not change"
    assert after["marker_x"] != before["marker_x"], "the ratio marker did not move"
    assert png0 != png1
    # The model menu: the criteria sweep, whose slider then appears with its own ratios and its criteria in the menu.
    crit_run = next(i for i, c in enumerate(page.js(f"{FIG}.layout.meta.criteria")) if len(c) > 1)
    pick(page, 0, models[crit_run])
    page.wait_js(f"{FIG}.layout.sliders.findIndex(s => s.visible !== false) === {crit_run}")
    other = page.js(STATE)
    page.screenshot(shots / "explorer_2_other_model.png", box)
    assert other["names"] != after["names"] or other["bars"] != after["bars"]
    assert {v[0] for v in other["views"]} == {crit_run} and other["menus"] == [models[crit_run], "all tasks", "PPM"]
    # The criterion menu: the same ratio, another criterion's bars.
    pick(page, 2, "random")
    rnd = page.js(STATE)
    page.screenshot(shots / "explorer_3_criterion.png", box)
    assert {v[1] for v in rnd["views"]} == {"random", None} and rnd["label"] == other["label"]
    assert rnd["bars"] != other["bars"] and rnd["paths"] != other["paths"], "the bars did not change with the criterion"
    # The task-group menu: only the fragile tasks' curves and bars are left (the criterion menu starts again at PPM).
    pick(page, 1, "fragile tasks")
    frag = page.js(STATE)
    page.screenshot(shots / "explorer_4_fragile_tasks.png", box)
    assert {v[2] for v in frag["views"]} == {"fragile", None} and frag["menus"][2] == "PPM"
    assert set(frag["tasks"]) < set(other["tasks"]) and frag["paths"] != rnd["paths"]
    assert not {"ifeval", "truthfulqa_mc2"} & set(frag["rows"]), "robust tasks still labelled in the bar panel"
    errors = [e for e in page.events if e.get("method") == "Runtime.exceptionThrown"]
    assert not errors, errors[:2]


def render_docs():
    import importlib.util
    spec = importlib.util.spec_from_file_location("render_docs", ROOT / "tools" / "render_docs.py")
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod


def test_readme_is_generated_from_index(tmp_path):
    "README.md is nbs/index.ipynb rendered (edit the notebook, then `python tools/render_docs.py --readme-only`)."
    out = tmp_path / "README.md"
    render_docs().readme(ROOT / "nbs" / "index.ipynb", out)
    assert out.read_text() == (ROOT / "README.md").read_text(), \
        "README.md is out of date with nbs/index.ipynb: run `python tools/render_docs.py --readme-only`"
    lines = out.read_text().splitlines()
    assert "make demo" in lines and "make test" in lines and "## Project layout" in lines


def test_quarto_syntax_is_translated():
    rd = render_docs()
    assert rd.quarto_links('[source](https://x/y.py#L3){target="_blank" style="float:right"}') == \
        '<a href="https://x/y.py#L3" target="_blank" style="float:right">source</a>'
    opts, code = rd.directives("#| echo: false\n#| hide\nx = 1")
    assert opts == {"echo": "false", "hide": "true"} and code == "x = 1"
    assert rd.callouts("::: {.callout-note}\nhi\n:::") == '<div class="callout callout-note">\n\nhi\n\n</div>'


# --- Every page as a reader meets it: the whole site rendered once ---------------------------------------------

def _plain(s: str) -> str:
    "Markdown or HTML reduced to its words (tags, markup and entities dropped, whitespace folded)."
    import html as _html, re
    s = re.sub(r"<[^>]+>", " ", s)
    s = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", s)            # [text](url) -> text
    s = _html.unescape(s).replace("`", "").replace("*", "").replace("_", " ")
    s = " ".join(s.split())
    return re.sub(r"\s+([,.;:!?)\]])", r"\1", re.sub(r"([(\[])\s+", r"\1", s))   # tags left spaces by punctuation


def introductions() -> dict[str, str]:
    "Each sidebar page's opening paragraph (the first prose after its title and `>` summary), by notebook path."
    import nbformat, yaml
    side = yaml.safe_load((ROOT / "nbs" / "sidebar.yml").read_text())["website"]["sidebar"]["contents"]
    paths = []
    def walk(items):
        for it in items:
            if isinstance(it, str): paths.append(it)
            elif isinstance(it, dict): walk(it.get("contents", []))
    walk(side)
    out = {}
    for p in paths:
        cells = [c for c in nbformat.read(ROOT / "nbs" / p, 4).cells if c.cell_type == "markdown"]
        lines = [l for l in cells[0].source.splitlines()[1:] if l.strip() and not l.startswith(">")]
        text = "\n".join(lines) if lines else next(c.source for c in cells[1:] if c.source.strip())
        para = next(b for b in text.split("\n\n") if b.strip() and not b.lstrip().startswith(("[![", "<", "#")))
        out[p] = _plain(para)[:120]
    return out


@pytest.fixture(scope="module")
def whole_site(tmp_path_factory):
    "Every page of the docs site, rendered offline as Quarto would show it (committed outputs)."
    out = tmp_path_factory.mktemp("whole_site")
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "render_docs.py"), "--out", str(out)],
                       capture_output=True, text=True, cwd=ROOT, timeout=1200)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return out


def test_every_page_keeps_its_introduction(whole_site):
    "nbdev turns a notebook's first markdown cell into front matter: an introduction must live in its own cell."
    render = render_docs()
    pages = {p.name: p for p in whole_site.rglob("*.html")}
    missing = []
    for nb, intro in introductions().items():
        fm = render.front_matter(json.loads((ROOT / "_proc" / nb).read_text()))
        page = whole_site / render.page_name(ROOT / "_proc" / nb, fm)
        assert page.exists(), f"{nb} was not rendered ({sorted(pages)})"
        body = _plain(page.read_text().split("<main", 1)[-1])
        if intro not in body: missing.append(f"{nb}: {intro[:60]!r}")
    assert not missing, "opening paragraph lost on the site (put it in its own markdown cell after the title):\n" + \
        "\n".join(missing)


@needs_chromium
def test_scoring_page_typesets_math_and_shows_the_colab_badge(whole_site, tmp_path):
    "On the scoring page the PPM formula is typeset (MathML boxes with height), and the Colab badge is an image."
    b = Browser()
    try:
        b.goto((whole_site / "scoring.html").as_uri())
        math = b.js("""[...document.querySelectorAll('math')].map(m => {
            const r = m.getBoundingClientRect(); return [m.getAttribute('display'), r.width, r.height]; })""")
        assert math, "no typeset math on the scoring page"
        assert any(d == "block" and w > 100 and h > 10 for d, w, h in math), math[:3]
        assert "$$" not in b.js("document.querySelector('main').innerText"), "raw $$ left in the page"
        badge = b.js("""(() => { const a = [...document.querySelectorAll('a')].find(a => a.href.includes('colab.research.google.com'));
            if (!a) return null; const i = a.querySelector('img');
            return {href: a.href, img: !!i, loaded: !!(i && i.complete && i.naturalWidth > 0)}; })()""")
        assert badge and badge["img"] and badge["loaded"], badge
        assert badge["href"].endswith("nbs/02_scoring.ipynb"), badge["href"]
        b.screenshot(shots_dir(tmp_path) / "scoring_math_badge.png")
    finally:
        b.close()


def test_rendered_pages_show_no_machine_paths_tracebacks_or_frozen_bars(whole_site):
    from test_outputs import leaks
    bad = {}
    for page in whole_site.rglob("*.html"):
        body = _plain(page.read_text().split("<main", 1)[-1])
        if leaks(body): bad[page.name] = leaks(body)[:2]
    assert not bad, bad

