"""Build an offline preview of the docs site, for machines without Quarto.

    python tools/preview_docs.py            # build _preview/ (then open _preview/index.html)
    python tools/preview_docs.py --force    # reprocess every notebook, not only the changed ones

The real site is rendered by Quarto (`nbdev_preview`, `nbdev_docs`, the GitHub deploy workflow).
This script takes the same first step as `nbdev_docs` — what `nbdev_proc_nbs` does: nbdev's notebook
processors write `_proc/` (front matter, `show_doc` output, links to API entries, hidden cells
removed) — and then renders every processed notebook to HTML with nbconvert instead of Quarto.
It calls nbdev's pieces itself rather than the `nbdev_proc_nbs` command because that command, where
Quarto is missing, tries to install it (sudo, a download, `pip install -e`), rewrites `nbs/sidebar.yml`
with every file of `nbs/` in it, and stops at the first notebook that fails; here each notebook is
processed in turn and every failure is reported. Then it does by hand the few things Quarto would do:

- the cell options Quarto reads (`#| echo: false`, `output: false`, `include: false`,
  `output: asis`, `code-fold`) and pandoc's link attributes (`[source](url){target=...}`);
- `.ipynb` links and links to the site's own URL become links between the local pages, named as
  Quarto names them (`03_cross_scan.ipynb` -> `cross_scan.html`);
- headings get pandoc's identifiers, so API anchors such as `cross_scan.html#cross_scan` resolve;
- a navbar and a sidebar in the order of nbdev's generated `sidebar.yml`;
- math is typeset by a local copy of MathJax 3 (PyPI's `django-static-mathjax`), as Quarto does
  with MathJax from a CDN: the preview loads nothing from the network.

It never writes into `nbs/` or `resvmamba/` (run `nbdev_export` first if the notebooks changed).
`tests/test_docs_site.py` builds this preview and checks it in a real headless browser.
"""

import argparse
import contextlib
import copy
import html
import io
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import nbdev.serve_drv
import nbformat
import yaml
from bs4 import BeautifulSoup
from jinja2 import DictLoader
from nbconvert import HTMLExporter
from nbdev.config import get_config
from nbdev.doclinks import _nbpath2html, nbglob
from nbdev.quarto import _def_file_re, nbdev_sidebar
from nbdev.serve import _proc_file

PREVIEW_DIR, MATHJAX_DIR = "_preview", "_mathjax"

# ---------------------------------------------------------------------------------------------
# Quarto's cell options and pandoc's conventions, done by hand on the processed notebooks
# ---------------------------------------------------------------------------------------------
_re_opt = re.compile(r"^\s*#\|\s*([\w-]+)\s*:\s*(.*?)\s*$")


def cell_options(src):
    "The Quarto `#| key: value` options at the top of a code cell, and the code without them."
    opts, lines = {}, src.splitlines()
    i = 0
    while i < len(lines) and lines[i].lstrip().startswith("#|"):
        m = _re_opt.match(lines[i])
        if m:
            opts[m.group(1)] = str(yaml.safe_load(m.group(2)) if m.group(2) else "").strip()
        i += 1
    return {k: v.lower() if v.lower() in ("true", "false") else v for k, v in opts.items()}, "\n".join(
        lines[i:]
    )


def front_matter(nb):
    "The YAML front matter nbdev puts in the first raw cell of a processed notebook ({} if none)."
    for c in nb.cells:
        if c.cell_type == "raw":
            m = re.match(r"^---\s*\n(.*?)\n---\s*$", c.source.strip(), flags=re.S)
            if m:
                return yaml.safe_load(m.group(1)) or {}
    return {}


# pandoc link attributes: [text](url){key="v" ...} -> an HTML link (mistune would print the braces)
_re_pandoc_link = re.compile(r"\[([^\]]*)\]\(([^)\s]+)\)\{([^}]*)\}")


def _pandoc_links(md):
    def f(m):
        attrs = " ".join(a for a in re.findall(r'[\w-]+="[^"]*"', m.group(3)))
        return f'<a href="{html.escape(m.group(2), quote=True)}" {attrs}>{m.group(1)}</a>'

    return _re_pandoc_link.sub(f, md)


