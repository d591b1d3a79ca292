"""The learner under misuse: divergence, damaged or unwritable checkpoints, resuming, lr_find, summary,
export, freezing.

Tiny runs (a narrow Res-VMamba test preset on 32-px generated images, CPU) so the file stays fast.
"""

import csv
import os
import pydoc
import random
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from fastai.callback.core import Callback, CancelFitException
from fastai.callback.progress import CSVLogger, ProgressCallback
from fastai.learner import load_learner
from fastai.optimizer import Adam
from fastcore.basics import noop

from resvmamba.checkpoint import (
    NonFiniteLossError,
    check_writable,
    latest_checkpoint,
    read_training_checkpoint,
    save_checkpoint,
)
from resvmamba.learner import EMA, food_learner, no_decay_names, run_lr_find
from resvmamba.vmamba import CheckpointError, read_checkpoint


@pytest.fixture(scope="session")
def mini(mini_food):
    "8 classes × 16 images of 32 px: 6 training batches of 16."
    return mini_food(n_classes=8, per_class=16)


def tiny(mini, **kw):
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    kw = dict(size=32, bs=16, num_workers=0, dims=[8, 16, 32, 64], d_state=2) | kw
    kw = dict(recipe="paper") | kw
    learn = food_learner(mini, arch="resvmamba_test", **kw)
    learn.remove_cb(ProgressCallback)
    learn.logger = noop
    return learn


class StopAfter(Callback):
    order = 90

    def __init__(self, k):
        self.k = k

    def after_epoch(self):
        if self.epoch == self.k:
            raise CancelFitException


@pytest.fixture(scope="module")
def run(mini, tmp_path_factory):
    "A finished 3-epoch run with its checkpoint folder (last.pth = epoch 2, prev.pth = epoch 1)."
    ck = tmp_path_factory.mktemp("run") / "ckpt"
    learn = tiny(mini, ckpt_dir=ck)
    learn.fit_paper(3, lr=2e-3, warmup=1)
    return learn, ck


def _copy(ck, tmp_path):
    dst = tmp_path / "ckpt"
    shutil.copytree(ck, dst)
    return dst


# --- divergence ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lr", [float("nan"), float("inf"), 1e6])
def test_diverging_run_raises_and_keeps_the_last_good_checkpoint(mini, run, tmp_path, lr):
    ck = _copy(run[1], tmp_path)
    before = {f.name: f.read_bytes() for f in ck.iterdir()}
    learn = tiny(mini, ckpt_dir=ck)
    with pytest.raises(NonFiniteLossError) as e:
        learn.fit_paper(3, lr=lr, warmup=1)
    msg = str(e.value)
    assert "in epoch 0" in msg or "after epoch 0" in msg, msg
    assert (
        "Use a finite learning rate" if not np.isfinite(lr) else "Use a lower learning rate"
    ) in msg or "Use a lower learning rate" in msg, msg
    assert {f.name: f.read_bytes() for f in ck.iterdir()} == before  # nothing written, nothing left behind
    assert isinstance(e.value, RuntimeError)


def test_zero_training_batches_is_an_error_before_training(mini):
    learn = tiny(mini, bs=128)  # 96 training images, the incomplete batch is dropped
    with pytest.raises(ValueError, match="no training batches: .* bs=128"):
        learn.fit_paper(2, warmup=0)


def test_checkpoint_never_saves_nonfinite_weights(mini, run, tmp_path):
    "A loss that stays finite while the weights do not (inf EMA) still writes nothing."
    ck = _copy(run[1], tmp_path)
    before = (ck / "last.pth").read_bytes()

    class PoisonEMA(Callback):
        order = 70

        def after_validate(self):
            e = next(c for c in self.learn.cbs if isinstance(c, EMA))
            with torch.no_grad():
                next(e.model_ema.module.parameters()).fill_(float("inf"))

    learn = tiny(mini, ckpt_dir=ck)
    with pytest.raises(NonFiniteLossError, match="after epoch 0 .* NaN or infinite .* ema\\."):
        learn.fit_paper(3, lr=2e-3, warmup=1, cbs=PoisonEMA())
    assert (ck / "last.pth").read_bytes() == before


