"""Chapter 04's fused kernel against chapter 03's reference, on the CPU through Triton's interpreter (and on a
GPU when present)."""

import pytest
import torch

# Triton decides between compiling and interpreting when a kernel is *decorated*; tests/conftest.py sets
# TRITON_INTERPRET=1 on machines without a GPU before any test module imports resvmamba.triton_scan.
import resvmamba.triton_scan as ts
from resvmamba.cross_scan import cross_selective_scan_ref
from resvmamba.scan import selective_scan_parallel

assert torch.cuda.is_available() or ts._interpreting(), (
    "TRITON_INTERPRET=1 must be set before resvmamba.triton_scan is imported"
)

DEV = "cuda" if torch.cuda.is_available() else "cpu"
NAMES = ["x", "delta", "A", "B", "C", "D", "delta_bias"]


@pytest.fixture(autouse=True)
def poison():
    "Every kernel output starts as NaN, so an unwritten element fails the comparison."
    ts.POISON = True
    yield
    ts.POISON = False


def make(Bsz, Dm, H, W, N, dtype=torch.float32, seed=0, device=DEV):
    g = torch.Generator().manual_seed(seed)

    def r(*s):
        return torch.randn(*s, generator=g, dtype=torch.float64)

    ins = [
        r(Bsz, Dm, H, W),
        r(Bsz, 4, Dm, H, W) * 0.5 - 1,
        -torch.exp(r(4, Dm, N) * 0.5),
        r(Bsz, 4, N, H, W),
        r(Bsz, 4, N, H, W),
        r(4, Dm),
        r(4, Dm) * 0.3,
    ]
    return [t.to(device=device, dtype=dtype) for t in ins]


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def check(ins, tol, fn=None, **kw):
    "Output and every gradient of the kernel against the float64 reference fed the same (rounded) inputs."
    ins = [None if t is None else t.detach().requires_grad_() for t in ins]
    used = [t for t in ins if t is not None]
    y = (fn or ts.cross_selective_scan_triton)(*ins, **kw)
    assert y.dtype == ins[0].dtype and torch.isfinite(y).all()
    dy = torch.randn_like(y)
    gk = torch.autograd.grad(y, used, dy)
    ref_in = [None if t is None else t.detach().double().requires_grad_() for t in ins]
    yr = cross_selective_scan_ref(*ref_in, **kw)
    gr = torch.autograd.grad(yr, [t for t in ref_in if t is not None], dy.double(), allow_unused=True)
    assert rel(y, yr) < tol, f"y: {rel(y, yr):.1e}"
    for name, a, b, t in zip([n for n, t in zip(NAMES, ins) if t is not None], gk, gr, used):
        assert a.dtype == t.dtype and torch.isfinite(a).all(), name
        if b is None or b.abs().max() == 0:
            assert a.double().abs().max() < 1e-6, name
            continue  # A on a 1x1 image
        assert rel(a, b) < tol, f"d{name}: {rel(a, b):.1e}"


