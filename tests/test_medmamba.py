"""MedMamba (chapters 13, 13b): official key tables and sizes, the block and network against explicit
re-statements, checkpoints, the MedMNIST loader."""

import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F

from resvmamba.medmamba import (
    MEDMAMBA_CONFIGS,
    MedMamba,
    SSConvSSM,
    channel_shuffle,
    load_medmamba_checkpoint,
)
from resvmamba.medmnist import make_medmnist_like, medmnist_dls, medmnist_test_dl, read_medmnist
from resvmamba.models import MODELS, create_model
from resvmamba.vmamba import meta_model

KEYS = Path(__file__).resolve().parent / "data" / "medmamba_keys"  # official MedMamba state-dict tables
OFFICIAL = dict(tiny=(15_221_608, 14_457_222), small=(19_389_544, 18_625_158), base=(40_883_688, 39_864_838))


def n_params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("size", list(OFFICIAL))
def test_official_key_table_and_counts(size):
    spec = json.loads((KEYS / f"medmamba_{size}_1000.json").read_text())
    m = meta_model(create_model, name=f"medmamba_{size}", num_classes=1000)
    # names, shapes, order
    assert [(k, list(v.shape)) for k, v in m.state_dict().items()] == list(spec["keys"].items())
    assert n_params(m) == spec["params"] == OFFICIAL[size][0]
    assert (
        n_params(meta_model(create_model, name=f"medmamba_{size}", num_classes=6))
        == spec["params_6_classes"]
        == OFFICIAL[size][1]
    )


def test_registered_with_create_model_and_timm():
    assert {f"medmamba_{s}" for s in ("tiny", "small", "base", "test")} <= set(MODELS)
    assert isinstance(timm.create_model("rvm_medmamba_test", num_classes=3), MedMamba)