def quarto_cells(nb):
    "Apply the Quarto cell options nbconvert does not know; return the notebook and the fold summaries."
    cells, summaries = [], []
    for c in nb.cells:
        if c.cell_type == "raw":
            continue  # front matter: shown as the title block
        if c.cell_type == "markdown":
            c.source = _pandoc_links(c.source)
            cells.append(c)
            continue
        if c.cell_type != "code":
            cells.append(c)
            continue
        opts, c.source = cell_options(c.source)
        if opts.get("include") == "false":
            continue
        if opts.get("output") == "false":
            c.outputs = []
        # widgets need JavaScript from a CDN: keep the static representations, drop the widget view
        for o in c.get("outputs", []):
            data = o.get("data", {})
            if "application/vnd.jupyter.widget-view+json" in data:
                del data["application/vnd.jupyter.widget-view+json"]
                if set(data) <= {"text/plain"}:
                    data["text/plain"] = (
                        "[interactive widget: run the notebook to use it; the page shows its static figure]"
                    )
        echo = opts.get("echo") != "false" and c.source.strip()
        tags = list(c.metadata.get("tags", []))
        if opts.get("code-fold") in ("true", "show"):
            tags.append(f"fold-{opts['code-fold']}")
            tags.append(f"summary-{len(summaries)}")
            summaries.append(opts.get("code-summary", "Code").strip("\"'"))
        c.metadata["tags"] = tags
        if opts.get("output") == "asis":
            # Quarto pastes the markdown output into the page itself (show_doc's headings become sections)
            mds = [
                "".join(o["data"]["text/markdown"]) for o in c.outputs if "text/markdown" in o.get("data", {})
            ]
            if echo:
                c.outputs = []
                cells.append(c)
            cells += [nbformat.v4.new_markdown_cell(_pandoc_links(s)) for s in mds]
            continue
        for o in c.get("outputs", []):
            if "text/markdown" in o.get("data", {}):
                o["data"]["text/markdown"] = _pandoc_links("".join(o["data"]["text/markdown"]))
        if not echo:
            c.metadata.setdefault("jupyter", {})["source_hidden"] = True
            c.metadata["tags"].append("echo-false")
        cells.append(c)
    nb.cells = cells
    nb.metadata.pop("widgets", None)  # no widget manager from a CDN
    return nb, summaries


def pandoc_id(text, seen):
    "The identifier pandoc gives a heading (what Quarto, and so nbdev's API links, use)."
    s = re.sub(r"[^\w\s.-]", "", text.strip().lower(), flags=re.U)
    s = re.sub(r"\s+", "-", s)
    s = re.sub(r"^[^a-z]+", "", s) or "section"
    base, n = s, 1
    while s in seen:
        s, n = f"{base}-{n}", n + 1
    seen.add(s)
    return s


