"""`resvmamba_train` end to end on tiny settings (CPU): the log, the run folder, `load_run`, a
killed-and-resumed run, two gloo processes. One finished run is shared by the tests that only read it; bad
input is in tests/test_cli.py."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import psutil
import pytest
import torch

from cli_helpers import DATA_SIZE, TINY, cli, run_cli
from resvmamba.cli import RUN_FILES, load_run, train
from resvmamba.models import create_model


@pytest.fixture(scope="session")
def data(mini_food):
    return mini_food(**DATA_SIZE)


def finished_args(data):
    return ["--data", data, *TINY, "--epochs", 3, "--warmup", 1]


@pytest.fixture(scope="session")
def finished(data, tmp_path_factory):
    "A finished 3-epoch run whose standard output went to a file, as in CI or under nohup."
    out = tmp_path_factory.mktemp("finished") / "run"
    with open(out.parent / "stdout.txt", "w") as f:
        r = cli(*finished_args(data), "--out", out, stdout=f)
    assert r.returncode == 0, r.stderr[-2000:]
    return out, (out.parent / "stdout.txt").read_text(), r.stderr


HEADER = ["model", "data", "device", "precision", "compile", "recipe", "schedule", "run"]
COLUMNS = ["epoch", "train_loss", "valid_loss", "top-1", "top-5", "img/s", "time"]


def test_log_written_to_a_file_is_plain(finished, data):
    """A header block saying what the run does, one line per epoch with img/s, the totals, the result: plain
    lines, no bars."""
    out, stdout, stderr = finished
    assert "\r" not in stdout and "█" not in stdout
    lines = stdout.splitlines()
    head, lines = dict(line.split(None, 1) for line in lines[:8]), lines[8:]
    assert list(head) == HEADER
    assert head["model"].startswith("resvmamba_test, 0.") and " M parameters" in head["model"]
    assert head["data"] == f"{data}: 36 train / 12 valid / 16 test images, 4 classes, 32 px"
    assert (
        head["device"].startswith("CPU, ")
        and head["precision"] == "float32"
        and head["compile"].startswith("no (--compile auto")
    )
    assert head["recipe"].startswith("36 training images of 32x32 px: light (small and low-resolution set)")
    assert head["schedule"].startswith(
        "3 epochs (1 warm-up), peak lr 0.003, batch 8 per process, mixup 0.8"
    ) and head["run"] == str(out)
    assert lines[0].split() == COLUMNS
    assert [line.split()[0] for line in lines[1:4]] == ["0", "1", "2"] and all(
        len(line.split()) == 7 for line in lines[1:4]
    )
    assert all(int(line.split()[5]) > 0 for line in lines[1:4])  # img/s of each epoch
    assert lines[4].startswith("trained 3 epochs in ") and "img/s); no GPU memory used (CPU)" in lines[4]
    assert lines[5].startswith("test top-1 ") and "(chance 0.250" in lines[5] and len(lines) == 6
    assert stderr == ""  # no FutureWarning from fastai's import, no other warning


def test_run_folder(finished):
    out = finished[0]
    assert sorted(p.name for p in out.iterdir()) == sorted(RUN_FILES)
    res = json.loads((out / "test.json").read_text())
    assert (res["n_test"], res["n_classes"], res["epochs"], res["processes"]) == (16, 4, 3, 1)
    assert 0 <= res["test_top1"] <= res["test_top5"] <= 1 and res["chance_top1"] == 0.25
    log = pd.read_csv(out / "log.csv")
    assert list(log.columns) == COLUMNS and list(log.epoch) == [0, 1, 2] and (log["img/s"] > 0).all()
    assert res["train_seconds"] > 0 and res["peak_gpu_mem_gib"] is None and res["recipe"] == "light"
    # 4 batches of 8, the last dropped: 32 images an epoch
    assert res["train_img_per_s"] == pytest.approx(3 * 32 / res["train_seconds"], rel=0.02)
    ck = torch.load(out / "ckpt/last.pth", weights_only=False)
    assert ck["epoch"] == 2 and {"model", "ema", "opt", "rng", "recorder"} <= set(ck)
    per_class = pd.read_csv(out / "per_class.csv")
    assert per_class.n.sum() == 16 and per_class.correct.sum() == round(res["test_top1"] * 16)
    assert (per_class.accuracy - per_class.correct / per_class.n).abs().max() < 1e-4
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["arch"], cfg["num_classes"], cfg["class_names"]) == (
        "resvmamba_test",
        4,
        list(per_class.name),
    )
    assert cfg["settings"]["bs"] == 8 and cfg["settings"]["mixup"] == 0.8 and cfg["resvmamba_version"]
    assert cfg["settings"]["compile"] == "auto" and cfg["compiled"] is False  # auto: not on the CPU
    assert cfg["recipe"] == "light" and cfg["recipe_reason"].startswith(
        "36 training images of 32x32 px: light"
    )
    assert (
        cfg["settings"]["recipe"] == "auto"
        and cfg["settings"]["lr"] == 3e-3
        and cfg["settings"]["grad_checkpointing"] is False
    )
    # light's, with --mixup 0.8
    assert cfg["recipe_settings"]["crop_scale"] == [0.8, 1.0] and cfg["recipe_settings"]["mixup"] == 0.8
    assert cfg["recipe_reason"].endswith("; given mixup=0.8, bs=8")


def test_resume_with_nothing_to_resume_then_load_run(data, tmp_path, capsys):
    """--resume on an empty folder says so and trains; the run (with a model override) then loads from
    config.json + model_ema.pth alone."""
    train(
        str(data),
        arch="resvmamba_test",
        epochs=1,
        bs=8,
        size=64,
        cpu=True,
        out=tmp_path / "run",
        model_kw=dict(patch_size=8),
        resume=True,
        quiet=True,
    )
    lines = capsys.readouterr().out.splitlines()  # quiet: the notice and the result only
    assert (
        len(lines) == 2
        and lines[0].startswith("--resume: nothing to resume in")
        and lines[1].startswith("test top-1")
    )
    only = tmp_path / "copy"
    only.mkdir()
    for f in ("config.json", "model_ema.pth"):
        shutil.copy(tmp_path / "run" / f, only / f)
    run = load_run(only)
    assert run.config["model_overrides"] == {"patch_size": 8} and len(run.classes) == 4
    ref = create_model("resvmamba_test", num_classes=4, patch_size=8).eval()
    ref.load_state_dict(torch.load(only / "model_ema.pth", weights_only=True))
    from PIL import Image

    x = torch.stack(
        [
            run.transform(Image.open(f).convert("RGB"))
            for f in sorted((data / "val600x600").rglob("*.jpg"))[:3]
        ]
    )
    assert x.shape == (3, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(run.model(x), ref(x), rtol=0, atol=0)
    with pytest.raises(FileNotFoundError, match="model_ema.pth"):
        load_run(tmp_path)


def test_load_run_names_a_damaged_file(finished, tmp_path):
    """A truncated config.json or model_ema.pth: a one-line error naming the file and the problem (no bare
    JSONDecodeError)."""
    from resvmamba.vmamba import CheckpointError

    run = tmp_path / "run"
    run.mkdir()
    for f in ("config.json", "model_ema.pth"):
        shutil.copy(finished[0] / f, run / f)
    good = (run / "config.json").read_text()
    (run / "config.json").write_text(good[: len(good) // 2])
    bad_json = (
        rf"{run / 'config.json'} is not valid JSON \(.* at line \d+, column \d+\): truncated or damaged"
    )
    with pytest.raises(ValueError, match=bad_json):
        load_run(run)
    (run / "config.json").write_text(
        json.dumps({k: v for k, v in json.loads(good).items() if k != "class_names"})
    )
    with pytest.raises(ValueError, match="config.json lacks class_names"):
        load_run(run)
    (run / "config.json").write_text(good)
    w = (run / "model_ema.pth").read_bytes()
    (run / "model_ema.pth").write_bytes(w[: len(w) // 2])
    with pytest.raises(CheckpointError, match=rf"checkpoint {run / 'model_ema.pth'} is truncated or damaged"):
        load_run(run)


def test_load_run_from_the_training_checkpoint(finished):
    """weights='ckpt/last.pth' takes the checkpoint's EMA weights: the same model as model_ema.pth at the end
    of the run."""
    a, b = load_run(finished[0]), load_run(finished[0], weights="ckpt/last.pth")
    for k, v in a.model.state_dict().items():
        torch.testing.assert_close(b.model.state_dict()[k], v, rtol=0, atol=0)


def test_existing_run_is_never_overwritten(finished, data):
    out = finished[0]
    before = {f: f.read_bytes() for f in out.rglob("*") if f.is_file()}
    code, _, err = run_cli("--data", data, *TINY, "--epochs", 2, "--warmup", 1, "--out", out)
    assert (
        code == 2
        and "Traceback" not in err
        and f"--out {out}: already holds a run" in err
        and "--resume" in err
    )
    assert {f: f.read_bytes() for f in out.rglob("*") if f.is_file()} == before


def test_killed_run_resumes_to_the_same_result(data, finished, tmp_path):
    """SIGKILL after the first checkpoint, with the next epoch's log row already written (a kill during the
    save); --resume ends like the uninterrupted run."""
    args, ref = finished_args(data), finished[0]
    out = tmp_path / "cut"
    p = subprocess.Popen(
        [shutil.which("resvmamba_train"), *map(str, args), "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ck, t0 = out / "ckpt/last.pth", time.time()
    while not ck.is_file() and p.poll() is None and time.time() - t0 < 240:
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    done = torch.load(ck, weights_only=False)["epoch"]
    assert done < 2, "the run finished before it could be interrupted; make it longer"
    with open(out / "log.csv", "a") as f:
        f.write(f"{done + 1},9.9,9.9,0.0,0.0,00:01\n")  # the row of an epoch the checkpoint never saw
    r = cli(*args, "--out", out, "--resume")
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"resuming from {ck}: epoch {done + 1} of 3" in r.stdout
    a, b = pd.read_csv(ref / "log.csv"), pd.read_csv(out / "log.csv")
    assert list(b.epoch) == [0, 1, 2]  # the same epochs, each once, one header
    cols = ["train_loss", "valid_loss", "top-1", "top-5"]
    assert (a[cols] - b[cols]).abs().max().max() < 1e-4  # the same history
    ca, cb = (torch.load(d / "ckpt/last.pth", weights_only=False) for d in (ref, out))
    # the same LR at every step
    assert ca["recorder"]["lrs"] == pytest.approx(cb["recorder"]["lrs"], rel=1e-9)
    for k in ca["ema"]:
        torch.testing.assert_close(ca["ema"][k], cb["ema"][k], rtol=1e-4, atol=1e-5)
    for k in ca["model"]:
        torch.testing.assert_close(ca["model"][k], cb["model"][k], rtol=1e-4, atol=1e-5)


def _torchrun(data, out, port, *extra, **kw):
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(port),
        shutil.which("resvmamba_train"),
        "--data",
        str(data),
        *TINY,
        "--epochs",
        "2",
        "--warmup",
        "0",
        "--out",
        str(out),
        *extra,
    ]


def test_two_gloo_processes_resume_and_report_once(data, tmp_path):
    """fastai's distributed path (DDP over gloo, sharded loaders) under torchrun: killed as a whole, resumed,
    rank 0 alone reporting, no DDP warnings."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = tmp_path / "ddp"
    p = subprocess.Popen(
        _torchrun(data, out, 29517), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    ck, t0 = out / "ckpt/last.pth", time.time()
    while not ck.is_file() and p.poll() is None and time.time() - t0 < 240:
        time.sleep(0.05)
    procs = [psutil.Process(p.pid), *psutil.Process(p.pid).children(recursive=True)]
    for q in procs:
        # the launcher and both workers (torchrun starts them in sessions of their own), as a preemption would
        q.kill()
    p.wait()
    psutil.wait_procs(procs, timeout=30)
    assert torch.load(ck, weights_only=False)["epoch"] == 0, "the run finished before it could be interrupted"
    r = subprocess.run(
        _torchrun(data, out, 29518, "--resume"), capture_output=True, text=True, timeout=240, env=env
    )
    assert r.returncode == 0, (r.stdout[-1500:], r.stderr[-3000:])
    assert r.stdout.count("resuming from") == 1 and r.stdout.count("test top-1") == 1  # rank 0 alone prints
    assert sum(line.split()[:1] == ["1"] for line in r.stdout.splitlines()) == 1  # epoch 1's line, once
    for warning in ("Grad strides do not match", "destroy_process_group", "barrier", "FutureWarning"):
        assert warning not in r.stderr, r.stderr[-3000:]
    res = json.loads((out / "test.json").read_text())
    assert res["processes"] == 2 and res["n_test"] == 16
    assert list(pd.read_csv(out / "log.csv").epoch) == [0, 1]


def test_distill_learner_refuses_as_the_command_does(finished, data, tmp_path):
    """The Python API names the same problems as resvmamba_train --teacher: a truncated teacher, a factor that
    is no power of 2, a size it does not divide."""
    from resvmamba.distill import distill_learner
    from resvmamba.vmamba import CheckpointError

    bad = tmp_path / "last.pth"
    bad.write_bytes((finished[0] / "ckpt/last.pth").read_bytes()[:5000])
    kw = dict(student="resvmamba_test", size=32, bs=8, device="cpu", split="paper")
    with pytest.raises(CheckpointError, match=rf"checkpoint {bad} is truncated or damaged"):
        distill_learner(data, teacher=bad, factor=2, **kw)
    with pytest.raises(ValueError, match=r"factor must be a power of 2 >= 2 \(2, 4, 8, ...\), got 1"):
        distill_learner(data, teacher=finished[0], factor=1, **kw)
    with pytest.raises(ValueError, match="size=32 is not a multiple of factor=3"):
        distill_learner(data, teacher=finished[0], factor=3, **kw)
    # a good teacher: the run folder's ckpt/last.pth
    learn = distill_learner(data, teacher=finished[0], factor=2, **kw)
    assert (learn.model.factor, learn.model.front_name, learn.distill.factor) == (2, "sr", 2)


def test_recipe_auto_follows_the_data_and_paper_can_be_asked(data, tmp_path, monkeypatch):
    """auto picks paper for a set that is large and sharp enough (thresholds lowered so the tiny set
    qualifies); --recipe paper is taken as asked."""
    import resvmamba.data

    monkeypatch.setattr(resvmamba.data, "SMALL_SET", 20)
    monkeypatch.setattr(resvmamba.data, "LOW_RES", 16)
    code, out, err = run_cli(
        "--data", data, *TINY, "--epochs", 1, "--out", tmp_path / "auto", "--grad_checkpointing"
    )
    assert code == 0, err
    head = dict(line.split(None, 1) for line in out.splitlines()[:8])
    assert head["recipe"].startswith(
        "36 training images of 32x32 px: paper (at least 20 images of at least 16 px"
    )
    cfg = json.loads((tmp_path / "auto/config.json").read_text())
    assert (
        cfg["recipe"] == "paper"
        and cfg["settings"]["lr"] == 1e-3
        and cfg["settings"]["grad_checkpointing"] is True
    )
    monkeypatch.undo()
    code, out, err = run_cli(
        "--data", data, *TINY, "--epochs", 1, "--out", tmp_path / "paper", "--recipe", "paper", "--quiet"
    )
    cfg = json.loads((tmp_path / "paper/config.json").read_text())
    assert code == 0 and cfg["recipe"] == "paper" and "paper (as asked)" in cfg["recipe_reason"], err
    assert (
        cfg["settings"]["lr"],
        cfg["recipe_settings"]["rand_augment"],
        cfg["recipe_settings"]["re_prob"],
    ) == (1e-3, "rand-m9-mstd0.5-inc1", 0.25)


def test_defaults_are_the_recipes():
    """The paper's defaults are §4.3's; the demo's are those the README's recorded demo ran with, and the
    light recipe's."""
    from resvmamba.data import choose_recipe
    from resvmamba.train import DEMO, DEMO_MINI, PAPER

    def pick(d):
        return {k: d[k] for k in ("lr", "bs", "warmup", "mixup", "cutmix", "epochs", "size")}

    assert pick(PAPER) == dict(lr=1e-3, bs=128, warmup=20, mixup=0.8, cutmix=1.0, epochs=150, size=224)
    assert pick(DEMO) == dict(lr=3e-3, bs=32, warmup=1, mixup=0.0, cutmix=0.0, epochs=14, size=48)
    n_train = DEMO_MINI["n_classes"] * DEMO_MINI["per_class"] * (10 - DEMO_MINI["valid_tenths"]) // 10
    assert n_train == 2880 and choose_recipe(n_train, DEMO_MINI["size"])[0] == "light"


def test_lr_find_saves_the_plot_and_trains_nothing(data, tmp_path):
    """--lr_find: the suggestion printed, lr_find.png in the run folder, no run there (the same --out then
    trains)."""
    out = tmp_path / "run"
    code, stdout, err = run_cli("--data", data, *TINY, "--out", out, "--lr_find")
    assert code == 0, err
    line = stdout.splitlines()[-1]
    assert (
        line.startswith("lr_find: suggested peak learning rate ")
        and f"plot {out / 'lr_find.png'}" in line
        and "nothing trained" in line
    )
    assert 1e-7 < float(line.split()[5]) < 10  # within fastai's sweep
    assert sorted(p.name for p in out.iterdir()) == ["lr_find.png"]
    from PIL import Image

    assert Image.open(out / "lr_find.png").size[0] > 100
    code, stdout, err = run_cli("--data", data, *TINY, "--epochs", 1, "--out", out, "--quiet")
    assert code == 0 and "test top-1" in stdout, err
