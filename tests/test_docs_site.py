"""The docs site, built offline and checked in a real headless browser.

`tools/preview_docs.py` runs nbdev's processors and renders every notebook of `nbs/` to
`_preview/`; Chromium (Debian's `chromium` + `chromium-driver`, driven by selenium) then opens the
front page and every chapter. Chapters are discovered from `nbs/`, never listed by hand, so a new
chapter is checked as soon as it lands. What each page must show is read from its SOURCE notebook
(images in its outputs, math in its prose, its front matter), not from the HTML under test.

The page shows what the chapter teaches: the source of every function and class a notebook
exports is on its page (`#| exports`, not the hidden `#| export`), every chapter has a figure,
and no page holds progress-bar characters, warnings, temporary paths or references to the tracker.

Without Chromium these tests are skipped locally, and fail when the environment variable CI is set.
Screenshots for a person to look at: `_preview/screenshots/`.
"""

import ast
import functools
import http.server
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from nbdev.doclinks import _nbpath2html
from nbdev.frontmatter import _fm2dict, _md2dict

ROOT = Path(__file__).resolve().parent.parent
NBS = ROOT / "nbs"
IN_CI = bool(os.environ.get("CI"))
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver")
CHROME_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1000",
    "--hide-scrollbars",
]


# ---------------------------------------------------------------------------------------------
# What the source notebooks promise
# ---------------------------------------------------------------------------------------------
def notebooks():
    "Every notebook nbdev renders: nbs/**/*.ipynb except names and folders starting with _ or ."
    return sorted(
        p.relative_to(NBS).as_posix()
        for p in NBS.rglob("*.ipynb")
        if not any(s.startswith(("_", ".")) for s in p.relative_to(NBS).parts)
    )


def _load(nb):
    return json.loads((NBS / nb).read_text(encoding="utf-8"))


def _src(c):
    return "".join(c["source"]) if isinstance(c["source"], list) else c["source"]


def front_matter(nb):
    "Title and description as nbdev's FrontmatterProc reads them (raw YAML cell, or H1 + `> description`)."
    fm = {}
    for c in _load(nb)["cells"]:
        if c["cell_type"] == "raw":
            fm.update(_fm2dict(_src(c)))
        elif c["cell_type"] == "markdown" and "title" not in fm:
            fm.update(_md2dict(_src(c)))
    return fm


def _directives(src):
    d = {}
    for line in src.splitlines():
        if not line.strip():
            continue
        if not line.lstrip().startswith("#|"):
            break
        k, _, v = line.lstrip()[2:].strip().partition(":" if ":" in line else " ")
        d[k.strip()] = v.strip().lower()
    return d


def expected_images(nb):
    "How many image outputs the reader should see: outputs of cells that are not hidden."
    n = 0
    for c in _load(nb)["cells"]:
        if c["cell_type"] != "code":
            continue
        d = _directives(_src(c))
        if "hide" in d or d.get("include") == "false" or d.get("output") == "false":
            continue
        n += sum(any(k.startswith("image/") for k in o.get("data", {})) for o in c.get("outputs", []))
    return n


def widget_outputs(nb):
    "How many ipywidgets views the notebook's saved outputs hold."
    return sum(
        "application/vnd.jupyter.widget-view+json" in o.get("data", {})
        for c in _load(nb)["cells"]
        if c["cell_type"] == "code"
        for o in c.get("outputs", [])
    )


def exported_objects(nb):
    "(name, directive, source) of each top-level function and class in the notebook's exported cells."
    out = []
    for c in _load(nb)["cells"]:
        if c["cell_type"] != "code":
            continue
        d = _directives(_src(c))
        kind = next((k for k in ("exports", "export", "exporti") if k in d), None)
        if kind is None:
            continue
        code = "\n".join(line for line in _src(c).splitlines() if not line.lstrip().startswith("#|"))
        try:
            tree = ast.parse(code)
        except SyntaxError:
            continue  # IPython magics: nbdev_export reports those itself
        lines = code.splitlines()
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                first = min([node.lineno] + [dec.lineno for dec in node.decorator_list])
                out.append((node.name, kind, "\n".join(lines[first - 1 : node.end_lineno])))
    return out


