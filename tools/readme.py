"""Keep README.md in sync with nbs/index.ipynb without Quarto.

`nbdev_readme` renders the front page with Quarto, which cannot be installed everywhere this
project is built. This script writes the same front page as plain Markdown: markdown cells
verbatim (links to chapters pointed into `nbs/`), code cells as Python blocks with their text
output, `#| hide` cells left out.

    python tools/readme.py            # rewrite README.md
    python tools/readme.py --check    # exit 1 if README.md differs from what it would write
    python tools/readme.py --command test   # print the README's test command (used by .ci/run)
"""

import json
import re
import sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent
nb_path, readme_path = root / "nbs" / "index.ipynb", root / "README.md"
header = (
    "<!-- WARNING: generated from nbs/index.ipynb by tools/readme.py; "
    "edit the notebook, not this file -->\n\n"
)


def _src(cell):
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def _directives(src):
    return {
        line[3:].strip().split()[0] for line in src.splitlines() if line.startswith("#|") and line[3:].strip()
    }


def _chapter_links(md):
    "Point links to sibling notebooks at `nbs/` so they resolve on the repository page."
    return re.sub(r"\]\((?!https?:|#|nbs/)([^)]+\.ipynb)", r"](nbs/\1", md)


def _text_output(cell):
    out = []
    for o in cell.get("outputs", []):
        if o["output_type"] == "stream":
            out.append("".join(o["text"]))
        elif "text/plain" in o.get("data", {}) and not any(k.startswith("image/") for k in o["data"]):
            out.append("".join(o["data"]["text/plain"]))
    return "".join(out).rstrip("\n")


def render(nb):
    parts = []
    for cell in nb["cells"]:
        src = _src(cell)
        if cell["cell_type"] == "markdown":
            parts.append(_chapter_links(src.strip()))
        elif cell["cell_type"] == "code":
            d = _directives(src)
            if d & {"hide", "export", "exporti", "default_exp"}:
                continue
            code = "\n".join(line for line in src.splitlines() if not line.startswith("#|")).strip()
            if not code:
                continue
            block = f"```python\n{code}\n```"
            out = _text_output(cell)
            if out:
                block += "\n\n    " + out.replace("\n", "\n    ")
            parts.append(block)
    return header + "\n\n".join(p for p in parts if p) + "\n"


def commands(text):
    "The README's copy-pasteable commands, keyed by the word in the comment line above each."
    return dict(re.findall(r"```(?:sh|bash)\n# (\w+)[^\n]*\n(.+?)\n```", text, flags=re.S))


def main(argv):
    text = render(json.loads(nb_path.read_text(encoding="utf-8")))
    if "--command" in argv:
        name = argv[argv.index("--command") + 1]
        cmds = commands(text)
        if name not in cmds:
            sys.exit(f"README has no `# {name}` command block; it has: {sorted(cmds)}")
        print(cmds[name])
        return
    if "--check" in argv:
        if not readme_path.exists() or readme_path.read_text(encoding="utf-8") != text:
            sys.exit(
                "README.md is out of sync with nbs/index.ipynb: "
                "run `python tools/readme.py` and commit README.md"
            )
        print("README.md is in sync with nbs/index.ipynb")
        return
    readme_path.write_text(text, encoding="utf-8")
    print(f"wrote {readme_path.relative_to(root)}")


if __name__ == "__main__":
    main(sys.argv[1:])