# ---------------------------------------------------------------------------------------------
# The page template: nbconvert's "lab" template with a navbar, a sidebar, a title block,
# prev/next links and a local MathJax; everything that would load from a CDN removed.
# ---------------------------------------------------------------------------------------------
TEMPLATE = r"""{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{% block jupyter_widgets %}{% endblock jupyter_widgets %}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block html_head_js_mathjax -%}
<script>
window.__mathErrors = [];
window.MathJax = {
  tex: {inlineMath: [['$', '$'], ['\\(', '\\)']], displayMath: [['$$', '$$'], ['\\[', '\\]']],
        processEscapes: true, processEnvironments: true, tags: 'ams'},
  options: {ignoreHtmlClass: 'tex2jax_ignore', processHtmlClass: 'tex2jax_process'},
  startup: {pageReady: () => MathJax.startup.defaultPageReady().then(() => {
    for (const m of MathJax.startup.document.math) {
      if (m.root && m.root.toString().includes('merror')) window.__mathErrors.push(m.math);
    }
    window.__mathCount = Array.from(MathJax.startup.document.math).length;
    window.__mathDone = true;
  })}
};
</script>
<script id="MathJax-script" src="{{ resources.preview.root }}{{ resources.preview.mathjax }}"></script>
{%- endblock html_head_js_mathjax -%}
{%- block html_head_css -%}
<link rel="icon" href="data:,">
<style>
.jp-InputPrompt, .jp-OutputPrompt { display: none; }  /* Quarto shows no In/Out prompts */
.jp-RenderedMarkdown pre { background: #f7f7f9; padding: .6rem .8rem; border-radius: 4px; }
body.jp-Notebook { padding: 0; margin: 0; }
.pv-navbar { position: sticky; top: 0; z-index: 10; display: flex; align-items: center; gap: 1.2rem;
  background: #2780e3; color: #fff; padding: .55rem 1.2rem; font-family: system-ui, sans-serif; }
.pv-navbar a { color: #fff; text-decoration: none; }
.pv-navbar .pv-brand { font-weight: 600; font-size: 1.15rem; }
.pv-navbar .pv-right { margin-left: auto; } .pv-badge { font-size: .75rem; opacity: .8; }
.pv-layout { display: flex; align-items: flex-start; }
.pv-sidebar { position: sticky; top: 3rem; flex: 0 0 15rem; padding: 1.2rem .8rem;
  font: 14px system-ui, sans-serif; }
.pv-sidebar ul { list-style: none; padding-left: 0; margin: 0; } .pv-sidebar li { margin: .3rem 0; }
.pv-sidebar ul ul { padding-left: .8rem; } .pv-sidebar a { color: #343a40; text-decoration: none; }
.pv-sidebar a.pv-active { color: #2780e3; font-weight: 600; }
.pv-content { flex: 1 1 auto; min-width: 0; max-width: 60rem; padding: 1rem 1.5rem 3rem; }
.pv-title h1 { margin-bottom: .2rem; } .pv-title .description { margin-top: 0; }
.pv-pager { display: flex; justify-content: space-between; margin-top: 2rem;
  font: 15px system-ui, sans-serif; }
details.pv-fold > summary { cursor: pointer; color: #6c757d; font: 13px system-ui, sans-serif; }
</style>
<style>{{ resources.preview.styles }}</style>
{%- endblock html_head_css -%}
{%- block body_header -%}
<body class="jp-Notebook" data-jp-theme-light="true" data-jp-theme-name="JupyterLab Light">
<nav class="pv-navbar">
  <a class="pv-brand" href="{{ resources.preview.root }}index.html">{{ resources.preview.site_title | e }}</a>
  {%- for item in resources.preview.navbar %}
  <a href="{{ resources.preview.root }}{{ item.href }}">{{ item.text | e }}</a>
  {%- endfor %}
  <span class="pv-badge">offline preview</span>
  {%- if resources.preview.repo_url %}
  <a class="pv-right pv-repo" href="{{ resources.preview.repo_url }}" title="Source code">GitHub</a>
  {%- endif %}
</nav>
<div class="pv-layout">
<nav class="pv-sidebar" id="pv-sidebar">{{ resources.preview.sidebar_html }}</nav>
<main class="pv-content">
<header class="pv-title" id="title-block-header">
  <h1 class="title">{{ resources.preview.title | e }}</h1>
  {%- if resources.preview.description %}
  <div class="description"><p>{{ resources.preview.description | e }}</p></div>
  {%- endif %}
</header>
{%- endblock body_header -%}
{% block body_footer %}
<nav class="pv-pager">
  <span>{% if resources.preview.prev %}{% set p = resources.preview.prev -%}
    <a href="{{ resources.preview.root }}{{ p.html }}">&larr; {{ p.title | e }}</a>{% endif %}</span>
  <span>{% if resources.preview.next %}{% set n = resources.preview.next -%}
    <a href="{{ resources.preview.root }}{{ n.html }}">{{ n.title | e }} &rarr;</a>{% endif %}</span>
</nav>
</main>
</div>
</body>
{% endblock body_footer %}
"""


def _exporter():
    ex = HTMLExporter(
        extra_loaders=[DictLoader({"preview.html.j2": TEMPLATE})],
        template_name="lab",
        exclude_anchor_links=True,
    )
    ex.template_file = "preview.html.j2"
    return ex


