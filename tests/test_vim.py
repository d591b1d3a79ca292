"""Vim (chapter 11): official key table and parameter count, the bidirectional mixer against a float64 loop,
checkpoints."""

import copy
import json
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from resvmamba.models import create_model
from resvmamba.vim import BiMamba, VimBlock, load_vim_checkpoint
from resvmamba.vmamba import meta_model

# the presets, built by name as the package builds them, with the official 1000-class head by default
vim_tiny = partial(create_model, "vim_tiny", num_classes=1000)
vim_test = partial(create_model, "vim_test", num_classes=1000)

# official Vim-Tiny names and shapes
KEYS = Path(__file__).resolve().parent / "data" / "vim_keys" / "vim_tiny_1000.json"


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_official_keys_and_parameter_counts():
    spec = json.loads(KEYS.read_text())
    m = meta_model(vim_tiny)
    assert list(m.state_dict()) == list(spec["keys"])
    assert {k: list(v.shape) for k, v in m.state_dict().items()} == spec["keys"]
    assert n_params(m) == 7_250_344 == spec["params"]
    assert n_params(meta_model(vim_tiny, num_classes=200)) == 7_095_944 == spec["params_200_classes"]


def _s6_loop(x, z, P, b, R, N, K):
    "One S6 branch in float64 loops over time (independent of resvmamba.scan)."
    L, d = x.shape[1], x.shape[2]
    w, cb = P[f"conv1d{b}.weight"][:, 0], P[f"conv1d{b}.bias"]
    u = torch.stack(
        [cb + sum(w[:, K - 1 - j] * x[:, t - j] for j in range(K) if t >= j) for t in range(L)], 1
    )
    u = F.silu(u)
    dbc = u @ P[f"x_proj{b}.weight"].T
    dt = F.softplus(dbc[..., :R] @ P[f"dt_proj{b}.weight"].T + P[f"dt_proj{b}.bias"])
    A, D = -P[f"A{b}_log"].exp(), P[f"D{b}"]
    h, ys = torch.zeros(x.shape[0], d, N, dtype=torch.float64), []
    for t in range(L):
        h = (
            torch.exp(dt[:, t, :, None] * A) * h
            + (dt[:, t] * u[:, t])[..., None] * dbc[:, t, None, R : R + N]
        )
        ys.append((h * dbc[:, t, None, R + N :]).sum(-1) + D * u[:, t])
    return torch.stack(ys, 1) * F.silu(z)


@pytest.mark.parametrize("backend", ["reference", "parallel"])
@pytest.mark.parametrize("L", [1, 5, 12])
def test_mixer_matches_float64_loop(backend, L):
    torch.manual_seed(L)
    m = BiMamba(16, d_state=3, scan_backend=backend)
    with torch.no_grad():
        for p in (m.dt_proj_b.bias, m.conv1d_b.bias):
            p.normal_()
        h = torch.randn(2, L, 16)
        P = {k: v.double() for k, v in m.state_dict().items()}
        x, z = (h.double() @ P["in_proj.weight"].T).split(m.d_inner, -1)
        yf = _s6_loop(x, z, P, "", m.dt_rank, m.d_state, m.d_conv)
        yb = _s6_loop(x.flip(1), z.flip(1), P, "_b", m.dt_rank, m.d_state, m.d_conv).flip(1)
        want = ((yf + yb) / 2) @ P["out_proj.weight"].T
        torch.testing.assert_close(m(h).double(), want, rtol=1e-4, atol=1e-6)


def test_backward_branch_is_forward_branch_on_flipped_sequence():
    torch.manual_seed(0)
    m = BiMamba(8, d_state=2)
    with torch.no_grad():
        m.dt_proj_b.bias.normal_()
        x, z = torch.randn(2, 16, 9), torch.randn(2, 16, 9)
        m2 = copy.deepcopy(m)  # m2's forward branch gets m's backward weights
        for f, b in [("conv1d", "conv1d_b"), ("x_proj", "x_proj_b"), ("dt_proj", "dt_proj_b")]:
            getattr(m2, f).load_state_dict(getattr(m, b).state_dict())
        m2.A_log.copy_(m.A_b_log)
        m2.D.copy_(m.D_b)
        torch.testing.assert_close(m.branch(x, z, backward=True), m2.branch(x, z))
        h = torch.randn(2, 9, 8)
        sw = copy.deepcopy(m2)  # fully swapped: sw's backward branch gets m's forward weights
        for f, b in [("conv1d", "conv1d_b"), ("x_proj", "x_proj_b"), ("dt_proj", "dt_proj_b")]:
            getattr(sw, b).load_state_dict(getattr(m, f).state_dict())
        sw.A_b_log.copy_(m.A_log)
        sw.D_b.copy_(m.D)
        torch.testing.assert_close(sw(h.flip(1)), m(h).flip(1), rtol=1e-5, atol=1e-6)