# --- reading checkpoints ------------------------------------------------------------------------------------


def test_checkpoints_load_with_weights_only(run):
    learn, ck = run
    for f, epoch in (("last.pth", 2), ("prev.pth", 1)):
        state = torch.load(ck / f, weights_only=True)
        assert state["epoch"] == epoch and state["format"] == "resvmamba.checkpoint/1"
        assert set(state["model"]) == set(learn.model.state_dict()) and set(state["ema"]) == set(
            learn.model.state_dict()
        )
    assert not (ck / "last.pth.tmp").exists()


def _bad_files(d, good):
    data = good.read_bytes()
    (d / "empty.pth").write_bytes(b"")
    (d / "text.pth").write_text("epoch 3, top-1 0.8\n")
    (d / "cut_head.pth").write_bytes(data[:1000])
    (d / "cut_tail.pth").write_bytes(data[:-50])
    (d / "folder.pth").mkdir()
    torch.save([1, 2, 3], d / "list.pth")
    torch.save({"model": {}}, d / "weights.pth")
    torch.save({"x": np.arange(3)}, d / "numpy.pth")  # a pickle that a safe load refuses


BAD = [
    ("empty.pth", CheckpointError, "is empty (0 bytes); expected a file written by torch.save"),
    (
        "text.pth",
        CheckpointError,
        "is not a PyTorch file: a text file, 19 bytes, starts with 'epoch 3, top-1 0.8'; expected",
    ),
    ("cut_head.pth", CheckpointError, "is truncated or damaged (1,000 bytes"),
    ("cut_tail.pth", CheckpointError, "is truncated or damaged"),
    ("folder.pth", CheckpointError, "is a folder; expected a file"),
    (
        "list.pth",
        CheckpointError,
        "is not a training checkpoint: it holds a list; expected a file written by Checkpoint",
    ),
    ("weights.pth", CheckpointError, "is not a training checkpoint: it holds a dict without ['ema', 'opt'"),
    ("numpy.pth", CheckpointError, "holds Python objects besides tensors"),
    ("missing.pth", FileNotFoundError, "does not exist"),
]


@pytest.mark.parametrize("name,exc,problem", BAD)
def test_unreadable_checkpoints_name_file_problem_and_expectation(run, tmp_path, name, exc, problem):
    learn, ck = run
    _bad_files(tmp_path, ck / "last.pth")
    with pytest.raises(exc) as e:
        learn.load_checkpoint(tmp_path / name)
    assert f"checkpoint {tmp_path / name} " in str(e.value) and problem in str(e.value), str(e.value)
    with pytest.raises(exc):
        learn.fit_paper(3, lr=2e-3, warmup=1, resume=tmp_path / name)  # an explicit path is never skipped


def test_loaded_optimizer_state_lives_on_the_parameters_device(mini, run):
    """Checkpoints are read on the CPU; the optimizer's moments must follow the parameters (a GPU run resumes
    on the GPU)."""
    learn = tiny(mini, ema=False)  # timm's EMA cannot be built on "meta"
    learn.model.to("meta")
    learn.create_opt()  # a device other than the checkpoint's CPU tensors, present everywhere
    learn.load_checkpoint(run[1] / "last.pth")
    moments = [
        (k, v.device.type)
        for p, _, st, _ in learn.opt.all_params()
        for k, v in st.items()
        if torch.is_tensor(v)
    ]
    assert moments and all(d == "meta" for _, d in moments), moments[:3]


@pytest.mark.cuda
def test_a_gpu_run_resumes_on_the_gpu(mini, tmp_path):
    "The model reaches the GPU only when fit starts, after the checkpoint (read on the CPU) was loaded."
    learn = tiny(mini, ckpt_dir=tmp_path / "ckpt", compile=False)
    learn.fit_paper(3, lr=2e-3, warmup=1, cbs=StopAfter(1))
    learn = tiny(mini, ckpt_dir=tmp_path / "ckpt", compile=False)
    learn.fit_paper(3, lr=2e-3, warmup=1, resume=True)
    assert learn.resumed_from.name == "last.pth" and len(learn.recorder.values) == 3
    assert {
        v.device.type for _, _, st, _ in learn.opt.all_params() for v in st.values() if torch.is_tensor(v)
    } == {"cuda"}