# ---------------------------------------------------------------------------------------------
# Site structure: reading order from nbdev's sidebar, titles from the front matter
# ---------------------------------------------------------------------------------------------
def sidebar_entries(nbs_path):
    "nbdev's generated sidebar (what `nbdev_docs` writes to sidebar.yml), computed without writing it."
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        nbdev_sidebar.__wrapped__(path=nbs_path, printit=True, file_re=_def_file_re, force=True)
    return buf.getvalue(), yaml.safe_load(buf.getvalue())["website"]["sidebar"]["contents"]


def _flatten(contents):
    for c in contents:
        if isinstance(c, str):
            yield c
        elif isinstance(c, dict):
            if c.get("href"):
                yield c["href"]
            yield from _flatten(c.get("contents", []))


def _site_meta(root, nbs_path, cfg):
    meta = {}
    for f in (root / "_quarto.yml", nbs_path / "nbdev.yml"):
        if f.exists():
            meta = _merge(meta, yaml.safe_load(f.read_text()) or {})
    w = meta.get("website", {})
    site_url = (w.get("site-url") or f"{cfg.get('doc_host', '')}{cfg.get('doc_baseurl', '')}").rstrip(
        "/"
    ) + "/"
    return dict(
        title=w.get("title") or cfg.get("title", cfg.lib_name),
        site_url=site_url,
        repo_url=w.get("repo-url") or cfg.get("git_url", ""),
        navbar=w.get("navbar", {}).get("left", []),
    )


def _merge(a, b):
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def html_name(nb_rel):
    "The page Quarto writes for a notebook (nbdev's rule: lower case, leading number dropped)."
    return _nbpath2html(Path(nb_rel)).as_posix()


# ---------------------------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------------------------
def copy_mathjax(out):
    """Copy MathJax 3's browser build (its `es5/` folder, fonts included) next to the pages, once.
    It comes from PyPI's `django-static-mathjax` (MathJax 3.2.2 as package data, no dependencies;
    the import name is `mathjax`), a dev requirement, so the preview needs no CDN and no npm."""
    try:
        import mathjax
    except ImportError:
        sys.exit("The offline preview needs MathJax: pip install django-static-mathjax (a dev requirement)")
    src, dst = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5", out / MATHJAX_DIR
    if not (src / "tex-chtml-full.js").exists():
        sys.exit(f"no MathJax browser build at {src}: reinstall django-static-mathjax")
    stamp = dst / ".source"
    if not stamp.exists() or stamp.read_text() != str(src):
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("sre", "*.map"))
        stamp.write_text(str(src))
    return f"{MATHJAX_DIR}/tex-chtml-full.js"


def _rewrite_links(soup, page_rel, site_url, pages):
    "Links to the site's URL and to notebooks become relative links between the local pages."
    depth = page_rel.count("/")
    up = "../" * depth
    for a in soup.find_all("a", href=True):
        href = a["href"]
        if href.startswith(site_url):
            href = up + href[len(site_url) :]
        m = re.match(r"^(?!\w+:|#|/)([^#?]+\.ipynb)(#.*)?$", href)
        if m:
            target = os.path.normpath(os.path.join(os.path.dirname(page_rel), m.group(1)))
            href = os.path.relpath(html_name(target), os.path.dirname(page_rel) or ".") + (m.group(2) or "")
        a["href"] = href


def _headings_and_folds(soup, summaries):
    seen = set()
    for el in soup.select(".pv-content [id]"):
        if el.name not in ("h1", "h2", "h3", "h4", "h5", "h6"):
            seen.add(el["id"])
    for h in soup.select(
        ".jp-Cell h1, .jp-Cell h2, .jp-Cell h3, .jp-Cell h4, .jp-Cell h5, .jp-Cell h6, .pv-title h1"
    ):
        for a in h.select("a.anchor-link"):
            a.decompose()
        h["id"] = pandoc_id(h.get_text(), seen)
    for cell in soup.select(".jp-CodeCell"):
        classes = cell.get("class", [])
        inp = cell.select_one(".jp-Cell-inputWrapper")
        if inp is None:
            continue
        if "celltag_echo-false" in classes:
            inp.decompose()
            continue
        fold = next((c for c in classes if c.startswith("celltag_fold-")), None)
        if fold:
            det = soup.new_tag("details", attrs={"class": "pv-fold"})
            if fold.endswith("show"):
                det["open"] = ""
            summ = soup.new_tag("summary")
            summ.string = next(
                (summaries[int(c.split("-")[-1])] for c in classes if c.startswith("celltag_summary-")),
                "Code",
            )
            inp.wrap(det)
            det.insert(0, summ)


