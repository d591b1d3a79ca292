"""Bad input and misuse of `resvmamba_train`: each ends in one line on stderr naming the argument or file, no
traceback, and a non-zero exit code (2 for an argument, 1 for a failed run). Run in this process: no
interpreter start-up per case."""

import json
import os

import pandas as pd
import pytest
import torch
from PIL import Image

# resvmamba.cli first: it silences fastai's import warning before anything imports fastai
from resvmamba.cli import ARG_RULES, ArgumentError, check_args, load_run

# isort: split
import resvmamba.learner
from cli_helpers import DATA_SIZE, TINY, cli, run_cli
from resvmamba.train import DEMO


@pytest.fixture(scope="session")
def data(mini_food):
    return mini_food(**DATA_SIZE)


def _check_one_line(code, err, expected_code, *names):
    assert code == expected_code, err
    assert "Traceback" not in err and err.startswith("resvmamba_train: error: ") and err.count("\n") == 1, err
    for n in names:
        assert n in err, (n, err)


BAD = [  # arguments, what the one-line message must name
    (["--bs", "0"], "--bs 0: expected an integer >= 1"),
    (["--bs", "-4"], "--bs -4"),
    (["--bs", "abc"], "argument --bs: invalid int value: 'abc'"),
    (["--size", "0"], "--size 0: expected an integer in [32, 2048]"),
    (["--workers", "-1"], "--workers -1"),
    (["--mixup=-1"], "--mixup -1.0: expected a number >= 0"),
    (["--cutmix=-0.5"], "--cutmix -0.5"),
    (["--lr=-1e-3"], "--lr -0.001: expected a number in (0, 1]"),
    (["--lr", "nan"], "--lr nan"),
    (["--lr", "inf"], "--lr inf"),
    (["--lr", "1e6"], "--lr 1000000.0"),
    (["--epochs", "0"], "--epochs 0"),
    (["--epochs", "1", "--warmup", "2"], "--warmup 2: expected an integer in [0, epochs - 1 = 0]"),
    (["--warmup", "-1"], "--warmup -1"),
    (["--seed", "-1"], "--seed -1"),
    (["--arch", "resnet50"], "--arch resnet50: expected one of"),
    (["--compile", "maybe"], "--compile maybe: expected auto (compile on a GPU), yes or no"),
    (["--mixup", "0.8", "--bs", "7"], "--bs 7: expected an even number"),
    (["--resume", "--overwrite"], "--overwrite"),
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--data", "{tmp}/nowhere"], "--data {tmp}/nowhere: does not exist"),
    (["--data", "{tmp}/a_file"], "--data {tmp}/a_file: is a file"),
    (["--split", "{tmp}/nowhere"], "--split {tmp}/nowhere"),
    (["--pretrained", "{tmp}/none.pth"], "--pretrained {tmp}/none.pth: no such file"),
    (["--out", "{tmp}/a_file"], "--out {tmp}/a_file: is a file"),
    (["--out", "{tmp}/a_file/run"], "--out {tmp}/a_file/run: cannot be created: {tmp}/a_file is a file"),
    (["--lr", "-1e-3"], "--lr -0.001: expected a number in (0, 1]"),  # a negative value, not an option
    (["--mixup", "-1"], "--mixup -1.0: expected a number >= 0"),
    (["--lr", "-inf"], "--lr -inf"),
    (["--bs", "-4.5"], "argument --bs: invalid int value: '-4.5'"),
    (["--teacher", "{tmp}", "--factor", "1"], "--factor 1: expected a power of 2 >= 2 (2, 4, 8, ...)"),
    (["--teacher", "{tmp}", "--factor", "3"], "--factor 3: expected a power of 2 >= 2"),
    (["--teacher", "{tmp}", "--factor", "-2"], "--factor -2: expected a power of 2 >= 2"),
    (["--teacher", "{tmp}", "--size", "50"], "--size 50: expected a multiple of --factor 4"),
    (["--recipe", "heavy"], "--recipe heavy: expected auto (chosen from the data), paper or light"),
    (["--lr_find", "--resume"], "--lr_find True: expected without --resume or --overwrite"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_argument_is_one_line_exit_2(args, message, tmp_path):
    (tmp_path / "a_file").write_text("x")
    code, out, err = run_cli(*[a.format(tmp=tmp_path) for a in args])
    _check_one_line(code, err, 2, message.format(tmp=tmp_path))
    assert not (tmp_path / "runs").exists()


def test_default_warmup_clamps_explicit_one_errors():
    cfg = DEMO | dict(workers=None, seed=0, epochs=1)
    assert check_args(cfg, warmup_given=False)["warmup"] == 0
    with pytest.raises(
        ArgumentError, match=rf"warmup={DEMO['warmup']}: expected an integer in \[0, epochs - 1 = 0\]"
    ):
        check_args(cfg, warmup_given=True)


def test_batch_larger_than_training_set_fails_before_training(data, tmp_path):
    code, out, err = run_cli("--data", data, *TINY, "--bs", 64, "--epochs", 1, "--out", tmp_path / "run")
    _check_one_line(code, err, 2, "--bs 64: expected at most 36: the training set has 36 images")
    assert not (tmp_path / "run/log.csv").exists() and not (tmp_path / "run/test.json").exists()


def test_library_errors_are_one_line(data, tmp_path):
    """An error the data pipeline explains (here: a dataset folder without train600x600/) reaches the user as
    one line, exit 1."""
    code, out, err = run_cli("--data", tmp_path, "--cpu")
    _check_one_line(code, err, 1, "train600x600")


def test_console_script_one_line_without_traceback(tmp_path):
    "The installed script itself (a subprocess), as a user meets it."
    r = cli("--bs", 0)
    _check_one_line(r.returncode, r.stderr, 2, "--bs 0")


def test_skip_corrupt_flag(data, tmp_path):
    """One undecodable JPEG stops a run with a message that names it; --skip_corrupt leaves it out (the run
    then gets as far as the batch-size check)."""
    import shutil

    d = tmp_path / "d"
    shutil.copytree(data, d)
    bad = next((d / "train600x600").rglob("*.jpg"))
    bad.write_bytes(b"not a jpeg")
    code, out, err = run_cli("--data", d, *TINY, "--epochs", 1, "--out", tmp_path / "a")
    _check_one_line(code, err, 1, bad.name, "cannot be decoded")
    code, out, err = run_cli(
        "--data", d, *TINY, "--epochs", 1, "--out", tmp_path / "b", "--skip_corrupt", "--bs", 64
    )
    assert code == 2 and "skipped 1 corrupt image" in err and "--bs 64: expected at most 35" in err, err


def test_non_finite_loss_stops_the_run(data, tmp_path, monkeypatch):
    "A loss that turns NaN ends the run: one line, exit 1, no test result written."
    forward = resvmamba.learner.FoodLoss.forward
    monkeypatch.setattr(
        resvmamba.learner.FoodLoss, "forward", lambda self, o, t: forward(self, o, t) * float("nan")
    )
    code, out, err = run_cli("--data", data, *TINY, "--epochs", 1, "--out", tmp_path / "run", "--quiet")
    _check_one_line(code, err, 1, "the training loss became nan")
    assert not (tmp_path / "run/test.json").exists()


def test_overwrite_keeps_the_old_run_until_the_new_one_can_start(data, tmp_path):
    """--overwrite with an argument that fails once the data is read leaves every file of the old run as it
    was."""
    out = tmp_path / "run"
    (out / "ckpt").mkdir(parents=True)
    for f, b in (("log.csv", b"epoch\n0\n"), ("test.json", b"{}"), ("ckpt/last.pth", b"weights")):
        (out / f).write_bytes(b)
    before = {f: f.read_bytes() for f in out.rglob("*") if f.is_file()}
    code, _, err = run_cli("--data", data, *TINY, "--bs", 64, "--out", out, "--overwrite")
    _check_one_line(code, err, 2, "--bs 64")
    assert {f: f.read_bytes() for f in out.rglob("*") if f.is_file()} == before
    from resvmamba.cli import clear_run, run_files

    clear_run(out)
    assert run_files(out) == [] and not list((out / "ckpt").iterdir())  # an empty ckpt/ is no longer a run


def test_json_files_stay_valid_json(tmp_path):
    "NaN and infinities, which json.dumps would write bare, become null."
    from resvmamba.train import _write_json

    _write_json(tmp_path / "t.json", dict(test_loss=float("nan"), top=[float("inf"), 0.5], path=tmp_path))
    assert json.loads((tmp_path / "t.json").read_text()) == dict(
        test_loss=None, top=[None, 0.5], path=str(tmp_path)
    )


def labels_of(data, files):
    "The class index of each test file, from the split list's labels."
    lab = dict(line.split() for line in (data / "splits/test.txt").read_text().splitlines())
    return [int(lab[f]) for f in files]


def test_help_and_check_agree_on_factor():
    "--help states --factor's rule as the check applies it."
    from resvmamba.cli import cli_parser

    help_line = next(a.help for a in cli_parser()._actions if "--factor" in a.option_strings)
    assert "a power of 2 >= 2" in help_line and "a power of 2 >= 2" in ARG_RULES["factor"][1]
    assert [v for v in range(-2, 17) if ARG_RULES["factor"][0](v)] == [2, 4, 8, 16]


def _made_nothing(out, err):
    "A start that failed created nothing in --out; the error named the problem."
    assert not out.exists(), sorted(out.rglob("*"))


def test_failed_start_creates_nothing_and_the_folder_stays_usable(data, tmp_path):
    """A split list that names a missing image stops the run before --out exists; the same --out then trains
    (no 'already holds a run')."""
    import shutil

    splits = tmp_path / "splits"
    shutil.copytree(data / "splits", splits)
    lines = (splits / "train.txt").read_text().splitlines()
    (splits / "train.txt").write_text("\n".join(lines + ["nowhere/missing.jpg 0"]) + "\n")
    out = tmp_path / "run"
    code, _, err = run_cli("--data", data, *TINY, "--epochs", 1, "--split", splits, "--out", out)
    _check_one_line(code, err, 1, "missing.jpg")
    _made_nothing(out, err)
    code, stdout, err = run_cli("--data", data, *TINY, "--epochs", 1, "--out", out, "--quiet")
    assert code == 0 and "test top-1" in stdout, err


def test_an_empty_ckpt_folder_is_no_run(data, tmp_path):
    "A folder left with an empty ckpt/ (by an older version's failed start) is trained into, not refused."
    out = tmp_path / "run"
    (out / "ckpt").mkdir(parents=True)
    code, stdout, err = run_cli("--data", data, *TINY, "--epochs", 1, "--out", out, "--quiet")
    assert code == 0 and "already holds a run" not in err, err


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes into read-only folders"
)
def test_read_only_ckpt_is_refused_before_anything_is_made(data, tmp_path):
    out = tmp_path / "run"
    (out / "ckpt").mkdir(parents=True)
    (out / "ckpt").chmod(0o555)
    try:
        code, _, err = run_cli("--data", data, *TINY, "--epochs", 1, "--out", out)
        _check_one_line(code, err, 2, f"--out {out}: cannot be written: {out / 'ckpt'} is read-only")
        assert sorted(p.name for p in out.rglob("*")) == ["ckpt"]
    finally:
        (out / "ckpt").chmod(0o755)


def test_teacher_distils_into_a_low_resolution_student(data, tmp_path):
    """--teacher RUN: a finished run teaches an LR student (chapter 12); the student's run records the
    teacher; bad teachers are one line."""
    tiny = ["--arch", "resvmamba_test", "--bs", "8", "--size", "32", "--cpu", "--epochs", "1", "--quiet"]
    assert run_cli("--data", data, *tiny, "--out", tmp_path / "teacher")[0] == 0
    code, out, err = run_cli(
        "--data", data, *tiny, "--out", tmp_path / "student", "--teacher", tmp_path / "teacher", "--factor", 2
    )
    assert code == 0 and "test top-1" in out, err
    conf = json.loads((tmp_path / "student/config.json").read_text())
    assert conf["settings"]["teacher"] == str(tmp_path / "teacher") and conf["settings"]["factor"] == 2
    _check_one_line(
        *run_cli("--data", data, *tiny, "--out", tmp_path / "x", "--teacher", tmp_path / "none")[::2],
        2,
        "--teacher",
    )
    _check_one_line(
        *run_cli(
            "--data", data, *tiny, "--out", tmp_path / "y", "--teacher", tmp_path / "teacher", "--factor", 0
        )[::2],
        2,
        "--factor 0",
    )
    # a truncated teacher checkpoint: the file and the problem named, nothing made in --out
    bad = tmp_path / "bad_teacher.pth"
    bad.write_bytes((tmp_path / "teacher/ckpt/last.pth").read_bytes()[:5000])
    code, _, err = run_cli("--data", data, *tiny, "--out", tmp_path / "z", "--teacher", bad, "--factor", 2)
    _check_one_line(code, err, 1, f"checkpoint {bad} is truncated or damaged")
    _made_nothing(tmp_path / "z", err)
    # the distilled run loads (student with its SR front) and its test predictions are the run's own
    run = load_run(tmp_path / "student")
    assert run.config["student"] == dict(front="sr", factor=2, sr_kwargs=dict(channels=32, n_blocks=2))
    files = [line.split()[0] for line in (data / "splits/test.txt").read_text().splitlines()]
    x = torch.stack([run.transform(Image.open(data / "val600x600" / f).convert("RGB")) for f in files])
    assert x.shape == (16, 3, 16, 16)  # the student sees 32 / 2 px
    with torch.no_grad():
        correct = (run.model(x).argmax(1) == torch.tensor(labels_of(data, files))).sum().item()
    per_class = pd.read_csv(tmp_path / "student/per_class.csv")
    assert correct == per_class.correct.sum()


@pytest.mark.parametrize("arch", ["vim_test", "medmamba_test"])
def test_other_families_build_through_food_learner_at_the_run_size(data, arch):
    """Vim (built for one image size) and MedMamba take a batch of the learner at --size; Vim gets img_size
    from it."""
    from resvmamba.learner import food_learner

    learn = food_learner(data, arch=arch, size=32, bs=8, device="cpu", ema=False)
    xb, yb = learn.dls.one_batch()
    with torch.no_grad():
        assert learn.model.eval()(xb).shape == (8, learn.dls.c)