def _squeeze(s):
    return re.sub(r"\s+", "", s)


def is_chapter(nb):
    return bool(re.match(r"\d", Path(nb).name))


# what a reader must never see on a page: progress bars, warnings, temporary paths, the project's tracker
FORBIDDEN_TEXT = {
    r"█": "a progress-bar character",
    r"/tmp/": "a temporary path",
    r"Warning:": "a warning",
    r"(?i)\bissues?\b": "a reference to an issue",
    r"(?<![\w#&/])#\d+\b": "a reference to an issue number",
}

_re_code = re.compile(r"```.*?```|`[^`\n]*`", flags=re.S)
_re_math = re.compile(r"\$\$.+?\$\$|(?<![\\$])\$(?!\s)[^$\n]+?(?<![\s\\])\$(?!\d)", flags=re.S)


def expected_math(nb):
    "How many TeX expressions the prose of the notebook holds (code spans and blocks left out)."
    cells = [c for c in _load(nb)["cells"] if c["cell_type"] == "markdown"]
    return sum(len(_re_math.findall(_re_code.sub("", _src(c)))) for c in cells)


def test_every_notebook_has_title_and_description():
    "The page title and its one-line description come from each notebook's front matter."
    bad = [
        f"{nb}: {'no title' if not fm.get('title') else 'no `> description` line'}"
        for nb in notebooks()
        for fm in [front_matter(nb)]
        if not (fm.get("title") and fm.get("description"))
    ]
    if bad:
        pytest.fail(
            "notebooks need an H1 title and a `> one-line description` in their first markdown cell:\n  "
            + "\n  ".join(bad),
            pytrace=False,
        )


def test_page_checks_catch_what_they_should(tmp_path, monkeypatch):
    "The checks below on a made-up page: they flag what they must and let ordinary text through."

    def flagged(t):
        return [w for pat, w in FORBIDDEN_TEXT.items() if re.search(pat, t, flags=re.M)]

    assert flagged("epoch 3 ████ 100%") == ["a progress-bar character"]
    assert flagged("UserWarning: x") == ["a warning"] and flagged("saved to /tmp/run/a") == [
        "a temporary path"
    ]
    assert flagged("as the issue asks") and flagged("see #13") and flagged("Issues")
    assert not flagged("# 1. table and plate\ncolor #2780e3; x[0] # shape (B, L)\nissued tissue")
    nb = dict(
        cells=[
            dict(
                cell_type="code",
                source='#| exports\n@patch\ndef f(self:int, x):\n    "doc"\n    return x\nclass A: pass',
            ),
            dict(cell_type="code", source="#| export\nimport os\ndef g(): return 1"),
            dict(cell_type="code", source="def h(): pass"),
        ]
    )
    monkeypatch.setattr(sys.modules[__name__], "_load", lambda _: nb)
    assert exported_objects("x.ipynb") == [
        ("f", "exports", '@patch\ndef f(self:int, x):\n    "doc"\n    return x'),
        ("A", "exports", "class A: pass"),
        ("g", "export", "def g(): return 1"),
    ]


# ---------------------------------------------------------------------------------------------
# Build the preview once, open every page once
# ---------------------------------------------------------------------------------------------
def _need(ok, why):
    if not ok:
        (pytest.fail if IN_CI else pytest.skip)(why + ("" if IN_CI else " (this check fails when CI is set)"))


@pytest.fixture(scope="session")
def site():
    """Build the preview in a separate process (the notebooks' doc cells run there); nbdev reprocesses changed
    notebooks."""
    r = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "preview_docs.py")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = ROOT / "_preview"
    if not (out / "pages.json").exists() or (r.returncode and "FAILED" not in r.stdout):
        pytest.fail(
            "building the preview failed (python tools/preview_docs.py):\n"
            f"{r.stdout[-3000:]}\n{r.stderr[-6000:]}",
            pytrace=False,
        )
    built = json.loads((out / "pages.json").read_text())
    return out, {p["html"]: p for p in built["pages"]}, built["failures"]


