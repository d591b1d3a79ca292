"""`resvmamba_train` end to end: the command, a killed-and-resumed run, and two gloo processes (tiny settings, CPU)."""
import json, os, shutil, signal, subprocess, sys, time
from pathlib import Path

import pandas as pd
import pytest
import torch

from resvmamba.data import make_mini_food

TINY = ["--arch", "resvmamba_test", "--bs", "8", "--size", "32", "--cpu", "--mixup", "0.8"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    "A 4-class, 32-px mini CNFOOD (48 training+validation images, 16 test images)."
    return make_mini_food(tmp_path_factory.mktemp("d") / "mini", n_classes=4, per_class=12, size=32)


def _cli(*args, timeout=300, env=None):
    exe = shutil.which("resvmamba_train")
    assert exe, "resvmamba_train is not installed: pip install -e ."
    return subprocess.run([exe, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env)


def test_cli_end_to_end(data, tmp_path):
    r = _cli("--data", data, *TINY, "--epochs", 2, "--warmup", 1, "--out", tmp_path / "run")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "test top-1" in r.stdout and "top-5" in r.stdout
    res = json.loads((tmp_path / "run/test.json").read_text())
    assert (res["n_test"], res["n_classes"], res["epochs"], res["processes"]) == (16, 4, 2, 1)
    assert 0 <= res["test_top1"] <= res["test_top5"] <= 1
    log = pd.read_csv(tmp_path / "run/log.csv")
    assert list(log.columns) == ["epoch", "train_loss", "valid_loss", "top-1", "top-5", "time"] and list(log.epoch) == [0, 1]
    ck = torch.load(tmp_path / "run/ckpt/last.pth", weights_only=False)
    assert ck["epoch"] == 1 and {"model", "ema", "opt", "rng", "recorder"} <= set(ck)


def test_cli_bad_input(tmp_path):
    r = _cli("--data", tmp_path / "nowhere", "--cpu")
    assert r.returncode != 0 and "does not exist" in r.stderr
    r = _cli("--data", tmp_path, "--cpu")
    assert r.returncode != 0 and "train600x600 is missing" in r.stderr


def test_killed_run_resumes_to_the_same_result(data, tmp_path):
    "A run killed (SIGKILL) after its first checkpoint and resumed ends like an uninterrupted run."
    args = ["--data", data, *TINY, "--epochs", 4, "--warmup", 1]
    ref = _cli(*args, "--out", tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr[-2000:]
    exe, out = shutil.which("resvmamba_train"), tmp_path / "cut"
    p = subprocess.Popen([exe, *map(str, args), "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ck, t0 = out / "ckpt/last.pth", time.time()
    while not ck.is_file() and p.poll() is None and time.time() - t0 < 240: time.sleep(0.05)
    p.send_signal(signal.SIGKILL); p.wait()
    done = torch.load(ck, weights_only=False)["epoch"]
    assert done < 3, "the run finished before it could be interrupted; make it longer"
    r = _cli(*args, "--out", out, "--resume")
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"resuming from {ck}: epoch {done + 1} of 4" in r.stdout
    a, b = pd.read_csv(tmp_path / "ref/log.csv"), pd.read_csv(out / "log.csv")
    assert list(b.epoch) == [0, 1, 2, 3]                  # the same epochs, each once, one header
    cols = ["train_loss", "valid_loss", "top-1", "top-5"]
    assert (a[cols] - b[cols]).abs().max().max() < 1e-4   # the same history
    ca, cb = (torch.load(d / "ckpt/last.pth", weights_only=False) for d in (tmp_path / "ref", out))
    assert ca["recorder"]["lrs"] == pytest.approx(cb["recorder"]["lrs"], rel=1e-9)  # the same LR at every step
    for k in ca["ema"]: torch.testing.assert_close(ca["ema"][k], cb["ema"][k], rtol=1e-4, atol=1e-5)
    for k in ca["model"]: torch.testing.assert_close(ca["model"][k], cb["model"][k], rtol=1e-4, atol=1e-5)


def test_two_gloo_processes(data, tmp_path):
    "fastai's distributed path (DDP over gloo, sharded loaders) under torchrun with 2 CPU processes."
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           shutil.which("resvmamba_train"), "--data", str(data), *TINY, "--epochs", "1", "--warmup", "0", "--out", str(tmp_path / "ddp")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    assert r.returncode == 0, (r.stdout[-1500:], r.stderr[-3000:])
    assert r.stdout.count("test top-1") == 1               # rank 0 alone reports
    res = json.loads((tmp_path / "ddp/test.json").read_text())
    assert res["processes"] == 2 and res["n_test"] == 16
