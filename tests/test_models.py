"""Registry-wide model tests (chapters 05-07): every model builds, runs forward and backward, and loads
official-layout weights."""

import json
import warnings
from pathlib import Path

import pytest
import timm
import torch

from resvmamba.medmamba import load_medmamba_checkpoint
from resvmamba.models import MODELS, create_model
from resvmamba.resvmamba import ResVMamba
from resvmamba.vim import load_vim_checkpoint
from resvmamba.vmamba import CheckpointError, VMamba, load_vmamba_checkpoint, meta_model, read_checkpoint

# official v0 key lists (copied from the project's shared notes)
KEYS = Path(__file__).resolve().parent / "data" / "vmamba_v0_keys"
# every registered family (VMamba, Res-VMamba, Vim, MedMamba)
ALL_TEST_MODELS = [n for n in MODELS if n.endswith("_test")]
# chapters 05-07 layout
TEST_MODELS = [n for n in ALL_TEST_MODELS if MODELS[n].family in ("vmamba", "resvmamba")]
FULL = ["tiny", "small", "base"]


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_every_family_registers_a_test_preset():
    assert {MODELS[n].family for n in ALL_TEST_MODELS} >= {"vmamba", "resvmamba", "vim", "medmamba"}


@pytest.mark.parametrize("name", [n for n in ALL_TEST_MODELS if n not in TEST_MODELS])
def test_other_families_forward_backward_every_param_has_grad(name):
    """Registry-wide: Vim and MedMamba test presets run forward and backward, and every parameter gets a
    gradient."""
    torch.manual_seed(0)
    m = create_model(name, num_classes=5)
    size = m.pretrained_cfg["input_size"][1:] if name.startswith("vim") else (64, 64)
    out = m(torch.randn(2, 3, *size))
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    out.logsumexp(-1).sum().backward()
    no_grad = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == [], no_grad


@pytest.mark.parametrize("name", TEST_MODELS)
@pytest.mark.parametrize("size", [(64, 64), (65, 97)])
def test_forward_backward_every_param_has_grad(name, size):
    torch.manual_seed(0)
    m = create_model(name, num_classes=5, scan_backend="parallel")
    if name.startswith("resvmamba"):  # non-zero residuals, so their inputs' gradients are exercised too
        for p in m.residuals.parameters():
            torch.nn.init.normal_(p, std=0.02)
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
        for blk in (blk for layer in m.layers for blk in layer.blocks):
            blk.op.scan_backend = "reference"
        c = m(x)
    assert torch.equal(a, b)
    torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("size", FULL)
def test_param_counts_and_official_key_layout(size):
    spec = json.loads((KEYS / f"vmamba_{size}_1000.json").read_text())
    m = meta_model(create_model, name=f"vmamba_{size}", num_classes=1000)
    assert {k: list(v.shape) for k, v in m.state_dict().items()} == spec["keys"]
    assert n_params(m) == spec["params"] == dict(tiny=22_893_448, small=44_417_416, base=76_254_056)[size]
    assert (
        n_params(meta_model(create_model, name=f"vmamba_{size}"))
        == dict(tiny=22_309_777, small=43_833_745, base=75_476_081)[size]
    )
    r = meta_model(create_model, name=f"resvmamba_{size}", num_classes=1000)
    assert set(m.state_dict()) <= set(r.state_dict())
    assert {k for k in r.state_dict() if k not in m.state_dict()} == {
        f"residuals.{i}.proj.{p}" for i in range(3) for p in ("weight", "bias")
    }


def _official_file(tmp_path, model, seed=0):
    """A file in the official layout: random weights, old `self_attention` names, wrapped under 'model' with
    'model_ema'."""
    g = torch.Generator().manual_seed(seed)
    sd = {
        k.replace(".op.", ".self_attention."): torch.randn(v.shape, generator=g) * 0.1
        for k, v in model.state_dict().items()
    }
    path = tmp_path / "official.pth"
    torch.save({"model": sd, "model_ema": sd, "epoch": 10}, path)
    return path