def test_block_keeps_residual_in_float32_and_model_trains():
    torch.manual_seed(0)
    blk = VimBlock(16, d_state=2)
    o, r = blk(torch.randn(1, 5, 16).bfloat16(), None)
    assert r.dtype == torch.float32
    m = create_model("vim_test", num_classes=4)
    out = m(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 4)
    out.logsumexp(-1).sum().backward()
    assert [n for n, p in m.named_parameters() if p.grad is None or p.grad.abs().sum() == 0] == []


def test_middle_class_token():
    m = vim_test(num_classes=0)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        tok = m.embed(x)
        assert tok.shape[1] == 226 and m.cls_index_for(225) == 112
        torch.testing.assert_close(tok[0, 112], m.cls_token[0, 0] + m.pos_embed[0, 112])
        torch.testing.assert_close(tok[0, 113], m.patch_embed(x)[0, 112] + m.pos_embed[0, 113])
    with pytest.raises(ValueError, match="built for 64×64 images"):
        m(torch.randn(1, 3, 32, 64))


def test_load_official_layout_checkpoint(tmp_path):
    g = torch.Generator().manual_seed(0)
    shapes = {k: v.shape for k, v in meta_model(vim_test).state_dict().items()}
    ckpt = {"model": {k: torch.randn(*s, generator=g) for k, s in shapes.items()}}
    torch.save(ckpt, tmp_path / "vim.pth")
    m = create_model("vim_test", num_classes=1000, pretrained=tmp_path / "vim.pth")
    for k, v in m.state_dict().items():
        assert torch.equal(v, ckpt["model"][k])
    m5 = load_vim_checkpoint(vim_test(num_classes=5), tmp_path / "vim.pth", verbose=False)
    assert torch.equal(m5.head.bias, torch.zeros(5)) and torch.equal(m5.pos_embed, ckpt["model"]["pos_embed"])
    del ckpt["model"]["norm_f.weight"]
    with pytest.raises(ValueError, match=r"missing keys \(1\): norm_f.weight"):
        load_vim_checkpoint(vim_test(), ckpt)
    with pytest.raises(ValueError, match="pos_embed"):
        load_vim_checkpoint(vim_test(stride=8), tmp_path / "vim.pth")


def _official_like(model):
    "A checkpoint holding `model`'s state dict under 'model', as the official files do."
    return {"model": {k: v.clone() for k, v in model.state_dict().items()}}


@pytest.mark.parametrize(
    "file_kw,model_kw,says",
    [
        (
            dict(embed_dim=48),
            {},
            "embed dim 48 in the checkpoint vs 32 in the model "
            "(build the model with the checkpoint's embed_dim)",
        ),
        (
            dict(stride=8),
            {},
            "tokens (patches + class token) 65 in the checkpoint vs 226 in the model "
            "(build the model with the checkpoint's img_size, patch_size and stride)",
        ),
        (
            dict(depth=3),
            {},
            "depth 3 in the checkpoint vs 2 in the model (build the model with the checkpoint's depth)",
        ),
        (
            dict(d_state=8),
            {},
            "d_state 8 in the checkpoint vs 4 in the model (build the model with the checkpoint's d_state)",
        ),
        (
            dict(expand=1),
            {},
            "d_inner (expand × embed dim) 32 in the checkpoint vs 64 in the model "
            "(build the model with the checkpoint's expand)",
        ),
    ],
)
def test_loader_says_what_differs(file_kw, model_kw, says):
    ckpt = _official_like(vim_test(**file_kw))
    with pytest.raises(ValueError) as e:
        load_vim_checkpoint(vim_test(**model_kw), ckpt)
    first = str(e.value).splitlines()[0]
    want = "the checkpoint given does not match the model; expected official Vim weights of this size: "
    want += says
    assert first == want, first