# --- compiling ----------------------------------------------------------------------------------------------


def test_compile_setting_on_the_cpu(mini, run, tmp_path):
    """A bad value fails before the data is read; 'auto' leaves a CPU run eager; a compiled model keeps the
    eager keys, loads an eager run's checkpoint, keeps an eager EMA copy and exports."""
    with pytest.raises(ValueError, match="compile='yes': expected True, False or 'auto'"):
        food_learner(tmp_path / "no_data", compile="yes")
    assert run[0].model._compiled_call_impl is None
    c = tiny(mini, compile=True)  # compiled lazily: nothing is traced before the first batch
    assert c.model._compiled_call_impl is not None and list(c.model.state_dict()) == list(
        run[0].model.state_dict()
    )
    c.load_checkpoint(run[1] / "last.pth")
    for p, q in zip(c.model.state_dict().values(), run[0].model.state_dict().values()):
        assert torch.equal(p, q)
    ema = next(cb for cb in c.cbs if isinstance(cb, EMA)).model_ema.module
    assert ema._compiled_call_impl is None  # the EMA copy validates eager
    c.export(tmp_path / "compiled.pkl")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert load_learner(tmp_path / "compiled.pkl").model._compiled_call_impl is None


@pytest.mark.cuda
def test_a_compiled_gpu_run_resumes_and_its_ema_weights_load_eager(mini, tmp_path):
    """'auto' compiles on the GPU: one graph and no graph break through the loop (bf16, mixup, clipping, EMA,
    checkpoints); it resumes; its EMA weights give an eager model the compiled model's logits."""
    import torch._dynamo

    torch._dynamo.reset()
    counters = torch._dynamo.utils.counters
    counters.clear()
    learn = tiny(mini, ckpt_dir=tmp_path / "ckpt")
    assert learn.model._compiled_call_impl is not None
    learn.fit_paper(3, lr=2e-3, warmup=1, cbs=StopAfter(1))
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"], (
        dict(counters["stats"]),
        dict(counters["graph_break"]),
    )
    resumed = tiny(mini, ckpt_dir=tmp_path / "ckpt")
    resumed.fit_paper(3, lr=2e-3, warmup=1, resume=True)
    assert resumed.resumed_from.name == "last.pth" and len(resumed.recorder.values) == 3
    assert resumed.model._compiled_call_impl is not None and not counters["graph_break"]
    assert next(c for c in resumed.cbs if isinstance(c, EMA)).model_ema.module._compiled_call_impl is None
    state = read_training_checkpoint(tmp_path / "ckpt" / "last.pth")
    eager = tiny(mini, compile=False).model.cuda().eval()
    # no `_orig_mod.` prefix
    assert state["epoch"] == 2 and list(state["model"]) == list(state["ema"]) == list(eager.state_dict())
    eager.load_state_dict(state["ema"])
    resumed.model.load_state_dict(state["ema"])
    resumed.model.eval()
    x = torch.randn(16, 3, 32, 32, device="cuda")
    with torch.no_grad():
        want, got = eager(x), resumed.model(x)
    print("compiled vs eager logits, max |diff|:", (got - want).abs().max().item())
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3)


def test_read_checkpoint_returns_plain_weights(run, tmp_path):
    torch.save(run[0].model.state_dict(), tmp_path / "model_ema.pth")
    assert set(read_checkpoint(tmp_path / "model_ema.pth")) == set(run[0].model.state_dict())
    with pytest.raises(CheckpointError, match="not a training checkpoint"):
        read_training_checkpoint(tmp_path / "model_ema.pth")