@pytest.mark.parametrize("name", TEST_MODELS)
def test_checkpoint_round_trip(tmp_path, name):
    src = create_model("vmamba_test", num_classes=1000, scan_backend="parallel")
    path = _official_file(tmp_path, src)
    a = create_model(name, num_classes=1000, pretrained=path, scan_backend="parallel").eval()
    b = load_vmamba_checkpoint(
        create_model("vmamba_test", num_classes=1000, scan_backend="parallel"), path
    ).eval()
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)
    c = create_model(name, num_classes=241, pretrained=path, scan_backend="parallel")  # head re-initialised
    assert c.classifier.head.weight.shape == (241, 128) and torch.equal(
        c.classifier.head.bias.detach(), torch.zeros(241)
    )
    # our own state dict round-trips exactly too (residuals included)
    torch.save(a.state_dict(), tmp_path / "ours.pth")
    d = create_model(name, num_classes=1000, pretrained=tmp_path / "ours.pth", scan_backend="parallel").eval()
    with torch.no_grad():
        assert torch.equal(a(x), d(x))


def test_bad_checkpoints_fail_clearly(tmp_path):
    m = create_model("vmamba_test", num_classes=1000)
    sd = {"model": dict(m.state_dict())}
    del sd["model"]["layers.1.downsample.norm.bias"]
    sd["model"]["layers.9.blocks.0.norm.weight"] = torch.zeros(3)
    sd["model"]["patch_embed.0.weight"] = torch.zeros(16, 3, 2, 2)
    with pytest.raises(ValueError) as e:
        load_vmamba_checkpoint(create_model("vmamba_test", num_classes=1000), sd)
    msg = str(e.value)
    assert "missing keys (1): layers.1.downsample.norm.bias" in msg
    assert "unexpected keys (1): layers.9.blocks.0.norm.weight" in msg
    assert "patch_embed.0.weight: checkpoint (16, 3, 2, 2) vs model (16, 3, 4, 4)" in msg
    with pytest.raises(ValueError, match="does not match"):  # a different size is not silently half-loaded
        load_vmamba_checkpoint(
            create_model("vmamba_test", num_classes=1000, dims=24), {"model": m.state_dict()}
        )
    with pytest.raises(FileNotFoundError, match="none.pth does not exist"):
        create_model("vmamba_test", pretrained=tmp_path / "none.pth")


def test_create_model_errors_and_timm_registry():
    with pytest.raises(ValueError, match="unknown model"):
        create_model("vmamba_huge")
    with pytest.raises(ValueError, match=r"unknown override\(s\) \['dim'\]"):
        create_model("vmamba_test", dim=8)
    with pytest.raises(ValueError, match="scan_backend must be one of"):
        create_model("vmamba_test", scan_backend="cuda")
    assert {"rvm_" + n for n in MODELS} <= set(timm.list_models("rvm_*"))
    m = timm.create_model("rvm_resvmamba_test", num_classes=3)
    assert isinstance(m, ResVMamba) and m.num_classes == 3


