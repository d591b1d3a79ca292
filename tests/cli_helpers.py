"""Shared pieces of the `resvmamba_train` tests: tiny settings, the generated dataset's size, the command in a
subprocess or in this process."""

import io
import shutil
import subprocess
from contextlib import redirect_stderr, redirect_stdout

from resvmamba.cli import resvmamba_train

TINY = ["--arch", "resvmamba_test", "--bs", "8", "--size", "32", "--cpu", "--mixup", "0.8"]


# 48 training+validation images, 16 test images: the counts the tests check
DATA_SIZE = dict(n_classes=4, per_class=12)


def cli(*args, timeout=300, env=None, stdout=subprocess.PIPE):
    "The installed console script in a subprocess (what a user runs)."
    exe = shutil.which("resvmamba_train")
    assert exe, "resvmamba_train is not installed: pip install -e ."
    return subprocess.run(
        [exe, *map(str, args)], stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=timeout, env=env
    )


def run_cli(*args):
    "The console script's function in this process (no interpreter start-up): exit code, stdout, stderr."
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            resvmamba_train([str(a) for a in args])
            code = 0
        except SystemExit as e:
            code = e.code
    return code, out.getvalue(), err.getvalue()
