"Registry-wide model tests (chapters 05-07): every model builds, runs forward and backward, and loads official-layout weights."
import json
from pathlib import Path
import pytest, torch
import timm
from resvmamba.models import MODELS, create_model
from resvmamba.vmamba import load_vmamba_checkpoint, meta_model
from resvmamba.resvmamba import ResVMamba

KEYS = Path(__file__).resolve().parent / "data" / "vmamba_v0_keys"  # official v0 key lists (copied from the project's shared notes)
TEST_MODELS = [n for n in MODELS if n.endswith("_test")]
FULL = ["tiny", "small", "base"]
n_params = lambda m: sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("name", TEST_MODELS)
@pytest.mark.parametrize("size", [(64, 64), (65, 97)])
def test_forward_backward_every_param_has_grad(name, size):
    torch.manual_seed(0)
    m = create_model(name, num_classes=5, scan_backend="parallel")
    if name.startswith("resvmamba"):  # non-zero residuals, so their inputs' gradients are exercised too
        for p in m.residuals.parameters(): torch.nn.init.normal_(p, std=0.02)
    out = m(torch.randn(2, 3, *size))
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    out.logsumexp(-1).sum().backward()
    no_grad = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == [], no_grad
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())


@pytest.mark.parametrize("name", TEST_MODELS)
def test_backends_agree_and_eval_is_deterministic(name):
    torch.manual_seed(0)
    m = create_model(name, num_classes=5, scan_backend="parallel").eval()
    x = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        a, b = m(x), m(x)
        for blk in (blk for l in m.layers for blk in l.blocks): blk.op.scan_backend = "reference"
        c = m(x)
    assert torch.equal(a, b)
    torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("size", FULL)
def test_param_counts_and_official_key_layout(size):
    spec = json.loads((KEYS / f"vmamba_{size}_1000.json").read_text())
    m = meta_model(create_model, name=f"vmamba_{size}", num_classes=1000)
    assert {k: list(v.shape) for k, v in m.state_dict().items()} == spec["keys"]
    assert n_params(m) == spec["params"] == dict(tiny=22_893_448, small=44_417_416, base=76_254_056)[size]
    assert n_params(meta_model(create_model, name=f"vmamba_{size}")) == dict(tiny=22_309_777, small=43_833_745, base=75_476_081)[size]
    r = meta_model(create_model, name=f"resvmamba_{size}", num_classes=1000)
    assert set(m.state_dict()) <= set(r.state_dict())
    assert {k for k in r.state_dict() if k not in m.state_dict()} == {f"residuals.{i}.proj.{p}" for i in range(3) for p in ("weight", "bias")}


def _official_file(tmp_path, model, seed=0):
    "A file in the official layout: random weights, old `self_attention` names, wrapped under 'model' with 'model_ema'."
    g = torch.Generator().manual_seed(seed)
    sd = {k.replace(".op.", ".self_attention."): torch.randn(v.shape, generator=g) * 0.1 for k, v in model.state_dict().items()}
    path = tmp_path / "official.pth"
    torch.save({"model": sd, "model_ema": sd, "epoch": 10}, path)
    return path


@pytest.mark.parametrize("name", TEST_MODELS)
def test_checkpoint_round_trip(tmp_path, name):
    src = create_model("vmamba_test", num_classes=1000, scan_backend="parallel")
    path = _official_file(tmp_path, src)
    a = create_model(name, num_classes=1000, pretrained=path, scan_backend="parallel").eval()
    b = load_vmamba_checkpoint(create_model("vmamba_test", num_classes=1000, scan_backend="parallel"), path).eval()
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad(): torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)
    c = create_model(name, num_classes=241, pretrained=path, scan_backend="parallel")  # head re-initialised
    assert c.classifier.head.weight.shape == (241, 128) and torch.equal(c.classifier.head.bias.detach(), torch.zeros(241))
    # our own state dict round-trips exactly too (residuals included)
    torch.save(a.state_dict(), tmp_path / "ours.pth")
    d = create_model(name, num_classes=1000, pretrained=tmp_path / "ours.pth", scan_backend="parallel").eval()
    with torch.no_grad(): assert torch.equal(a(x), d(x))


def test_bad_checkpoints_fail_clearly(tmp_path):
    m = create_model("vmamba_test", num_classes=1000)
    sd = {"model": dict(m.state_dict())}
    del sd["model"]["layers.1.downsample.norm.bias"]
    sd["model"]["layers.9.blocks.0.norm.weight"] = torch.zeros(3)
    sd["model"]["patch_embed.0.weight"] = torch.zeros(16, 3, 2, 2)
    with pytest.raises(ValueError) as e: load_vmamba_checkpoint(create_model("vmamba_test", num_classes=1000), sd)
    msg = str(e.value)
    assert "missing keys (1): layers.1.downsample.norm.bias" in msg
    assert "unexpected keys (1): layers.9.blocks.0.norm.weight" in msg
    assert "patch_embed.0.weight: checkpoint (16, 3, 2, 2) vs model (16, 3, 4, 4)" in msg
    with pytest.raises(ValueError, match="does not match"):  # a different size is not silently half-loaded
        load_vmamba_checkpoint(create_model("vmamba_test", num_classes=1000, dims=24), {"model": m.state_dict()})
    with pytest.raises(FileNotFoundError, match="no checkpoint file"): create_model("vmamba_test", pretrained=tmp_path / "none.pth")


def test_create_model_errors_and_timm_registry():
    with pytest.raises(ValueError, match="unknown model"): create_model("vmamba_huge")
    with pytest.raises(ValueError, match=r"unknown override\(s\) \['dim'\]"): create_model("vmamba_test", dim=8)
    with pytest.raises(ValueError, match="scan_backend must be one of"): create_model("vmamba_test", scan_backend="cuda")
    assert {"rvm_" + n for n in MODELS} <= set(timm.list_models("rvm_*"))
    m = timm.create_model("rvm_resvmamba_test", num_classes=3)
    assert isinstance(m, ResVMamba) and m.num_classes == 3


def test_package_exposes_entry_points_without_importing_fastai():
    import subprocess, sys
    code = ("import sys, resvmamba as r; eager = [n for n in r.__all__ if n not in r._LAZY]; "
            "print('fastai' in sys.modules, all(hasattr(r, n) for n in eager), r.create_model is r.models.create_model, "
            "'food_learner' in r.__all__ and 'food_learner' in dir(r))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True", "True", "True"], out