def test_package_exposes_entry_points_without_importing_fastai():
    import subprocess
    import sys

    code = (
        "import sys, resvmamba as r; eager = [n for n in r.__all__ if n not in r._LAZY]; "
        "print('fastai' in sys.modules, all(hasattr(r, n) for n in eager), "
        "r.create_model is r.models.create_model, "
        "'food_learner' in r.__all__ and 'food_learner' in dir(r))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["False", "True", "True", "True"], out


# --- the timm model interface, on every registered test preset ---


@pytest.mark.parametrize("name", TEST_MODELS)
def test_features_only_stage_maps_and_feature_info(name):
    feat = create_model(name, features_only=True, scan_backend="parallel")
    with torch.no_grad():
        maps = feat(torch.randn(2, 3, 64, 96))
    assert [tuple(t.shape) for t in maps] == [(2, 16, 16, 24), (2, 32, 8, 12), (2, 64, 4, 6), (2, 128, 2, 3)]
    assert feat.feature_info.channels() == [16, 32, 64, 128] and feat.feature_info.reduction() == [
        4,
        8,
        16,
        32,
    ]
    two = timm.create_model("rvm_" + name, features_only=True, out_indices=(0, 2))
    assert two.feature_info.channels() == [16, 64]


@pytest.mark.parametrize("name", ["vmamba_small", "resvmamba_tiny", "resvmamba_small"])
def test_resolve_data_config_gives_the_presets_own_values(name):
    cfg = timm.data.resolve_data_config(model=meta_model(create_model, name=name))
    assert cfg == dict(
        input_size=(3, 224, 224),
        interpolation="bicubic",
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        crop_pct=0.875,
        crop_mode="center",
    )
    assert meta_model(create_model, name=name).pretrained_cfg["file"].endswith(".pth")


@pytest.mark.parametrize("name", TEST_MODELS)
def test_reset_classifier_forward_head_and_no_weight_decay(name):
    m = create_model(name, num_classes=5, drop_rate=0.1, scan_backend="parallel").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        f = m.forward_features(x)
        pre = m.forward_head(f, pre_logits=True)
        torch.testing.assert_close(pre, m.classifier.norm(f).mean((1, 2)))
        torch.testing.assert_close(m(x), pre @ m.get_classifier().weight.T + m.get_classifier().bias)
    m.reset_classifier(3, global_pool="max")
    with torch.no_grad():
        assert m(x).shape == (2, 3) and m.get_classifier().out_features == 3
        torch.testing.assert_close(m.forward_head(f, pre_logits=True), m.classifier.norm(f).amax((1, 2)))
    m.reset_classifier(0)
    with torch.no_grad():
        assert m(x).shape == (2, 128)
    assert {n.rsplit(".", 1)[-1] for n in m.no_weight_decay()} == {"A_logs", "Ds"} and len(
        m.no_weight_decay()
    ) == 8


def test_export_path_torch_export_equals_eager():
    """torch.export is the supported export path (torch.jit.script and TorchScript ONNX are documented as
    unsupported in chapter 07b)."""
    m = create_model("resvmamba_test", num_classes=5, scan_backend="reference").eval()
    x = torch.randn(1, 3, 16, 16)
    ep = torch.export.export(m, (x,))
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(x), m(x), rtol=1e-5, atol=1e-6)


def test_zero_residual_is_vmamba_and_official_residual_is_random():
    torch.manual_seed(0)
    vm = create_model("vmamba_test", num_classes=5, scan_backend="parallel").eval()
    res = load_vmamba_checkpoint(
        create_model("resvmamba_test", num_classes=5, scan_backend="parallel"),
        {"model": vm.state_dict()},
        verbose=False,
    ).eval()
    off = load_vmamba_checkpoint(
        create_model("resvmamba_test", num_classes=5, scan_backend="parallel", residual="official"),
        {"model": vm.state_dict()},
        verbose=False,
    ).eval()
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        assert torch.equal(res(x), vm(x))
        a, b = off(x), off(x)
    assert not torch.allclose(a, b) and not torch.allclose(a, vm(x).detach())
    assert set(off.state_dict()) == set(vm.state_dict())


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "is empty (0 bytes)"),
        (b"epoch 3 top-1 0.5\n", "is not a PyTorch file: a text file, 18 bytes, starts with 'epoch 3 top-1"),
        (b"c__main__\nnotes\n", "is not a PyTorch file: a text file, 16 bytes, starts with 'c__main__';"),
        (
            b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR",
            "is not a PyTorch file: 16 bytes of other data, starting with b'\\x89PNG",
        ),
        ("truncated", "is truncated or damaged"),
        ("list", "holds a list; expected a dict"),
    ],
)
def test_unreadable_checkpoint_files_name_the_file(tmp_path, content, message):
    f = tmp_path / "last.pth"
    if content == "truncated":
        torch.save({"model": create_model("vmamba_test").state_dict()}, f)
        f.write_bytes(f.read_bytes()[:5000])
    elif content == "list":
        torch.save([torch.zeros(1)], f)
    else:
        f.write_bytes(content)
    with pytest.raises(ValueError) as e:
        load_vmamba_checkpoint(create_model("vmamba_test"), f)
    assert f"checkpoint {f} {message}" in str(e.value)
    with pytest.raises(TypeError, match="must be a file path or a dict"):
        load_vmamba_checkpoint(create_model("vmamba_test"), [1])


