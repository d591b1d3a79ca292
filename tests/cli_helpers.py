"Shared pieces of the `resvmamba_train` tests: tiny settings, a generated dataset, the command in a subprocess or in this process."
import io, shutil, subprocess
from contextlib import redirect_stderr, redirect_stdout

import pytest

from resvmamba.data import make_mini_food
from resvmamba.cli import resvmamba_train

TINY = ["--arch", "resvmamba_test", "--bs", "8", "--size", "32", "--cpu", "--mixup", "0.8"]


@pytest.fixture(scope="session")
def data(tmp_path_factory):
    "A 4-class, 32-px mini CNFOOD (48 training+validation images, 16 test images)."
    return make_mini_food(tmp_path_factory.mktemp("d") / "mini", n_classes=4, per_class=12, size=32)


def cli(*args, timeout=300, env=None, stdout=subprocess.PIPE):
    "The installed console script in a subprocess (what a user runs)."
    exe = shutil.which("resvmamba_train")
    assert exe, "resvmamba_train is not installed: pip install -e ."
    return subprocess.run([exe, *map(str, args)], stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=timeout, env=env)


def run_cli(*args):
    "The console script's function in this process (no interpreter start-up): exit code, stdout, stderr."
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try: resvmamba_train([str(a) for a in args]); code = 0
        except SystemExit as e: code = e.code
    return code, out.getvalue(), err.getvalue()