@pytest.mark.parametrize("groups,C", [(2, 8), (2, 10), (3, 12), (4, 8)])
def test_channel_shuffle_is_the_index_permutation(groups, C):
    x = torch.randn(2, 3, C)
    expected = torch.stack(
        [x[..., g * (C // groups) + j] for j in range(C // groups) for g in range(groups)], -1
    )
    assert torch.equal(channel_shuffle(x, groups), expected)


def block_reference(blk, x):
    """The block written out from its weights in x's dtype: split, BN/conv stack (eval statistics), SS2D,
    interleave, residual."""
    h = x.shape[-1] // 2  # channels in each half
    sd = {k: v.to(x.dtype) for k, v in blk.state_dict().items() if v.is_floating_point()}
    c = x[..., :h].permute(0, 3, 1, 2)

    def bn(t, i):
        return F.batch_norm(
            t,
            sd[f"conv33conv33conv11.{i}.running_mean"],
            sd[f"conv33conv33conv11.{i}.running_var"],
            sd[f"conv33conv33conv11.{i}.weight"],
            sd[f"conv33conv33conv11.{i}.bias"],
            eps=1e-5,
        )

    def conv(t, i, p):
        return F.conv2d(
            t, sd[f"conv33conv33conv11.{i}.weight"], sd[f"conv33conv33conv11.{i}.bias"], padding=p
        )

    c = F.relu(conv(F.relu(bn(conv(F.relu(bn(conv(bn(c, 0), 1, 1), 2)), 4, 1), 5)), 7, 0)).permute(0, 2, 3, 1)
    s = blk.self_attention.to(x.dtype)(
        F.layer_norm(x[..., h:], (h,), sd["ln_1.weight"], sd["ln_1.bias"], eps=1e-5)
    )
    out = x.clone()
    for j in range(h):  # output channel 2j is conv channel j, 2j+1 is SSM channel j
        out[..., 2 * j] += c[..., j]
        out[..., 2 * j + 1] += s[..., j]
    return out


def test_block_equals_explicit_reference():
    torch.manual_seed(0)
    blk = SSConvSSM(12, d_state=4, scan_backend="reference")
    with torch.no_grad():  # non-trivial BatchNorm statistics and affine parameters
        for m in blk.conv33conv33conv11:
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2)
                m.weight.normal_(1, 0.2)
                m.bias.normal_(0, 0.2)
    x = torch.randn(2, 5, 6, 12, dtype=torch.float64)
    ref = block_reference(blk, x)
    with torch.no_grad():
        out = blk.double().eval()(x)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("odd_sizes", ["pad", "crop"])
@pytest.mark.parametrize("kw", [{}, {"ssm_half": False}, {"conv_half": False}])
def test_forward_backward_odd_sizes_every_param_has_grad(odd_sizes, kw):
    torch.manual_seed(0)
    m = create_model(
        "medmamba_test", num_classes=5, scan_backend="parallel", odd_sizes=odd_sizes, drop_path_rate=0.0, **kw
    )  # no random drops
    out = m(torch.randn(2, 3, 40, 72))  # maps 10×18, 5×9, then odd: 3×5 and 2×3 (pad) or 2×4 and 1×2 (crop)
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    out.logsumexp(-1).sum().backward()
    assert [n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0] == []
    names = " ".join(n for n, _ in m.named_parameters())
    assert ("self_attention" in names) == kw.get("ssm_half", True) and (
        "conv33conv33conv11" in names
    ) == kw.get("conv_half", True)


def test_official_file_loads_with_same_logits_and_head_reset(tmp_path):
    torch.manual_seed(1)
    src = MedMamba(num_classes=6, **MEDMAMBA_CONFIGS["test"], scan_backend="parallel").eval()
    with torch.no_grad():
        for p in src.parameters():
            p.add_(0.05 * torch.randn_like(p))
    torch.save(src.state_dict(), tmp_path / "MedMambaNet.pth")  # what the reference training script saves
    x = torch.randn(2, 3, 64, 64)
    m = create_model(
        "medmamba_test", num_classes=6, pretrained=tmp_path / "MedMambaNet.pth", scan_backend="parallel"
    ).eval()
    with torch.no_grad():
        assert torch.equal(m(x), src(x))
    m9 = load_medmamba_checkpoint(
        MedMamba(num_classes=9, **MEDMAMBA_CONFIGS["test"], scan_backend="parallel").eval(),
        tmp_path / "MedMambaNet.pth",
        verbose=False,
    )
    with torch.no_grad():
        assert torch.equal(m9.forward_features(x), src.forward_features(x))
    assert torch.equal(m9.head.bias, torch.zeros(9))
    bad = dict(src.state_dict())
    bad.pop("layers.0.blocks.0.ln_1.bias")
    with pytest.raises(ValueError, match=r"missing keys \(1\): layers.0.blocks.0.ln_1.bias"):
        load_medmamba_checkpoint(MedMamba(num_classes=6, **MEDMAMBA_CONFIGS["test"]), bad)


@pytest.mark.parametrize("rgb,size", [(False, 28), (True, 64)])
def test_medmnist_loader(tmp_path, rgb, size):
    f = make_medmnist_like(tmp_path / "m.npz", n=(20, 6, 7), size=size, rgb=rgb, n_classes=3)
    splits = read_medmnist(f)
    assert [v[0].shape for v in splits.values()] == [(k, size, size, 3) for k in (20, 6, 7)]
    dls = medmnist_dls(f, size=size, bs=4, device="cpu")
    xb, yb = dls.valid.one_batch()
    raw = np.load(f)
    want = torch.tensor(raw["val_images"][:4]).double() / 127.5 - 1
    want = want.permute(0, 3, 1, 2) if rgb else want[:, None].expand(-1, 3, -1, -1)
    torch.testing.assert_close(xb.double(), want, rtol=0, atol=1e-5)
    assert yb.tolist() == raw["val_labels"][:4, 0].tolist() and dls.c == 3
    assert len(medmnist_test_dl(dls).dataset) == 7


def test_medmnist_loader_errors(tmp_path):
    f = make_medmnist_like(tmp_path / "m.npz")
    a = dict(np.load(f))
    a["val_labels"] = np.zeros((12, 2), np.uint8)
    np.savez(tmp_path / "multi.npz", **a)
    with pytest.raises(ValueError, match="multi-label"):
        read_medmnist(tmp_path / "multi.npz")
    with pytest.raises(FileNotFoundError, match="no MedMNIST file"):
        read_medmnist(tmp_path / "none.npz")


def network_reference(m, images):
    """The reference MedMamba's forward from `m`'s weights: stem, blocks, cropping 2×2 merges, pool, head (no
    final norm)."""
    sd = {k: v.to(images.dtype) for k, v in m.state_dict().items() if v.is_floating_point()}
    x = F.conv2d(images, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=4).permute(
        0, 2, 3, 1
    )
    x = F.layer_norm(x, x.shape[-1:], sd["patch_embed.norm.weight"], sd["patch_embed.norm.bias"])
    for i, layer in enumerate(m.layers):
        for blk in layer.blocks:
            x = block_reference(blk, x)
        if f"layers.{i}.downsample.reduction.weight" in sd:
            H, W = x.shape[1] // 2 * 2, x.shape[2] // 2 * 2  # the reference drops an odd last row/column
            x = torch.cat(
                [x[:, 0:H:2, 0:W:2], x[:, 1:H:2, 0:W:2], x[:, 0:H:2, 1:W:2], x[:, 1:H:2, 1:W:2]], -1
            )
            x = F.layer_norm(
                x,
                x.shape[-1:],
                sd[f"layers.{i}.downsample.norm.weight"],
                sd[f"layers.{i}.downsample.norm.bias"],
            )
            x = x @ sd[f"layers.{i}.downsample.reduction.weight"].T
    return x.mean((1, 2)) @ sd["head.weight"].T + sd["head.bias"]


def test_loaded_official_layout_gives_the_reference_logits():
    torch.manual_seed(2)
    sd = {
        k: (
            torch.randn(v.shape) * 0.1 if v.is_floating_point() else v
        )  # an official-layout state dict, random weights
        for k, v in MedMamba(num_classes=6, **MEDMAMBA_CONFIGS["test"]).state_dict().items()
    }
    for k in sd:
        if k.endswith("running_var"):
            sd[k] = sd[k].abs() + 0.5
    m = load_medmamba_checkpoint(
        MedMamba(num_classes=6, **MEDMAMBA_CONFIGS["test"], odd_sizes="crop", scan_backend="parallel"), sd
    ).eval()
    images = torch.randn(2, 3, 40, 72)  # maps 10×18, 5×9, then odd: the crop matters
    with torch.no_grad():
        torch.testing.assert_close(m(images), network_reference(m, images), rtol=1e-4, atol=1e-5)


def _with_labels(tmp_path, name, n_classes=4, **labels):
    f = make_medmnist_like(tmp_path / "base.npz", n_classes=n_classes)
    a = dict(np.load(f))
    a.update(labels)
    np.savez(tmp_path / name, **a)
    return tmp_path / name


def test_medmnist_label_outside_the_classes_is_refused(tmp_path):
    "Label 9 in a 4-class file would silently make a 10-class head: the gap 4..8 gives it away."
    train = (np.arange(40) % 4).astype(np.uint8)[:, None]
    train[5] = 9
    f = _with_labels(tmp_path, "mine.npz", train_labels=train)
    with pytest.raises(ValueError) as e:
        medmnist_dls(f, size=28, device="cpu")
    assert str(e.value) == (
        f"{f}: classes 4..8 have no image, so the file's classes look like 0..3 and "
        "label(s) [9] (in train_labels) lie outside them; pass n_classes=10 if the file "
        "really has that many classes"
    )
    with pytest.raises(ValueError, match="classes 4..8 have no image"):
        read_medmnist(f)
    assert medmnist_dls(f, size=28, device="cpu", n_classes=10).c == 10  # said explicitly: accepted
    with pytest.raises(ValueError, match=r"train_labels has label 9, outside the 5 classes 0..4 \(n_classes"):
        read_medmnist(f, n_classes=5)


@pytest.mark.parametrize(
    "name,classes", [("octmnist.npz", 4), ("pathmnist_64.npz", 9), ("breastmnist_224.npz", 2)]
)
def test_medmnist_known_datasets_use_their_class_count(tmp_path, name, classes):
    ok = _with_labels(tmp_path, "ok_" + name, n_classes=min(classes, 4))  # labels 0..3 (or 0..1)
    (tmp_path / name).write_bytes(ok.read_bytes())
    assert medmnist_dls(tmp_path / name, size=28, device="cpu").c == classes  # the dataset's count
    too_big = np.full((12, 1), classes, np.uint8)
    bad = _with_labels(tmp_path, "bad.npz", n_classes=min(classes, 4), val_labels=too_big)
    (tmp_path / name).write_bytes(bad.read_bytes())
    want = f"val_labels has label {classes}, outside the {classes} classes 0..{classes - 1}"
    with pytest.raises(ValueError, match=want):
        read_medmnist(tmp_path / name)


def test_medmnist_n_classes_must_be_a_count(tmp_path):
    f = make_medmnist_like(tmp_path / "m.npz")
    with pytest.raises(ValueError, match="n_classes must be an int >= 1"):
        read_medmnist(f, n_classes="4")
