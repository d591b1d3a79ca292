"Checks of the package skeleton: version, the single docs configuration, the README's commands."
import configparser, subprocess, sys
from pathlib import Path
import resvmamba

root = Path(__file__).resolve().parent.parent

def settings():
    cfg = configparser.ConfigParser(delimiters=['=']); cfg.read(root/'settings.ini')
    return cfg['DEFAULT']

def test_version_matches_settings():
    assert resvmamba.__version__ == settings()['version']

def test_quarto_config_has_one_source():
    link = root/'nbs'/'_quarto.yml'
    assert link.is_symlink(), "nbs/_quarto.yml must be a symlink to the top-level _quarto.yml"
    assert link.resolve() == (root/'_quarto.yml').resolve()

def test_readme_in_sync_and_has_both_commands():
    out = subprocess.run([sys.executable, str(root/'tools'/'readme.py'), '--check'], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    sys.path.insert(0, str(root/'tools'))
    import readme
    cmds = readme.commands((root/'README.md').read_text())
    assert set(cmds) >= {'train', 'test'}, cmds
    assert 'resvmamba_train' in cmds['train'] and 'nbdev_test' in cmds['test'] and 'pytest' in cmds['test']

def test_slow_and_cuda_flags_declared():
    assert set(settings()['tst_flags'].split()) == {'slow', 'cuda'}  # nbdev splits on whitespace