@pytest.fixture(scope="session")
def server(site):
    "Serve the preview on the loopback interface, as the real site is served over HTTP (web fonts need it)."
    out, _, _ = site
    handler = functools.partial(_QuietHandler, directory=str(out))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass


@pytest.fixture(scope="session")
def browser():
    _need(
        CHROMIUM and CHROMEDRIVER,
        "needs Chromium and chromedriver (apt-get install chromium chromium-driver)",
    )
    try:
        from selenium import webdriver
    except ImportError:
        _need(False, "needs selenium (pip install selenium, a dev requirement)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for f in CHROME_FLAGS:
        opts.add_argument(f)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    drv.set_page_load_timeout(60)
    yield drv
    drv.quit()


PAGE_JS = r"""
const box = e => { const r = e.getBoundingClientRect(); return [r.width, r.height]; };
return {
  title: document.title,
  text: document.body ? document.body.innerText : '',
  ids: Array.from(document.querySelectorAll('[id]')).map(e => e.id),
  links: Array.from(document.querySelectorAll('a[href]')).map(a => ({
          href: a.getAttribute('href'), url: a.href, text: a.innerText.trim().slice(0, 60)})),
  images: Array.from(document.querySelectorAll('img')).map(i => ({
          src: (i.getAttribute('src') || '').slice(0, 50), natural: [i.naturalWidth, i.naturalHeight],
          size: box(i), output: !!i.closest('.jp-OutputArea-output')})),
  mathSources: window.__mathCount || 0,
  mathFrames: Array.from(document.querySelectorAll('mjx-container')).map(box),
  mathErrors: (window.__mathErrors || []).concat(
          Array.from(document.querySelectorAll('mjx-merror')).map(e => e.textContent)),
  mathLoaded: !!(window.MathJax && window.MathJax.version),
  fontErrors: Array.from(document.fonts).filter(f => f.status === 'error').map(f => f.family),
  resources: performance.getEntriesByType('resource').map(e => e.name),
  sidebar: Array.from(document.querySelectorAll('#pv-sidebar a')).map(a => a.getAttribute('href')),
  code: Array.from(document.querySelectorAll('.jp-CodeCell .jp-Cell-inputWrapper')).map(e => e.textContent),
};"""


@pytest.fixture(scope="session")
def crawl(browser, site, server):
    "Open every page once; wait for MathJax; keep what the checks need."
    from selenium.webdriver.support.ui import WebDriverWait

    out, pages, _ = site
    seen = {}

    def visit(html):
        browser.get(server + html)
        try:
            WebDriverWait(browser, 30).until(lambda d: d.execute_script("return window.__mathDone === true"))
        except Exception:
            pass  # reported below as "MathJax did not finish"
        data = browser.execute_script(PAGE_JS)
        data["mathDone"] = browser.execute_script("return window.__mathDone === true")
        data["origin"] = server
        data["console"] = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
        seen[html] = data
        return data

    for html in pages:
        visit(html)
    return seen, visit


# ---------------------------------------------------------------------------------------------
# The checks
# ---------------------------------------------------------------------------------------------
ERROR_TEXT = [
    r"Traceback \(most recent call last\)",
    r"-{20,}\n\w*(Error|Exception)",
    r"^\w+(Error|Exception): ",
    r"Math Processing Error",
    r"MathJax error",
    r"Error in notebook",
    r"NameError",
    r"ModuleNotFoundError",
]


def _sort_key(nb):
    "nbdev's sidebar order: the front page first, then by file name (so by chapter number)."
    return ("00" if Path(nb).name.startswith("index.") else Path(nb).name, nb)


def test_sidebar_in_reading_order(crawl, site):
    seen, _ = crawl
    failed = site[2]  # a notebook nbdev could not process has no page; its own test_page says why
    expected = [
        _nbpath2html(Path(nb)).as_posix() for nb in sorted(notebooks(), key=_sort_key) if nb not in failed
    ]
    assert seen["index.html"]["sidebar"] == expected, (
        "sidebar is not: front page, chapters by number, then the rest"
    )


def _modidx():
    "The exported symbols and the page#anchor nbdev links each one to."
    spec = importlib.util.spec_from_file_location("_modidx", ROOT / "resvmamba" / "_modidx.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.d


def _public(mod, entries):
    """A module's top-level public names (nbdev adds a `show_doc` for each; methods and `_private` names get
    none)."""
    return [
        (s, v)
        for s, v in entries.items()
        if "." not in s[len(mod) + 1 :] and not s[len(mod) + 1 :].startswith("_")
    ]


def _resolve(page, href, out):
    "The preview file and fragment a relative link points to."
    path, _, frag = href.partition("#")
    target = (out / Path(page).parent / path).resolve() if path else (out / page).resolve()
    return target, frag


@pytest.mark.parametrize("nb", notebooks())
def test_page(nb, crawl, site):
    "The page of one notebook: built, no errors, its figures, its math, its links."
    out, pages, failures = site
    seen, visit = crawl
    html = _nbpath2html(Path(nb)).as_posix()
    if nb in failures:
        pytest.fail(f"nbdev could not process nbs/{nb} for the docs:\n{failures[nb]}", pytrace=False)
    if html not in seen:
        pytest.fail(f"nbs/{nb} was not rendered to {html}", pytrace=False)
    page, problems = seen[html], []

    # no error or traceback text, no browser errors, nothing fetched from the network
    for pat in ERROR_TEXT:
        for m in re.finditer(pat, page["text"], flags=re.M):
            problems.append(
                f"error text on the page: {page['text'][max(0, m.start() - 80) : m.end() + 120]!r}"
            )
    problems += [f"browser console: {entry['message'][:300]}" for entry in page["console"]]
    problems += [
        f"loaded from outside the preview: {r}"
        for r in page["resources"]
        if not r.startswith((page["origin"], "data:"))
    ]

    # nothing a reader should not see: progress bars, warnings, temporary paths, the project's tracker
    for pat, what in FORBIDDEN_TEXT.items():
        for m in list(re.finditer(pat, page["text"], flags=re.M))[:3]:
            problems.append(f"{what} on the page: {page['text'][max(0, m.start() - 60) : m.end() + 60]!r}")

    # the page shows the code it teaches: every exported function and class, in full
    shown_code = _squeeze("\n".join(page["code"]))
    for name, kind, src in exported_objects(nb):
        if _squeeze(src) not in shown_code:
            problems.append(
                f"the source of exported {name} is not on the page"
                + (
                    f" (its cell is `#| {kind}`, which hides the code: use `#| exports`)"
                    if kind != "exports"
                    else ""
                )
            )

    # figures: every image decoded and laid out; at least as many output images as the notebook has
    for im in page["images"]:
        if not (min(im["natural"]) > 0 and min(im["size"]) > 0):
            problems.append(f"image not shown (natural {im['natural']}, rendered {im['size']}): {im['src']}")
    n_img, shown = expected_images(nb), sum(im["output"] and min(im["size"]) > 0 for im in page["images"])
    if shown < n_img:
        problems.append(f"{nb} has {n_img} image outputs; the page shows {shown}")
    if is_chapter(nb) and not any(min(im["natural"]) > 0 and min(im["size"]) > 0 for im in page["images"]):
        problems.append(f"{nb} is a chapter without a figure: add a plot or diagram that teaches its idea")
    if widget_outputs(nb) and not n_img:  # a widget needs a kernel; the static page needs a picture of it
        problems.append(
            f"{nb} has {widget_outputs(nb)} interactive widget(s) but no static figure beside them"
        )

    # math: typeset by MathJax, every expression laid out, no TeX errors, no raw display math left
    n_math = expected_math(nb)
    if n_math:
        if not page["mathLoaded"] or not page["mathDone"]:
            problems.append("MathJax did not load or did not finish")
        frames = page["mathFrames"]
        if len(frames) < n_math:
            problems.append(f"{nb} has {n_math} TeX expressions in its prose; the page typeset {len(frames)}")
        if len(frames) != page["mathSources"]:
            problems.append(f"MathJax found {page['mathSources']} expressions but laid out {len(frames)}")
        problems += [f"math has zero size: {f}" for f in frames if min(f) <= 0][:3]
        if "$$" in page["text"]:
            problems.append("untypeset $$ display math on the page")
    problems += [f"TeX error: {e}" for e in page["mathErrors"]]
    problems += [f"web font failed to load: {f}" for f in page["fontErrors"]]

    # links between pages and to API entries resolve (external links are not fetched: no network)
    for ln in page["links"]:
        href = ln["href"]
        if re.match(r"^[a-z][\w+.-]*:", href, flags=re.I):
            continue
        target, frag = _resolve(html, href, out)
        if not target.exists():
            shown = target.relative_to(out.resolve()) if target.is_relative_to(out.resolve()) else target
            problems.append(f"broken link {href!r} ({ln['text']!r}): no {shown}")
            continue
        if frag:
            rel = target.relative_to(out.resolve()).as_posix()
            ids = (seen.get(rel) or visit(rel))["ids"]
            if frag not in ids:
                problems.append(f"broken anchor {href!r} ({ln['text']!r}): {rel} has no id {frag!r}")

    # every symbol this notebook exports has its API entry (a show_doc heading) on this page
    mod = _module_of(nb)
    for sym, (loc, _) in _public(mod, _modidx()["syms"].get(mod, {})):
        pg, _, anchor = loc.partition("#")
        if pg.rsplit("/", 1)[-1] == html and anchor not in page["ids"]:
            problems.append(f"no API entry #{anchor} for {sym}")

    if problems:
        pytest.fail(f"{html} (from nbs/{nb}):\n  " + "\n  ".join(problems), pytrace=False)


def _module_of(nb):
    m = re.search(
        r"^#\|\s*default_exp\s+(\S+)",
        "\n".join(_src(c) for c in _load(nb)["cells"] if c["cell_type"] == "code"),
        flags=re.M,
    )
    return f"resvmamba.{m.group(1)}" if m else None


def test_api_index_links_every_exported_symbol(crawl, site):
    "The API index page links every exported symbol to its entry (the links themselves are checked above)."
    seen, _ = crawl
    api = [h for h in seen if h.startswith("api")]
    assert api, "no API index page (nbs/api.ipynb)"
    hrefs = {ln["href"] for ln in seen[api[0]]["links"]}
    missing = [
        s
        for mod, ents in _modidx()["syms"].items()
        for s, (loc, _) in _public(mod, ents)
        if loc.rsplit("/", 1)[-1] not in hrefs
    ]
    if missing:
        pytest.fail(f"the API index does not link: {missing}", pytrace=False)


def test_screenshots(browser, site, server, crawl):
    """Screenshots for a person: the front page, and the first chapter that draws figures (at its first
    figure)."""
    out, pages, _ = site
    shots = out / "screenshots"
    shots.mkdir(exist_ok=True)
    for f in shots.glob("*.png"):
        f.unlink()
    browser.get(server + "index.html")
    assert browser.save_screenshot(str(shots / "front_page.png"))
    chapters = [
        nb
        for nb in notebooks()
        if re.match(r"\d", Path(nb).name) and _nbpath2html(Path(nb)).as_posix() in pages
    ]
    with_fig = [nb for nb in chapters if expected_images(nb)] or chapters
    if not with_fig:
        return
    nb = with_fig[0]
    html = _nbpath2html(Path(nb)).as_posix()
    browser.get(server + html)
    assert browser.save_screenshot(str(shots / f"{Path(html).stem}_top.png"))
    browser.execute_script(
        "const i = document.querySelector('.jp-OutputArea-output img'); "
        "if (i) i.scrollIntoView({block: 'center'});"
    )
    assert browser.save_screenshot(str(shots / f"{Path(html).stem}_figure.png"))
    print(f"screenshots in {shots}: {sorted(p.name for p in shots.glob('*.png'))}")