@pytest.mark.parametrize(
    "layout, key", [("plain", "model"), ("training", "model"), ("training", "ema"), ("official", "model_ema")]
)
def test_checkpoint_layouts_accepted(tmp_path, layout, key):
    src = create_model("vmamba_test", num_classes=1000)
    sd = {k: v + 1 for k, v in src.state_dict().items()}
    ckpt = dict(
        plain=sd,
        training={"model": sd, "ema": sd, "opt": {"state": {}}, "epoch": 2},
        official={"model": src.state_dict(), "model_ema": sd},
    )[layout]
    torch.save(ckpt, tmp_path / "w.pth")
    m = load_vmamba_checkpoint(
        create_model("vmamba_test", num_classes=1000), tmp_path / "w.pth", key=key, verbose=False
    )
    assert all(torch.equal(v, sd[k]) for k, v in m.state_dict().items())


def test_register_family_adds_names_to_create_model_and_timm_and_refuses_clashes():
    from timm.models import register_model

    from resvmamba.models import register_family

    try:
        names = register_family(
            "toy_vm",
            VMamba,
            {"mini": dict(depths=(1, 1), dims=8, d_state=2)},
            load_vmamba_checkpoint,
            {"mini": dict(input_size=(3, 32, 32))},
        )
        assert names == ["toy_vm_mini"] and MODELS["toy_vm_mini"].timm_name == "rvm_toy_vm_mini"
        m = timm.create_model("rvm_toy_vm_mini", num_classes=3, scan_backend="parallel")
        assert isinstance(m, VMamba) and m.dims == [8, 16] and m.pretrained_cfg["input_size"] == (3, 32, 32)
        with pytest.raises(ValueError, match="'toy_vm_mini' is already registered by family 'toy_vm'"):
            register_family("toy", VMamba, {"vm_mini": {}})

        def rvm_toyforeign_mini(pretrained=False, **kw):
            return VMamba(**kw)

        register_model(rvm_toyforeign_mini)  # another library's model under our prefix
        with pytest.raises(ValueError, match="timm already has a model 'rvm_toyforeign_mini'"):
            register_family("toyforeign", VMamba, {"mini": {}})
    finally:
        for n in [n for n in MODELS if n.startswith("toy")]:
            del MODELS[n]


# --- bad input: arguments, checkpoints (every family) ---

OWNER = dict(vmamba="VMamba", resvmamba="ResVMamba", vim="Vim", medmamba="MedMamba")
LOADERS = dict(
    vmamba=load_vmamba_checkpoint,
    resvmamba=load_vmamba_checkpoint,
    vim=load_vim_checkpoint,
    medmamba=load_medmamba_checkpoint,
)
HEADS = "(0 = no head, as in timm)"
COMMON_BAD = [  # (override, exception, message after "<Class>: ") valid for every family
    (dict(num_classes="x"), TypeError, f"num_classes must be an int >= 0 {HEADS}, got 'x' (str)"),
    (dict(num_classes=-1), ValueError, f"num_classes must be >= 0 {HEADS}, got -1"),
    (dict(num_classes=2.0), TypeError, f"num_classes must be an int >= 0 {HEADS}, got 2.0 (float)"),
    (dict(num_classes=True), TypeError, f"num_classes must be an int >= 0 {HEADS}, got True (bool)"),
    (dict(d_state=0), ValueError, "d_state must be >= 1, got 0"),
    (dict(d_state="16"), TypeError, "d_state must be an int >= 1, got '16' (str)"),
    (dict(drop_path_rate=1.0), ValueError, "drop_path_rate must be a number in [0, 1), got 1.0"),
    (dict(drop_path_rate="0.1"), TypeError, "drop_path_rate must be a number in [0, 1), got '0.1' (str)"),
    (dict(dt_rank=0), ValueError, "dt_rank must be >= 1 or 'auto' (ceil(C/16)), got 0"),
    (dict(in_chans=0), ValueError, "in_chans must be >= 1, got 0"),
]
STAGED_BAD = [  # the families with stages (not Vim)
    (
        dict(depths=(1, 1, 1), dims=(16, 32)),
        ValueError,
        "dims (16, 32) has 2 entries but depths (1, 1, 1) has 3 stages",
    ),
    (dict(depths=(1, -1, 1, 1)), ValueError, "depths[1] must be >= 1 (blocks in that stage), got -1"),
    (dict(depths=3), TypeError, "depths must be a list or tuple of blocks per stage, e.g. (2, 2, 9, 2), got"),
    (dict(depths=()), ValueError, "depths must name at least one stage, got ()"),
    (
        dict(dims="96"),
        TypeError,
        "dims must be an int C (the first stage's width, doubled per stage) or one width per stage, got '96'",
    ),
    (dict(dims=(16, 32, 0, 128)), ValueError, "dims[2] must be >= 1 (channels of that stage), got 0"),
    (dict(ssm_ratio=0), ValueError, "ssm_ratio must be a number > 0, got 0"),
]
VIM_BAD = [
    (dict(img_size="64"), TypeError, "img_size must be an int >= 1, got '64' (str)"),
    (dict(embed_dim=0), ValueError, "embed_dim must be >= 1, got 0"),
    (dict(depth=0), ValueError, "depth must be >= 1, got 0"),
    (dict(stride=1.5), TypeError, "stride must be an int >= 1, got 1.5 (float)"),
    (dict(expand=-2), ValueError, "expand must be a number > 0, got -2"),
]