@pytest.mark.parametrize("damage", ["truncate", "empty", "delete"])
def test_damaged_last_falls_back_to_prev(mini, run, tmp_path, damage):
    ck = _copy(run[1], tmp_path)
    last = ck / "last.pth"
    if damage == "truncate":
        last.write_bytes(last.read_bytes()[:3000])
    elif damage == "empty":
        last.write_bytes(b"")
    else:
        last.unlink()
    learn = tiny(mini, ckpt_dir=ck)
    with pytest.warns(UserWarning, match=f"Resuming from {ck / 'prev.pth'} \\(epoch 1\\) instead"):
        learn.fit_paper(3, lr=2e-3, warmup=1, resume=True)
    assert learn.resumed_from == ck / "prev.pth"
    assert len(learn.recorder.values) == 3  # epochs 0-1 from the checkpoint, epoch 2 trained
    for p, q in zip(run[0].model.state_dict().values(), learn.model.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-5)


def test_both_checkpoints_damaged_is_an_error(mini, run, tmp_path):
    ck = _copy(run[1], tmp_path)
    for f in ("last.pth", "prev.pth"):
        (ck / f).write_text("garbage")
    with pytest.raises(CheckpointError, match=f"no readable checkpoint in {ck}"):
        tiny(mini, ckpt_dir=ck).fit_paper(3, lr=2e-3, warmup=1, resume=True)
    assert latest_checkpoint(ck.parent / "nothing_here") == (None, None)


# --- writing checkpoints ------------------------------------------------------------------------------------


def test_unwritable_checkpoint_folder_fails_before_training(mini, tmp_path):
    (tmp_path / "a_file").write_text("x")
    learn = tiny(mini, ckpt_dir=tmp_path / "a_file" / "ckpt")
    with pytest.raises(OSError, match=f"cannot write to {tmp_path / 'a_file' / 'ckpt'}: "):
        learn.fit_paper(2, warmup=0)
    assert len(learn.recorder.losses) == 0  # not a single batch trained
    with pytest.raises(OSError, match="cannot write to"):
        check_writable(tmp_path / "a_file")


def test_write_failure_names_file_and_cause_and_removes_the_temporary(run, tmp_path, monkeypatch):
    ck = _copy(run[1], tmp_path)
    before = (ck / "last.pth").read_bytes()

    def full_disk(obj, f, *a, **k):
        f.write(b"PK" + b"\0" * 100)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError) as e:
        save_checkpoint({"epoch": 9}, ck / "last.pth")
    assert (
        f"could not write checkpoint {ck / 'last.pth'}: the disk is full or the file is larger than allowed "
        "(a quota or file-size limit) (No space left on device): writing stopped after 102 bytes"
    ) in str(e.value)
    assert not (ck / "last.pth.tmp").exists() and (ck / "last.pth").read_bytes() == before


