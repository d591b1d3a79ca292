"""ViMD distillation (chapter 12): LR pairs, fronts, levels, the loss against hand computations, the
callback's teacher."""

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from resvmamba.distill import (
    Bicubic,
    Distill,
    DistillLoss,
    LevelRecorder,
    LRStudent,
    SRFront,
    default_levels,
    low_res_pair,
    match_level,
)
from resvmamba.models import create_model
from resvmamba.vim import Vim

TINY = dict(embed_dim=16, depth=2, d_state=4, img_size=32, patch_size=8, stride=8, drop_path_rate=0.0)


def test_low_res_pair_is_the_downsample_of_the_same_crop():
    hr = torch.rand(2, 3, 32, 32)
    h, lr = low_res_pair(hr, 4)
    assert h is hr and lr.shape == (2, 3, 8, 8)
    torch.testing.assert_close(lr, F.interpolate(hr, size=(8, 8), mode="bicubic", antialias=True))
    with pytest.raises(ValueError, match="not a multiple"):
        low_res_pair(torch.rand(1, 3, 30, 32), 4)


def test_kl_term_by_hand_with_T_squared():
    g = torch.Generator().manual_seed(1)
    zs, zt = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    for T in (1.0, 2.0, 4.0):
        pt, ps = (zt / T).softmax(-1), (zs / T).softmax(-1)
        want = T * T * (pt * (pt.log() - ps.log())).sum() / 3
        torch.testing.assert_close(DistillLoss(T=T).kl(zs, zt), want)


def test_identical_teacher_and_student_give_zero_distillation():
    torch.manual_seed(0)
    t = Vim(num_classes=3, **TINY).eval()
    s = copy.deepcopy(t)
    rs, rt = LevelRecorder(s, [0, 1]), LevelRecorder(t, [0, 1])
    x = torch.randn(2, 3, 32, 32)
    zs, zt = s(x), t(x)
    pairs = [match_level(a, b, s, t) for a, b in zip(rs.pop(), rt.pop())]
    total, terms = DistillLoss(levels=[0, 1])(zs, torch.tensor([0, 1]), zt, pairs)
    assert terms["hsd"].item() == 0.0 and abs(terms["ld"].item()) < 1e-6
    torch.testing.assert_close(total, terms["ce"])


def test_last_only_is_the_last_level_alone():
    g = torch.Generator().manual_seed(0)
    pairs = [(torch.randn(2, 5, generator=g), torch.randn(2, 5, generator=g)) for _ in range(4)]
    torch.testing.assert_close(
        DistillLoss(levels=range(4), last_only=True).hsd(pairs), F.mse_loss(*pairs[-1])
    )


def test_sr_front_starts_as_bicubic():
    lr = torch.randn(1, 3, 8, 8)
    torch.testing.assert_close(SRFront(4, channels=8, n_blocks=1)(lr), Bicubic(4)(lr))


def test_vmamba_levels_pooled_and_projected():
    t = create_model("vmamba_test", num_classes=3, scan_backend="parallel")
    s = create_model("vmamba_test", num_classes=3, dims=8, scan_backend="parallel")
    assert default_levels(s, t) == ([0, 1, 2, 3], [0, 1, 2, 3])
    rs, rt = LevelRecorder(s, [1]), LevelRecorder(t, [1])
    s(torch.randn(1, 3, 32, 32))
    t(torch.randn(1, 3, 64, 64))
    (a,), (b,) = rs.pop(), rt.pop()
    sa, tb = match_level(a, b, s, t, nn.Conv2d(16, 32, 1))
    assert sa.shape == tb.shape == (1, 32, 16)


def test_no_gradient_reaches_the_teacher_and_hsd_falls():
    torch.manual_seed(0)
    teacher, student = (
        Vim(num_classes=3, **TINY),
        LRStudent(Vim(num_classes=3, **TINY), "sr", 4, channels=8, n_blocks=1),
    )
    cb = Distill(teacher, DistillLoss(alpha=1.0, beta=5.0, levels=[0, 1]), 4, [0, 1], [0, 1])

    class FakeLearn:  # the attributes of a fastai Learner that the callback uses
        model, training = student, True

    cb.learn = FakeLearn()
    cb.before_fit()
    hr, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    opt = torch.optim.Adam(student.parameters(), lr=3e-3)
    hsd = []
    for _ in range(6):
        cb.learn.xb, cb.learn.yb = (hr,), (y,)
        cb.before_batch()
        cb.learn.pred = student(*cb.learn.xb)
        cb.learn.loss_grad = F.cross_entropy(cb.learn.pred, y)
        cb.before_epoch()
        cb.after_loss()
        opt.zero_grad()
        cb.learn.loss_grad.backward()
        opt.step()
        hsd.append(cb._sums["hsd"])
    assert not teacher.training and all(p.grad is None for p in teacher.parameters())
    assert hsd[-1] < 0.8 * hsd[0], hsd