def process(nbs_path, cache, force=False, log=print):
    """nbdev's `proc_nbs` (the first step of `nbdev_docs`), one notebook at a time in this process
    (faster than its worker processes for a dozen notebooks), carrying on past a notebook that fails
    so every failure is reported. Returns {notebook: error message}."""
    cfg = get_config()
    if force and cache.exists():
        shutil.rmtree(cache)
    cache.mkdir(parents=True, exist_ok=True)
    cache_mtime = cache.stat().st_mtime
    # every page links to API entries through `_modidx.py`: when nbdev_export changed it, reprocess everything
    modidx = cfg.lib_path / "_modidx.py"
    deps = [cfg.config_file, Path(nbdev.serve_drv.__file__)] + ([modidx] if modidx.exists() else [])
    if cache_mtime < max(f.stat().st_mtime for f in deps):
        shutil.rmtree(cache)
        cache.mkdir()
        cache_mtime = cache.stat().st_mtime
    # a notebook saved while this runs is newer than the cache's stamp, so the next build takes it
    started = time.time()
    files = nbglob(nbs_path, func=Path, file_glob="", file_re="")
    files += [nbs_path / f for f in ("_quarto.yml", "_brand.yml") if (nbs_path / f).exists()]
    failures = {}
    for f in files:
        job = _proc_file(f, cache=cache, path=nbs_path, mtime=cache_mtime)
        if not job:
            continue
        rel = f.relative_to(nbs_path).as_posix()
        try:
            nbdev.serve_drv.main(job)
        except Exception as e:
            os.environ.pop("IN_TEST", None)
            msg = f"{e}" + (f"\n{type(e.__cause__).__name__}: {e.__cause__}" if e.__cause__ else "")
            if isinstance(e.__cause__, NameError) and "import" in str(e):
                msg += (
                    "\nHint: to render show_doc, nbdev runs only the export, import and show_doc cells of a "
                    "notebook; this cell mixes an import with code that needs cells nbdev does not run. "
                    "Put the import in a cell of its own "
                    '(nbdev FAQ: "cells containing imports and other code").'
                )
            failures[rel] = msg
            log(f"FAILED: nbdev could not process {rel}:\n{msg}")
            (cache / rel).unlink(missing_ok=True)
    os.utime(cache, (started, started))
    return failures