def _bad_cases():
    for name in ALL_TEST_MODELS:
        fam = MODELS[name].family
        extra = VIM_BAD if fam == "vim" else STAGED_BAD
        for kw, exc, msg in COMMON_BAD + extra:
            yield name, kw, exc, msg


@pytest.mark.parametrize(
    "name,kw,exc,msg", list(_bad_cases()), ids=lambda v: repr(v)[:40] if isinstance(v, dict) else None
)
def test_bad_arguments_fail_the_same_through_every_route(name, kw, exc, msg):
    "The class, create_model and timm.create_model give the same one-line error naming class and argument."
    entry, want = MODELS[name], f"{OWNER[MODELS[name].family]}: {msg}"
    routes = [
        lambda: entry.cls(**{**entry.cfg, **kw}),
        lambda: create_model(name, **kw),
        lambda: timm.create_model(entry.timm_name, **kw),
    ]
    for build in routes:
        with pytest.raises(exc) as e:
            build()
        assert str(e.value).startswith(want), str(e.value)
        assert "\n" not in str(e.value)


@pytest.mark.parametrize("name", ALL_TEST_MODELS)
def test_zero_classes_is_headless(name):
    m = create_model(name, num_classes=0, scan_backend="parallel").eval()
    with torch.no_grad():
        out = m(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, m.num_features)


def test_resvmamba_with_fewer_stages_names_depths_and_the_default():
    with pytest.raises(ValueError) as e:
        create_model("resvmamba_test", depths=(1, 1, 1))
    assert str(e.value) == (
        "resvmamba_test: depths=(1, 1, 1) gives 3 stages, but the default "
        "residual_stages=(0, 1, 2) needs 4; pass residual_stages=(0, 1) "
        "(every stage with patch merging)"
    )
    m = create_model("resvmamba_test", depths=(1, 1, 1), residual_stages=(0, 1))
    assert m.dims == [16, 32, 64] and list(m.residuals) == ["0", "1"]
    assert create_model("vmamba_test", depths=(1, 1, 1)).dims == [16, 32, 64]  # no residuals: fine


@pytest.mark.parametrize("name", ALL_TEST_MODELS)
def test_every_loader_refuses_a_text_file(tmp_path, name):
    f = tmp_path / "weights.pth"
    f.write_text("step,loss\n100,2.31\n")
    with pytest.raises(CheckpointError) as e:
        LOADERS[MODELS[name].family](create_model(name), f)
    assert str(e.value) == (
        f"checkpoint {f} is not a PyTorch file: a text file, 19 bytes, "
        "starts with 'step,loss'; expected a file written by torch.save"
    )


def test_read_checkpoint_text_utf8_cut_mid_character(tmp_path):
    f = tmp_path / "notes.pth"
    f.write_text("aé" * 200)  # 600 bytes: the 512-byte read ends inside an 'é'
    with pytest.raises(CheckpointError, match="text file, 600 bytes, starts with 'aéaé"):
        read_checkpoint(f)


