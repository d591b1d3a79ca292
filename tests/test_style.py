"""Lines of the library that nbdev_export writes: at most 110 characters (pyproject.toml's line-length).

ruff formats the notebooks' code but does not wrap comments, docstrings or long strings, and its E501 is off
for resvmamba/*.py because of two kinds of lines nbdev writes itself; this test keeps the rule for the rest.
"""

import ast
from pathlib import Path

MAX_LINE = 110
LIB = Path(__file__).resolve().parent.parent / "resvmamba"


def generated_lines(src):
    "Lines nbdev writes itself: `__all__` (wrapped at 120 columns) and line 1, the notebook's description."
    tree = ast.parse(src)
    lines = set()
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            lines.update(range(node.lineno, node.end_lineno + 1))
    doc = tree.body[0] if tree.body else None
    if isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant) and isinstance(doc.value.value, str):
        if doc.lineno == doc.end_lineno == 1:
            lines.add(1)
    return lines


def long_lines(path, max_line=MAX_LINE):
    "`file:line (length)` of each line of `path` over `max_line` characters, nbdev's own lines excepted."
    src = path.read_text(encoding="utf-8")
    skip = generated_lines(src)
    return [
        f"{path.name}:{i} ({len(line)})"
        for i, line in enumerate(src.splitlines(), 1)
        if len(line) > max_line and i not in skip
    ]


def test_library_lines_fit():
    modules = [p for p in sorted(LIB.glob("*.py")) if p.name != "_modidx.py"]
    assert modules, f"no modules found in {LIB}"
    found = [hit for p in modules for hit in long_lines(p)]
    assert not found, (
        f"lines over {MAX_LINE} characters (wrap them in the notebook's exported cell, then nbdev_export): "
        + ", ".join(found)
    )


def test_long_lines_finds_and_spares(tmp_path):
    "The check can fail: long code and comments are reported; `__all__` and line 1's docstring are not."
    f = tmp_path / "m.py"
    long = "x" * 120
    f.write_text(
        f'"""{long}"""\n\n__all__ = [\n    "{long}",\n]\n\n# {long}\ny = "{long}"\n', encoding="utf-8"
    )
    comment, string = f"# {long}", f'y = "{long}"'
    assert long_lines(f) == [f"m.py:7 ({len(comment)})", f"m.py:8 ({len(string)})"]
