"Checks of the package skeleton: version, the single docs configuration, the README's commands."

import configparser
import subprocess
import sys
from pathlib import Path

import resvmamba

root = Path(__file__).resolve().parent.parent


def settings():
    cfg = configparser.ConfigParser(delimiters=["="])
    cfg.read(root / "settings.ini")
    return cfg["DEFAULT"]


def test_version_matches_settings():
    assert resvmamba.__version__ == settings()["version"]


def test_quarto_config_has_one_source():
    link = root / "nbs" / "_quarto.yml"
    assert link.is_symlink(), "nbs/_quarto.yml must be a symlink to the top-level _quarto.yml"
    assert link.resolve() == (root / "_quarto.yml").resolve()


def test_readme_in_sync_and_has_both_commands():
    out = subprocess.run(
        [sys.executable, str(root / "tools" / "readme.py"), "--check"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    sys.path.insert(0, str(root / "tools"))
    import readme

    cmds = readme.commands((root / "README.md").read_text())
    assert set(cmds) >= {"train", "test"}, cmds
    assert "resvmamba_train" in cmds["train"] and "nbdev_test" in cmds["test"] and "pytest" in cmds["test"]


def test_slow_and_cuda_flags_declared():
    assert set(settings()["tst_flags"].split()) == {"slow", "cuda"}  # nbdev splits on whitespace


def _module_level_imports(path):
    """Top-level package names imported when `path` is imported (module body, including try blocks), stdlib
    left out."""
    import ast

    mods = set()
    for node in ast.parse(path.read_text()).body:
        nodes = [node] + (
            node.body + [n for h in node.handlers for n in h.body] if isinstance(node, ast.Try) else []
        )
        for n in nodes:
            if isinstance(n, ast.Import):
                mods |= {a.name.split(".")[0] for a in n.names}
            elif isinstance(n, ast.ImportFrom) and n.level == 0:
                mods.add(n.module.split(".")[0])
    return mods - set(sys.stdlib_module_names) - {"__future__", "resvmamba"}


def test_every_module_level_import_is_a_base_requirement():
    """What `import resvmamba.<module>` needs must come with `pip install resvmamba` (no dev extras): declared
    in `requirements`."""
    import re
    import shlex
    from importlib.metadata import packages_distributions

    declared = {
        re.split(r"[<>=!~; ]", r)[0].lower().replace("_", "-")
        for r in shlex.split(settings()["requirements"])
    }
    dists = packages_distributions()
    missing = {}
    for f in sorted((root / "resvmamba").glob("*.py")):
        for m in _module_level_imports(f):
            names = {d.lower().replace("_", "-") for d in dists.get(m, [m])}
            if not names & declared:
                missing.setdefault(f.name, []).append(f"{m} ({', '.join(sorted(names))})")
    assert not missing, f"imported at module level but not in settings.ini requirements: {missing}"