@pytest.mark.parametrize(
    "shape",
    [(2, 3, 3, 7, 4), (1, 3, 1, 1, 2), (1, 3, 5, 3, 16), (1, 2, 7, 2, 1), (1, 3, 1, 9, 8)],
    ids=lambda s: "B{}-Dm{}-{}x{}-N{}".format(*s),
)
def test_float32_matches_reference(shape):
    check(make(*shape), 1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_inputs_float32_state(dtype):
    check(make(1, 3, 3, 4, 4, dtype), 1e-2)


def test_optional_inputs_and_no_softplus():
    x, delta, A, B, C, _, _ = make(1, 3, 2, 5, 2, seed=3)
    check([x, delta.abs() * 0.3, A, B, C, None, None], 1e-5, delta_softplus=False)


def test_mixed_dtypes_as_under_autocast():
    """bf16 activations with float32 parameters (what autocast hands over): no casts needed, grads keep each
    dtype."""
    ins = make(1, 3, 3, 3, 4)
    check([t.bfloat16() if i in (0, 1, 3, 4) else t for i, t in enumerate(ins)], 1e-2)


def test_checkpoints_between_chunk_starts():
    """A forward of 16-step chunks saving every 8 steps gives the 8-step forward's checkpoints, and the
    backward runs from them."""
    x, delta, A, B, C, D, bias = make(1, 2, 5, 7, 4)  # L = 35: the last 8-step piece is partial
    y16, hs16 = ts._scan_fwd(x, delta, A, B, C, D, bias, True, True, tiles=(2, 16, 1), t_save=8)
    y8, hs8 = ts._scan_fwd(x, delta, A, B, C, D, bias, True, True, tiles=(2, 8, 1))
    assert hs16.shape == hs8.shape == (1, 4, 5, 2, 4)
    assert rel(y16, y8) < 1e-6 and rel(hs16, hs8) < 1e-6
    # every checkpoint written, and not all zero
    assert torch.isfinite(hs16).all() and hs16[:, :, 1:].abs().amax() > 0
    dy = torch.randn_like(y8)
    for a, b in zip(
        ts._scan_bwd(dy, hs16, x, delta, A, B, C, D, bias, True, tiles=(2, 8, 1)),
        ts._scan_bwd(dy, hs8, x, delta, A, B, C, D, bias, True, tiles=(2, 8, 1)),
    ):
        assert rel(a, b) < 1e-6


@pytest.mark.parametrize("blocks", [2, 3])
def test_channel_blocks_per_program(blocks):
    """Several channel blocks walked by one program, adding their dB, dC shares in one partial row, give the
    one-block-per-program gradients; 5 blocks of 2 channels leave the last program short (masked blocks)."""
    x, delta, A, B, C, D, bias = [t.double() for t in make(2, 9, 3, 5, 4, seed=8)]
    _, hs = ts._scan_fwd(x, delta, A, B, C, D, bias, True, True, tiles=(2, 8, 1))
    dy = torch.randn_like(x)
    one = ts._scan_bwd(dy, hs, x, delta, A, B, C, D, bias, True, tiles=(2, 8, 1), contig=True)
    many = ts._scan_bwd(dy, hs, x, delta, A, B, C, D, bias, True, tiles=(2, 8, 1), contig=True, blocks=blocks)
    for name, a, b in zip(NAMES, many, one):
        assert rel(a, b) < 1e-13, name
    # and the many-block gradients are right: against the reference's, for dB and dC
    ins = [t.detach().requires_grad_() for t in (x, delta, A, B, C, D, bias)]
    gr = torch.autograd.grad(cross_selective_scan_ref(*ins), ins, dy)
    assert rel(many[3], gr[3]) < 1e-10 and rel(many[4], gr[4]) < 1e-10


def test_gradcheck_float64():
    ins = [t.double().requires_grad_() for t in make(1, 2, 2, 3, 2, seed=1)]
    assert torch.autograd.gradcheck(ts.cross_selective_scan_triton, ins, fast_mode=True)
    ins = [t.double().requires_grad_() for t in make(1, 1, 1, 2, 1, seed=2)]
    assert torch.autograd.gradcheck(ts.cross_selective_scan_triton, ins)


def test_deterministic():
    ins = [t.requires_grad_() for t in make(1, 3, 3, 3, 4, seed=4)]
    y1 = ts.cross_selective_scan_triton(*ins)
    g1 = torch.autograd.grad(y1.sum(), ins)
    y2 = ts.cross_selective_scan_triton(*ins)
    g2 = torch.autograd.grad(y2.sum(), ins)
    assert torch.equal(y1, y2) and all(torch.equal(a, b) for a, b in zip(g1, g2))


def test_bad_shapes_name_the_expected_shape():
    x, delta, A, B, C, D, bias = make(1, 3, 3, 2, 4)
    with pytest.raises(ValueError, match="N must be one of"):
        ts.cross_selective_scan_triton(x, delta, A[..., :3], B[:, :, :3], C[:, :, :3])
    with pytest.raises(ValueError, match=r"delta must be \(1, 4, 3, 3, 2\)"):
        ts.cross_selective_scan_triton(x, delta[:, :2], A, B, C)
    with pytest.raises(ValueError, match=r"D must be \(4, 3\)"):
        ts.cross_selective_scan_triton(x, delta, A, B, C, D[:2])
    with pytest.raises(ValueError, match="x must be"):
        ts.cross_selective_scan_triton(x[0], delta, A, B, C)
    with pytest.raises(TypeError, match="must be a floating-point torch.Tensor"):
        ts.cross_selective_scan_triton(x.int(), delta, A, B, C)


def test_positive_A_is_refused():
    "A > 0 would make the state grow; the launcher says so (and a compiled graph skips the check)."
    x, delta, A, B, C, D, bias = make(1, 2, 2, 3, 4)
    # max(A) = 0 (-exp(A_log) rounded) passes
    ts.cross_selective_scan_triton(x, delta, A - A.max(), B, C, D, bias)
    A[1, 0, 2] = 0.5
    with pytest.raises(ValueError, match=r"got max\(A\) = 0.5"):
        ts.cross_selective_scan_triton(x, delta, A, B, C, D, bias)


def test_half_inputs_keep_bfloat16_checkpoints():
    """Half inputs: the checkpoints the backward reads are bfloat16 (half the memory), float32 inputs keep
    float32 ones."""
    ins = make(1, 2, 3, 5, 4)
    for dtype, want in (
        (torch.bfloat16, torch.bfloat16),
        (torch.float16, torch.bfloat16),
        (torch.float32, torch.float32),
    ):
        x, delta, A, B, C, D, bias = [t.to(dtype) if i in (0, 1, 3, 4) else t for i, t in enumerate(ins)]
        _, hs = ts._scan_fwd(x, delta, A, B, C, D, bias, True, True)
        assert hs.dtype == want and torch.isfinite(hs).all()
        _, hs32 = (
            ts._scan_fwd(x, delta, A, B, C, D, bias, True, True)
            if dtype == torch.float32
            else ts._scan_fwd(x.float(), delta.float(), A, B.float(), C.float(), D, bias, True, True)
        )
        # bfloat16 rounding of the same states
        assert rel(hs, hs32) < (4e-3 if dtype != torch.float32 else 1e-7)


def test_dispatcher():
    ins = make(1, 3, 2, 3, 2, seed=5)
    with pytest.raises(ValueError, match="valid backends are"):
        ts.cross_selective_scan(*ins, backend="cuda")
    ref = ts.cross_selective_scan(*ins, backend="reference")
    for be in ("parallel", "triton", "auto"):
        assert rel(ts.cross_selective_scan(*ins, backend=be), ref) < 1e-5, be


def test_both_route_layouts_agree():
    """Column routes through transposed copies (CONTIG) and walking the image give the same outputs and
    gradients."""
    ins = make(1, 3, 3, 5, 2, seed=7)
    for contig in (True, False):
        ts.CONTIG = contig
        try:
            check(ins, 1e-5)
        finally:
            ts.CONTIG = None


def test_torch_compile_no_graph_break():
    "The scan is one custom operator inside the traced graph (fullgraph=True), with gradients equal to eager."
    ins = [t.requires_grad_() for t in make(1, 2, 2, 2, 2, seed=6)]

    def f(*a):
        return 2 * ts.cross_selective_scan_triton(*a).sin() + 1

    torch._dynamo.reset()
    y = torch.compile(f, backend="aot_eager", fullgraph=True)(*ins)
    g = torch.autograd.grad(y.sum(), ins)
    ye = f(*ins)
    ge = torch.autograd.grad(ye.sum(), ins)
    assert rel(y, ye) < 1e-6 and all(rel(a, b) < 1e-6 for a, b in zip(g, ge))


def test_drop_path_blocks_compile_to_one_graph():
    """Blocks with different DropPath rates around the scan compile to one graph: no break at the scan, no
    recompile per rate."""
    from timm.layers import DropPath

    class Block(torch.nn.Module):
        def __init__(self, p, N=2):
            super().__init__()
            self.A, self.drop_path = torch.nn.Parameter(-torch.rand(4, 2, N) - 0.5), DropPath(p)

        def forward(self, x, delta, B, C):
            return x + self.drop_path(ts.cross_selective_scan_triton(x, delta, self.A, B, C))

    torch.manual_seed(0)
    blocks = torch.nn.ModuleList(Block(p) for p in (0.1, 0.2, 0.3)).train()

    def model(x, *rest):
        for b in blocks:
            x = b(x, *rest)
        return x

    x, delta, _, B, C, _, _ = make(2, 2, 2, 2, 2, seed=8)
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    y = torch.compile(model, backend=backend)(x, delta, B, C)
    assert torch.isfinite(y).all() and len(graphs) == 1, f"{len(graphs)} graphs"
    assert sum(str(n.target) == "resvmamba.cross_scan_fwd.default" for n in graphs[0].graph.nodes) == 3


@pytest.mark.slow
def test_model_compiles_to_one_graph_with_drop_path():
    """A VMamba with stochastic depth compiles to one graph: no break at the scan, no recompile per DropPath
    rate."""
    from resvmamba.models import create_model

    torch.manual_seed(0)
    model = create_model("vmamba_test", num_classes=3, drop_path_rate=0.3, scan_backend="triton").train()
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    # tiny: the kernels run in the interpreter
    y = torch.compile(model, backend=backend)(torch.randn(1, 3, 8, 8))
    assert y.shape == (1, 3) and torch.isfinite(y).all()
    assert len(graphs) == 1, f"{len(graphs)} graphs"
    # one per block
    assert sum(str(n.target) == "resvmamba.cross_scan_fwd.default" for n in graphs[0].graph.nodes) == 4


def test_no_triton_reference_backends_still_run():
    """Where Triton is missing (macOS, Windows), importing the package and the reference backends work;
    'triton' says why it cannot."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import sys; sys.modules["triton"] = None            # `import triton` now raises ImportError
        import torch
        from resvmamba.triton_scan import cross_selective_scan
        from resvmamba.vss import SS2D
        x = torch.randn(1, 3, 3, 8)
        assert SS2D(8, d_state=2, scan_backend="reference")(x).shape == x.shape
        try: SS2D(8, d_state=2, scan_backend="triton")(x); print("no error")
        except ImportError as e: print("ImportError:", e)
    """)
    env = {k: v for k, v in __import__("os").environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (
        "ImportError: cross_selective_scan_triton: the 'triton' backend needs the triton package"
        in out.stdout
    ), out.stdout


@pytest.mark.cuda
@pytest.mark.parametrize("stage", [(192, 56), (384, 28), (768, 14), (1536, 7)])
def test_gpu_stage_shapes(stage):
    Dm, H = stage
    ins = make(2, Dm, H, H, 16, device="cuda")
    y = ts.cross_selective_scan_triton(*ins)
    yr = cross_selective_scan_ref(*[t.double() for t in ins], scan_fn=selective_scan_parallel)
    assert rel(y, yr) < 1e-5
    yb = ts.cross_selective_scan_triton(
        *[t.bfloat16() if i in (0, 1, 3, 4) else t for i, t in enumerate(ins)]
    )
    assert rel(yb, yr) < 1e-2