def test_checkpoint_is_synced_before_the_rename(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(
        os,
        "replace",
        lambda a, b: (calls.append(f"replace {Path(a).name}->{Path(b).name}"), real_replace(a, b))[1],
    )
    save_checkpoint({"epoch": 0}, tmp_path / "last.pth")
    save_checkpoint({"epoch": 1}, tmp_path / "last.pth")
    assert calls[:2] == ["fsync", "replace last.pth.tmp->last.pth"]
    assert calls[3:6] == ["fsync", "replace last.pth->prev.pth", "replace last.pth.tmp->last.pth"]
    assert [torch.load(tmp_path / f, weights_only=True)["epoch"] for f in ("last.pth", "prev.pth")] == [1, 0]


# --- resuming -----------------------------------------------------------------------------------------------


def test_resume_from_a_path_that_does_not_exist_is_an_error(mini, tmp_path):
    with pytest.raises(FileNotFoundError, match=f"checkpoint {tmp_path / 'nowhere/last.pth'} does not exist"):
        tiny(mini).fit_paper(2, warmup=0, resume=tmp_path / "nowhere/last.pth")


def test_resume_true_with_nothing_to_resume_says_so(mini, tmp_path):
    learn = tiny(mini, ckpt_dir=tmp_path / "ck")
    with pytest.warns(
        UserWarning, match=f"resume=True, but {tmp_path / 'ck'} holds no checkpoint .*starts at epoch 0"
    ):
        learn.fit_paper(1, lr=2e-3, warmup=0, resume=True)
    assert learn.resumed_from is None and len(learn.recorder.values) == 1


def test_resume_needs_a_checkpoint_folder(mini):
    with pytest.raises(ValueError, match="resume=True needs a Checkpoint callback"):
        tiny(mini).fit_paper(2, warmup=0, resume=True)


# --- lr_find and summary ------------------------------------------------------------------------------------


def test_lr_find_leaves_no_trace_in_ema_or_checkpoints(mini, tmp_path):
    learn = tiny(mini, ckpt_dir=tmp_path / "ck")
    learn.lr_find(num_it=6, show_plot=False)
    ema = next(c for c in learn.cbs if isinstance(c, EMA))
    assert ema.model_ema is None and ema.n_updates == 0 and not (tmp_path / "ck").exists()
    with pytest.warns(UserWarning, match="holds no checkpoint"):
        learn.fit_paper(1, lr=2e-3, warmup=0, resume=True)
    assert ema.n_updates == len(learn.dls.train)  # the average starts with the fit, not with lr_find
    assert torch.load(tmp_path / "ck/last.pth", weights_only=True)["epoch"] == 0


def test_summary_describes_the_model_with_ema_on(run):
    learn = run[0]
    # fastai's summary adds up the parameters of the leaf layers it hooks (SS2D's own A_logs, Ds, ... are not
    # in one)
    n = sum(
        p.numel()
        for m in learn.model.modules()
        if not list(m.children())
        for p in m.parameters(recurse=False)
    )
    assert n > 0 and f"Total params: {n:,}\n" in learn.summary()


def test_ema_both_columns_line_up_in_the_csv_log(mini, tmp_path):
    learn = tiny(mini, ema_report="both", cbs=[CSVLogger(tmp_path / "log.csv")])
    learn.fit_paper(1, lr=2e-3, warmup=0)
    rows = list(csv.reader(open(tmp_path / "log.csv")))
    assert rows[0] == [
        "epoch",
        "train_loss",
        "valid_loss",
        "top-1",
        "top-5",
        "img/s",
        "raw_top-1",
        "raw_top-5",
        "time",
    ]
    assert (
        len(rows[1]) == len(rows[0])
        and int(rows[1][5]) > 0
        and 0 <= float(rows[1][6]) <= float(rows[1][7]) <= 1
    )


# --- export, freezing, weight decay, other recipes ----------------------------------------------------------


def test_export_and_load_learner_round_trip(run, tmp_path):
    learn = run[0]
    learn.export(tmp_path / "export.pkl")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        served = load_learner(tmp_path / "export.pkl")
    items = [[p, label] for p, label in learn.dls.food["sets"]["test"][:8]]
    want, _ = learn.get_preds(dl=learn.dls.test_dl(items, with_labels=True))
    got, _ = served.get_preds(dl=served.dls.test_dl(items, with_labels=True))
    torch.testing.assert_close(got, want)
    assert list(served.dls.vocab) == list(learn.dls.vocab)


def test_freeze_trains_only_the_head(mini):
    learn = tiny(mini)
    names = [n for n, _ in learn.model.named_parameters()]
    learn.freeze()
    assert (
        [n for n, p in learn.model.named_parameters() if p.requires_grad]
        == [n for n in names if n.startswith("classifier.")]
        != []
    )
    learn.unfreeze()
    assert all(p.requires_grad for p in learn.model.parameters())
    learn.fit(1, lr=slice(1e-5, 1e-3))  # discriminative learning rates: body, head
    assert [h["lr"] for h in learn.opt.hypers] == pytest.approx([1e-5, 1e-3])


@pytest.mark.parametrize("official", [False, True])
def test_weight_decay_exemptions(mini, official):
    learn = tiny(mini, wd_exempt="official" if official else "model")
    learn.fit(1, lr=1e-3)
    name = {id(p): n for n, p in learn.model.named_parameters()}
    no_wd = {name[id(p)] for p, _, st, _ in learn.opt.all_params() if not st.get("do_wd", True)}
    expect = {
        n for n, p in learn.model.named_parameters() if p.ndim == 1 or (not official and n.endswith("A_logs"))
    }
    assert no_wd == expect == no_decay_names(learn.model, official)


def test_another_recipe_constant_lr_plain_adam(mini):
    "MedMamba's recipe: Adam, constant lr, no mixup, no EMA, no label smoothing."
    learn = tiny(
        mini, opt_func=Adam, wd=0.0, mixup=0.0, cutmix=0.0, grad_clip=0.0, ema=False, label_smoothing=0.0
    )
    learn.fit_paper(2, lr=1e-4, schedule="constant")
    assert learn.recorder.lrs == [1e-4] * (2 * len(learn.dls.train))
    assert not any(isinstance(c, EMA) for c in learn.cbs) and learn.opt.hypers[0]["wd"] == 0
    with pytest.raises(ValueError, match="warmup=2 is used only by schedule='paper'"):
        learn.fit_paper(2, lr=1e-4, warmup=2, schedule="constant")
    with pytest.raises(ValueError, match="schedule='cosine': expected 'paper', 'constant' or a function"):
        learn.fit_paper(2, schedule="cosine")
    with pytest.raises(ValueError, match="wd_exempt='all': expected 'model' or 'official'"):
        tiny(mini, wd_exempt="all")


def test_default_warmup_fits_short_runs(mini):
    learn = tiny(mini)
    learn.fit_paper(2, lr=1e-3)  # no explicit warm-up: none for 2 epochs (the paper's 20/150 rounds down)
    assert learn.fit_args["warmup"] == 0
    with pytest.raises(ValueError, match=r"warmup=2 must be in \[0, n_epoch=2\)"):
        learn.fit_paper(2, warmup=2)


def test_help_shows_every_argument():
    from fastai.learner import Learner

    from resvmamba.learner import food_learner

    text = pydoc.render_doc(food_learner, renderer=pydoc.plaintext)
    assert "dataset root (CNFOOD-241 layout)" in text and "label_smoothing: label smoothing" in text
    text = pydoc.render_doc(Learner.fit_paper, renderer=pydoc.plaintext)
    assert "resume: True: continue from the Checkpoint folder" in text and "schedule: 'paper'" in text


# --- a text file as a checkpoint, a full disk, non-finite weights on resume ---------------------------------


@pytest.mark.parametrize(
    "text", ["model weights here\n", '{"epoch": 3}', "hello world", "epoch 3, top-1 0.5"]
)
def test_text_file_is_not_a_pytorch_file(text, tmp_path):
    """torch.load's unpickler reads some text as a pickle 'holding Python objects'; the message says what the
    file is."""
    f = tmp_path / "last.pth"
    f.write_text(text)
    for read in (read_checkpoint, read_training_checkpoint):
        with pytest.raises(CheckpointError) as e:
            read(f)
        msg = str(e.value)
        start = " ".join(text.split())[:40]
        assert (
            f"{f} is not a PyTorch file: a text file, {len(text.encode())} bytes, starts with {start!r}"
            in msg
        )
        assert "weights_only" not in msg and "Python objects" not in msg


def test_one_checkpoint_reader_and_error_for_the_package():
    """Chapter 06 owns reading checkpoint files; the training checkpoints (chapter 09b) use its reader and its
    error."""
    from resvmamba import checkpoint, vmamba

    assert (
        checkpoint.CheckpointError is vmamba.CheckpointError
        and checkpoint.read_checkpoint is vmamba.read_checkpoint
    )
    assert issubclass(CheckpointError, ValueError)  # older `except ValueError` still catches it


_FULL_DISK = """
import resource, sys, torch
from pathlib import Path
from resvmamba.checkpoint import save_checkpoint
d = Path(sys.argv[1])
save_checkpoint({"w": torch.zeros(10)}, d / "last.pth")          # a small first checkpoint
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))   # then a file-size limit below the next one
try: save_checkpoint({"w": torch.zeros(100_000)}, d / "last.pth")
except OSError as e: print(e)
"""


def test_full_disk_names_the_cause_and_keeps_the_last_checkpoint(tmp_path):
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-c", _FULL_DISK, str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    msg = r.stdout.strip().splitlines()[-1]
    want = f"could not write checkpoint {tmp_path / 'last.pth'}: "
    assert want + "the disk is full or the file is larger than allowed" in msg, r
    assert "inline_container" not in msg and "unexpected pos" not in msg
    assert f"{tmp_path / 'last.pth'} from the epoch before is kept" in msg
    assert read_checkpoint(tmp_path / "last.pth")["w"].shape == (10,)  # intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pth"]  # no temporary file left


def test_resume_refuses_non_finite_weights_unless_allowed(run, mini, tmp_path):
    ck = _copy(run[1], tmp_path)
    state = read_training_checkpoint(ck / "last.pth")
    name = next(k for k, t in state["model"].items() if t.is_floating_point())
    state["model"][name][...] = float("nan")
    state["ema"][name][...] = float("inf")
    torch.save(state, ck / "nan.pth")
    with pytest.raises(
        CheckpointError,
        match=rf"holds NaN or infinite weights \(2 of its tensors: model\.{name}, ema\.{name}\)",
    ):
        tiny(mini, ckpt_dir=ck).fit_paper(3, lr=2e-3, warmup=1, resume=ck / "nan.pth")
    learn = tiny(mini, ckpt_dir=ck)
    learn.load_checkpoint(ck / "nan.pth", allow_nonfinite=True)
    assert torch.isnan(learn.model.state_dict()[name]).all()


# --- recipes, throughput, lr_find, gradient checkpointing ---------------------------------------------------


def test_recipe_auto_is_light_on_a_small_low_resolution_set(mini):
    learn = tiny(mini, recipe="auto", bs=None)
    assert (learn.recipe, learn.dls.train.bs, learn.recipe_settings.lr) == ("light", 32, 3e-3)
    assert learn.recipe_reason == "104 training images of 32x32 px: light (small and low-resolution set)"
    assert not any(type(c).__name__ == "TimmMixUp" for c in learn.cbs) and learn.loss_func.eps == 0.1
    paper = tiny(mini, recipe="paper", mixup=0.2)
    assert paper.recipe == "paper" and paper.recipe_reason.endswith(
        "paper (as asked); given mixup=0.2, bs=16"
    )
    mix = next(c for c in paper.cbs if type(c).__name__ == "TimmMixUp")
    assert (mix.mixup, mix.cutmix) == (0.2, 1.0)


def test_fit_paper_takes_lr_and_warmup_from_the_recipe(mini):
    learn = tiny(mini, recipe="light", bs=16)
    learn.fit_paper(2)
    # 2 epochs: 2 * 1 // 14 = 0 warm-up epochs
    assert learn.fit_args["lr"] == 3e-3 and learn.fit_args["warmup"] == 0
    assert max(learn.recorder.lrs) == pytest.approx(3e-3, rel=1e-3)


def test_throughput_column_and_totals(mini):
    learn = tiny(mini)
    learn.fit_paper(3, lr=2e-3, warmup=1)
    names = learn.recorder.metric_names
    assert names[-2:] == ["img/s", "time"]
    rates = [r[names.index("img/s") - 1] for r in learn.recorder.values]
    t = learn.throughput_totals
    assert t["epochs"] == 3 and t["images"] == 3 * len(learn.dls.train) * 16 and t["per_epoch"] == rates
    assert (
        t["img_per_s"] == pytest.approx(t["images"] / t["train_seconds"], rel=0.01)
        and t["peak_mem_gib"] is None
    )
    assert len(learn.validate()) == 3  # validation alone: loss, top-1, top-5, no timing column


def test_run_lr_find_saves_the_plot_and_leaves_nothing(mini, tmp_path):
    learn = tiny(mini, ckpt_dir=tmp_path / "ck")
    learn.path = tmp_path / "root"
    lr = run_lr_find(learn, tmp_path / "lr.png", num_it=8)
    assert 1e-8 < lr < 10 and (tmp_path / "lr.png").stat().st_size > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lr.png"]


def test_grad_checkpointing(mini):
    learn = tiny(mini, grad_checkpointing=True)
    assert learn.model.grad_checkpointing is True

    def plain(num_classes):
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, num_classes))

    with pytest.raises(ValueError, match="grad_checkpointing=True: Sequential has no set_grad_checkpointing"):
        food_learner(mini, arch=plain, size=32, bs=16, num_workers=0, grad_checkpointing=True)