def build(force=False, out=None, quiet=False):
    "Process the notebooks with nbdev and render them to `out` (default `_preview/`); return the page list."
    cfg = get_config()
    root, nbs_path = cfg.config_path, cfg.nbs_path
    out = Path(out or root / PREVIEW_DIR)
    log = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    sidebar_yml, contents = sidebar_entries(nbs_path)
    t0 = time.time()
    cache = root / "_proc"
    failures = process(nbs_path, cache, force=force, log=log)
    log(f"nbdev processors -> {cache} ({time.time() - t0:.1f}s)")
    t0 = time.time()
    (cache / "sidebar.yml").write_text(sidebar_yml)  # what nbdev_docs would have there
    site = _site_meta(root, nbs_path, cfg)
    out.mkdir(parents=True, exist_ok=True)
    for f in out.rglob("*.html"):  # no stale page of a notebook that failed or went away
        if MATHJAX_DIR not in f.relative_to(out).parts:
            f.unlink()
    mathjax = copy_mathjax(out)

    nbs = sorted(
        p.relative_to(cache).as_posix()
        for p in cache.rglob("*.ipynb")
        if not any(s.startswith((".", "_")) for s in p.relative_to(cache).parts)
    )
    # a notebook removed or renamed since the last build
    for p in [p for p in nbs if not (nbs_path / p).exists()]:
        (cache / p).unlink()
        nbs.remove(p)
    order = [p for p in _flatten(contents) if p in nbs] + [p for p in nbs if p not in set(_flatten(contents))]
    loaded = {p: nbformat.read(cache / p, as_version=4) for p in order}
    pages = []
    for p in order:
        fm = front_matter(loaded[p])
        pages.append(
            dict(
                notebook=p,
                html=html_name(p),
                title=fm.get("title", Path(p).stem),
                description=fm.get("description", ""),
            )
        )
    by_nb = {pg["notebook"]: pg for pg in pages}

    def sidebar_html(items, cur, up):
        lis = []
        for c in items:
            if isinstance(c, str):
                if c not in by_nb:
                    continue
                pg = by_nb[c]
                cls = ' class="pv-active"' if c == cur else ""
                lis.append(f'<li><a{cls} href="{up}{pg["html"]}">{html.escape(pg["title"])}</a></li>')
            elif isinstance(c, dict):
                head = html.escape(str(c.get("section", "")))
                if c.get("href") in by_nb:
                    head = f'<a href="{up}{by_nb[c["href"]]["html"]}">{head}</a>'
                lis.append(f"<li>{head}{sidebar_html(c.get('contents', []), cur, up)}</li>")
        return "<ul>" + "".join(lis) + "</ul>"

    navbar = [
        dict(
            text=i.get("text", ""),
            href=html_name(i["href"]) if str(i.get("href", "")).endswith(".ipynb") else i.get("href", ""),
        )
        for i in site["navbar"]
        if isinstance(i, dict) and i.get("href") and not str(i["href"]).startswith("http")
    ]
    styles = cache / "styles.css"
    ex = _exporter()
    for i, pg in enumerate(pages):
        nb, summaries = quarto_cells(copy.deepcopy(loaded[pg["notebook"]]))
        up = "../" * pg["html"].count("/")
        res = {
            "metadata": {"name": pg["title"], "path": str(cache / Path(pg["notebook"]).parent)},
            "preview": dict(
                root=up,
                mathjax=mathjax,
                site_title=site["title"],
                repo_url=site["repo_url"],
                navbar=navbar,
                title=pg["title"],
                description=pg["description"],
                styles=styles.read_text() if styles.exists() else "",
                sidebar_html=sidebar_html(contents, pg["notebook"], up),
                prev=pages[i - 1] if i > 0 else None,
                next=pages[i + 1] if i + 1 < len(pages) else None,
            ),
        }
        nb.metadata["title"] = f"{pg['title']} – {site['title']}"
        body, _ = ex.from_notebook_node(nb, resources=res)
        soup = BeautifulSoup(body, "html.parser")
        _headings_and_folds(soup, summaries)
        _rewrite_links(soup, pg["html"], site["site_url"], pages)
        dest = out / pg["html"]
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(str(soup), encoding="utf-8")
    # files the notebooks refer to (images in markdown, data files): copied beside the pages
    for f in cache.rglob("*"):
        rel = f.relative_to(cache)
        if (
            f.is_file()
            and f.suffix not in (".ipynb", ".yml", ".yaml")
            and not any(s.startswith((".", "_")) for s in rel.parts)
        ):
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, out / rel)
    (out / "pages.json").write_text(json.dumps(dict(pages=pages, failures=failures), indent=1))
    log(f"wrote {len(pages)} pages to {out} ({time.time() - t0:.1f}s); open {out / 'index.html'}")
    if failures:
        log(f"FAILED: {len(failures)} notebook(s) could not be processed: {sorted(failures)}")
    return out, pages, failures


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--force", action="store_true", help="reprocess every notebook, not only the changed ones"
    )
    ap.add_argument("--out", default=None, help="output folder (default: _preview/ in the project root)")
    a = ap.parse_args()
    _, _, failures = build(force=a.force, out=a.out)
    sys.exit(1 if failures else 0)