@pytest.mark.parametrize("name", ALL_TEST_MODELS)
def test_every_loader_refuses_nonfinite_weights_unless_allowed(tmp_path, name):
    fam = MODELS[name].family
    src = create_model(name, num_classes=5)
    sd = {k: v.clone() for k, v in src.state_dict().items()}
    floats = [k for k, v in sd.items() if v.is_floating_point()]
    sd[floats[3]].view(-1)[0] = float("nan")
    sd[floats[-1]].view(-1)[-1] = float("-inf")
    f = tmp_path / "diverged.pth"
    torch.save({"model": sd}, f)
    with pytest.raises(CheckpointError) as e:
        LOADERS[fam](create_model(name, num_classes=5), f)
    assert f"has non-finite values (NaN or inf) in 2 tensor(s): {floats[3]}, {floats[-1]}" in str(e.value)
    assert "allow_nonfinite=True" in str(e.value)
    with pytest.raises(CheckpointError):
        create_model(name, num_classes=5, pretrained=f)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = LOADERS[fam](create_model(name, num_classes=5), f, allow_nonfinite=True)
    assert any("non-finite" in str(w.message) for w in caught)
    assert m.state_dict()[floats[3]].view(-1)[0].isnan()


# --- gradient checkpointing (timm's set_grad_checkpointing) ---


def _grads(m, x, seed=1):
    m.zero_grad()
    torch.manual_seed(seed)  # the same drop-path masks in both runs
    loss = m(x).square().sum()
    loss.backward()
    return loss.detach(), {k: p.grad.clone() for k, p in m.named_parameters()}


@pytest.mark.parametrize("name", ALL_TEST_MODELS)
def test_grad_checkpointing_gives_the_same_gradients(name):
    torch.manual_seed(0)
    m = create_model(name, num_classes=3, scan_backend="parallel", drop_path_rate=0.2)  # RNG replayed
    x = torch.randn(2, 3, 64, 64)
    loss0, g0 = _grads(m, x)
    m.set_grad_checkpointing(True)
    assert m.grad_checkpointing
    loss1, g1 = _grads(m, x)
    torch.testing.assert_close(loss1, loss0, rtol=0, atol=0)
    for k in g0:
        torch.testing.assert_close(g1[k], g0[k], rtol=1e-5, atol=1e-6, msg=lambda s: f"{k}: {s}")


@pytest.mark.parametrize("name", ALL_TEST_MODELS)
def test_grad_checkpointing_really_recomputes(name):
    "Checkpointing on, a block's forward runs twice per training step (once more in the backward); off, once."
    m = create_model(name, num_classes=3, scan_backend="parallel")
    block = m.layers[0] if MODELS[name].family == "vim" else m.layers[0].blocks[0]
    calls, forward = [], type(block).forward
    block.forward = lambda *a, **k: (calls.append(1), forward(block, *a, **k))[1]  # counts recomputation
    for enable, want in ((False, 1), (True, 2)):
        m.set_grad_checkpointing(enable)
        calls.clear()
        m(torch.randn(1, 3, 64, 64)).sum().backward()
        assert len(calls) == want
    calls.clear()
    with torch.no_grad():
        m(torch.randn(1, 3, 64, 64))
    assert len(calls) == 1


@pytest.mark.parametrize("name", ALL_TEST_MODELS)
def test_grad_checkpointing_composes_with_eval_and_no_grad(name):
    torch.manual_seed(0)
    m = create_model(name, num_classes=3, scan_backend="parallel", grad_checkpointing=True)
    assert m.grad_checkpointing
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = m.eval()(x)
    m.set_grad_checkpointing(False)
    with torch.no_grad():
        torch.testing.assert_close(m(x), ref, rtol=0, atol=0)
    m.set_grad_checkpointing(True)
    xg = x.clone().requires_grad_()
    out = m(xg)  # eval mode, grad enabled: checkpointed, same values
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)
    out.sum().backward()
    assert xg.grad is not None and xg.grad.isfinite().all()
