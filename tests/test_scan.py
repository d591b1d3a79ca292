"""Value-for-value checks of `resvmamba.scan` and `resvmamba.cross_scan` against independent float64
references."""

import itertools
import math

import pytest
import torch

from resvmamba.cross_scan import cross_merge, cross_scan, cross_selective_scan_ref
from resvmamba.scan import linear_scan, selective_scan_parallel, selective_scan_ref


def naive_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """The published reference semantics written out scalar by scalar, in float64 Python floats: one loop per
    batch, channel, state and step. B and C may be fixed (d, N), per step (b, N, L) or grouped (b, G, N, L).
    Returns (y, last_state) as nested lists -> tensors."""
    nb, d, L = u.shape
    N = A.shape[1]
    u, delta, A = (t.double().tolist() for t in (u, delta, A))

    def entry(M):
        "M[b, c, n, t] for channel c of batch b, whatever the form of M."
        dims, M = M.dim(), M.double().tolist()
        if dims == 2:
            return lambda b, c, n, t: M[c][n]  # fixed: per channel, every step
        if dims == 3:
            return lambda b, c, n, t: M[b][n][t]  # one B_t for all channels
        return lambda b, c, n, t: M[b][c // (d // len(M[b]))][n][t]  # channel c reads its group

    Bv, Cv = entry(B), entry(C)
    D = None if D is None else D.double().tolist()
    z = None if z is None else z.double().tolist()
    bias = None if delta_bias is None else delta_bias.double().tolist()

    def softplus(v):
        return math.log1p(math.exp(v)) if v < 30 else v

    def silu(v):
        return v / (1 + math.exp(-v))

    y = [[[0.0] * L for _ in range(d)] for _ in range(nb)]
    last = [[[0.0] * N for _ in range(d)] for _ in range(nb)]
    for b in range(nb):
        for c in range(d):
            for n in range(N):
                h = 0.0
                for t in range(L):
                    dt = delta[b][c][t] + (bias[c] if bias else 0.0)
                    if delta_softplus:
                        dt = softplus(dt)
                    h = math.exp(dt * A[c][n]) * h + dt * Bv(b, c, n, t) * u[b][c][t]
                    y[b][c][t] += Cv(b, c, n, t) * h
                last[b][c][n] = h
            for t in range(L):
                if D is not None:
                    y[b][c][t] += D[c] * u[b][c][t]
                if z is not None:
                    y[b][c][t] *= silu(z[b][c][t])
    return torch.tensor(y, dtype=torch.float64), torch.tensor(last, dtype=torch.float64)


def closed_form_states(a_log, x):
    """h_t = Σ_{s≤t} exp(Σ_{s<r≤t} log a_r) x_s for every t: the unrolled recurrence, O(L²), float64. a_log,
    x: (..., L)."""
    L = x.shape[-1]
    S = torch.cumsum(a_log, -1)
    diff = S[..., :, None] - S[..., None, :]  # (..., t, s) = Σ_{s<r≤t} log a_r
    mask = torch.ones(L, L, dtype=torch.bool).tril()
    return (torch.exp(diff.masked_fill(~mask, -math.inf)) * x[..., None, :]).sum(-1)


def make_inputs(b=2, d=4, N=3, L=6, G=None, dtype=torch.float32, seed=0):
    """Random inputs; B and C per step (b, N, L), grouped (b, G, N, L) for an integer G, or fixed (d, N) for
    G='fixed'."""
    g = torch.Generator().manual_seed(seed)

    def r(*s):
        return torch.randn(*s, generator=g, dtype=dtype)

    BC = (d, N) if G == "fixed" else (b, G, N, L) if G else (b, N, L)
    return dict(
        u=r(b, d, L),
        delta=r(b, d, L),
        A=-torch.rand(d, N, generator=g, dtype=dtype) * 2,
        B=r(*BC),
        C=r(*BC),
        D=r(d),
        z=r(b, d, L),
        delta_bias=r(d),
    )


OPTS = list(
    itertools.product(
        [None, 2, 4, "fixed"], [False, True], [False, True], [False, True], [False, True], [False, True]
    )
)


@pytest.mark.parametrize("G,useD,usez,usebias,softplus,last", OPTS)
@pytest.mark.parametrize("fn", [selective_scan_ref, selective_scan_parallel])
def test_scan_matches_naive(fn, G, useD, usez, usebias, softplus, last):
    inp = make_inputs(G=G)
    kw = dict(
        D=inp["D"] if useD else None,
        z=inp["z"] if usez else None,
        delta_bias=inp["delta_bias"] if usebias else None,
        delta_softplus=softplus,
    )
    args = [inp[k] for k in ("u", "delta", "A", "B", "C")]
    y_ref, h_ref = naive_scan(*args, **kw)
    out = fn(*args, **kw, return_last_state=last)
    y, h = out if last else (out, None)
    assert y.dtype == torch.float32 and y.shape == y_ref.shape
    torch.testing.assert_close(y.double(), y_ref, rtol=1e-5, atol=1e-5)
    if last:
        assert h.shape == (2, 4, 3)
        torch.testing.assert_close(h.double(), h_ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fn", [selective_scan_ref, selective_scan_parallel])
@pytest.mark.parametrize(
    "GB,GC",
    [(None, 2), (2, None), (2, 4), (4, 2), ("fixed", None), (None, "fixed"), ("fixed", 2), (4, "fixed")],
)
def test_scan_b_and_c_grouped_differently(fn, GB, GC):
    inp, inp_c = make_inputs(G=GB, L=40), make_inputs(G=GC, L=40, seed=1)
    args = (inp["u"], inp["delta"], inp["A"], inp["B"], inp_c["C"])
    y, h = fn(*args, D=inp["D"], delta_softplus=True, return_last_state=True)
    y_ref, h_ref = naive_scan(*args, D=inp["D"], delta_softplus=True)
    torch.testing.assert_close(y.double(), y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h.double(), h_ref, rtol=1e-5, atol=1e-5)


# ---- Mamba's test grid, gradients included, against a float64 loop -----------------------------------------


def loop64(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """The recurrence in float64 torch ops, one step per token, B and C spelled out per channel (b, d, N, L);
    autograd gives the gradients."""
    u, delta, A = u.double(), delta.double(), A.double()
    b, d, L = u.shape
    N = A.shape[1]
    if delta_bias is not None:
        delta = delta + delta_bias.double()[:, None]
    if delta_softplus:
        delta = torch.where(delta > 20, delta, torch.log1p(torch.exp(delta.clamp(max=20))))

    def per_channel(M):
        M = M.double()
        if M.dim() == 2:
            return M[None, :, :, None].expand(b, d, N, L)  # fixed (d, N)
        if M.dim() == 3:
            return M[:, None].expand(b, d, N, L)  # (b, N, L): every channel
        return M[:, torch.arange(d) // (d // M.shape[1])]  # (b, G, N, L): channel c -> its group

    Bd, Cd = per_channel(B), per_channel(C)
    h, ys = u.new_zeros(b, d, N), []
    for t in range(L):
        h = torch.exp(delta[..., t, None] * A) * h + (delta[..., t] * u[..., t])[..., None] * Bd[..., t]
        ys.append((h * Cd[..., t]).sum(-1))
    y = torch.stack(ys, -1)
    if D is not None:
        y = y + D.double()[:, None] * u
    if z is not None:
        y = y * (z.double() * torch.sigmoid(z.double()))
    return y, h


def mamba_tolerances(itype, has_z):
    "(rtol, atol) per checked quantity, as in state-spaces/mamba tests/ops/test_selective_scan.py."
    rtol, atol = (6e-4, 2e-3) if itype == torch.float32 else (3e-2, 5e-2)  # bf16
    rtolw, atolw = 1e-3, 1e-3
    if has_z:
        rtolw, atolw = max(rtolw, rtol), max(atolw, atol)  # "with z the errors on the weights seem higher"
    return dict(
        out=(rtol, atol),
        state=(rtol, atol),
        u=(2 * rtol, 2 * atol),
        delta=(5 * rtol, 10 * atol),
        A=(rtolw, 5 * atolw),
        D=(rtolw, atolw),
        z=(rtolw, atolw),
        delta_bias=(rtolw, atolw),
        B_fixed=(rtolw, atolw),
        B_var=(rtol, atol),
        C_fixed=(rtolw, atolw),
        C_var=(rtol, atol),
    )


BC_FORMS = [
    ("fixed", "fixed", 1),
    ("fixed", "var", 1),
    ("var", "fixed", 1),
    ("var", "var", 1),
    ("var", "var", 2),
    ("fixed", "var", 2),
    ("var", "fixed", 2),
]
OPTION_NAMES = ("D", "z", "bias", "softplus", "last")


def sampled_grid():
    """Every (function, dtype, L, B/C form) with two of the 32 option patterns, one the complement of the
    other, so that each option is on once and off once in every combination; the pattern rotates with the
    combination, covering all 32."""
    for i, (fn, itype, L, form) in enumerate(
        itertools.product(
            (selective_scan_ref, selective_scan_parallel), (torch.float32, torch.bfloat16), (7, 372), BC_FORMS
        )
    ):
        for flip in (False, True):
            opts = tuple(bool((i >> k) & 1) ^ flip for k in range(5))
            tag = "-".join(n for n, on in zip(OPTION_NAMES, opts) if on) or "plain"
            yield pytest.param(
                fn,
                itype,
                L,
                *form,
                *opts,
                id=f"{fn.__name__[15:]}-{str(itype)[6:]}-L{L}-B{form[0]}-C{form[1]}-G{form[2]}-{tag}",
            )


@pytest.mark.parametrize("fn,itype,L,formB,formC,G,has_D,has_z,has_bias,softplus,last", list(sampled_grid()))
def test_mamba_grid_against_float64_loop(
    fn, itype, L, formB, formC, G, has_D, has_z, has_bias, softplus, last
):
    """Mamba's setup (batch 2, d 4, N 8; A, D, Δ bias and fixed B/C in float32, the rest in itype), outputs
    and every gradient."""
    g = torch.Generator().manual_seed(L + G)
    b, d, N = 2, 4, 8

    def BC(form):
        if form == "fixed":
            return torch.randn(d, N, generator=g)
        return torch.randn(*((b, N, L) if G == 1 else (b, G, N, L)), generator=g).to(itype)

    ins = dict(
        u=torch.randn(b, d, L, generator=g).to(itype),
        delta=(0.5 * torch.rand(b, d, L, generator=g)).to(itype),
        A=-0.5 * torch.rand(d, N, generator=g),
        B=BC(formB),
        C=BC(formC),
        D=torch.randn(d, generator=g) if has_D else None,
        z=torch.randn(b, d, L, generator=g).to(itype) if has_z else None,
        delta_bias=0.5 * torch.rand(d, generator=g) if has_bias else None,
    )
    ins = {k: v.requires_grad_() for k, v in ins.items() if v is not None}
    # the same (rounded) values, float64 from here on
    ref = {k: v.detach().double().requires_grad_() for k, v in ins.items()}
    res = fn(**ins, delta_softplus=softplus, return_last_state=last)
    out, state = res if last else (res, None)
    out_ref, state_ref = loop64(**ref, delta_softplus=softplus)
    assert out.dtype == itype and out.shape == (b, d, L)
    grad_out = torch.randn(out.shape, generator=g).to(itype)
    out.backward(grad_out)
    out_ref.backward(grad_out.double())
    tol = mamba_tolerances(itype, has_z)
    tol.update(B=tol[f"B_{formB}"], C=tol[f"C_{formC}"])
    checks = dict(out=(out, out_ref), **{k: (ins[k].grad, ref[k].grad) for k in ins})
    if last:
        checks["state"] = (state, state_ref)
    for name, (got, want) in checks.items():
        assert got.dtype == (torch.float32 if name == "state" else ins.get(name, ins["u"]).dtype)
        rtol, atol = tol[name]
        torch.testing.assert_close(got.double(), want, rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")


def test_time_invariant_scan_is_chapter01_convolution():
    """Fixed Δ (per channel), B and C: the scan is the LTI system of chapter 01, y = K * u + D u with K_k = C
    Ā^k B̄."""
    from resvmamba.discretize import causal_conv, discretize_mamba, ssm_conv_kernel

    g = torch.Generator().manual_seed(0)
    b, d, N, L = 2, 3, 4, 50

    def r(*s):
        return torch.randn(*s, generator=g, dtype=torch.float64)

    u, A, B, C, D = r(b, d, L), -torch.rand(d, N, generator=g, dtype=torch.float64), r(d, N), r(d, N), r(d)
    dt = 0.05 + torch.rand(d, generator=g, dtype=torch.float64)
    Ab, Bb = discretize_mamba(A, B, dt, diag=True)  # (d, N) each: Ā = exp(ΔA), B̄ = ΔB
    want = causal_conv(u, ssm_conv_kernel(Ab, Bb, C, L, diag=True), D)
    for fn in (selective_scan_ref, selective_scan_parallel):
        torch.testing.assert_close(
            fn(u, dt[:, None].expand(b, d, L), A, B, C, D=D), want, rtol=1e-10, atol=1e-10
        )


def test_float64_exact_and_closed_form():
    inp = make_inputs(dtype=torch.float64, L=9, G=2)
    args = [inp[k] for k in ("u", "delta", "A", "B", "C")]
    y_ref, h_ref = naive_scan(*args, delta_softplus=True)
    for fn in (selective_scan_ref, selective_scan_parallel):
        y, h = fn(*args, delta_softplus=True, return_last_state=True)
        assert y.dtype == torch.float64
        torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(h, h_ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "L, chunk", [(1, None), (2, None), (9, None), (33, 5), (100, 3), (300, 2), (1025, None)]
)
def test_linear_scan_gradients_equal_the_closed_form(L, chunk):
    "The hand-written backward against the gradients of the O(L²) unrolled sum, which share no code with it."
    g = torch.Generator().manual_seed(L)
    a_log = (-torch.rand(2, L, generator=g, dtype=torch.float64) * 0.05).requires_grad_()
    x = torch.randn(2, L, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, L, generator=g, dtype=torch.float64)  # a random gradient on every state
    grads = [
        torch.autograd.grad((h * w).sum(), (a_log, x))
        for h in (
            linear_scan(a_log.exp()[..., None], x[..., None], chunk=chunk)[..., 0],
            closed_form_states(a_log, x),
        )
    ]
    for got, want in zip(*grads):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_parallel_scan_refuses_a_second_derivative():
    u, dl = (
        torch.randn(1, 2, 5, dtype=torch.float64, requires_grad=True),
        torch.rand(1, 2, 5, dtype=torch.float64),
    )
    y = selective_scan_parallel(
        u,
        dl,
        -torch.ones(2, 3, dtype=torch.float64),
        torch.randn(1, 3, 5, dtype=torch.float64),
        torch.randn(1, 3, 5, dtype=torch.float64),
    )
    (gu,) = torch.autograd.grad(y.square().sum(), u, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        gu.sum().backward()


@pytest.mark.parametrize("L", [1, 2, 7, 31, 32, 33, 64, 100, 1000, 1025, 4096])
@pytest.mark.parametrize("chunk", [None, 32, 5])
def test_linear_scan_matches_closed_form(L, chunk):
    g = torch.Generator().manual_seed(L)
    a_log = -torch.rand(3, L, generator=g, dtype=torch.float64) * 0.05
    x = torch.randn(3, L, generator=g, dtype=torch.float64)
    if L <= 1100:
        want = closed_form_states(a_log, x)
    else:  # O(L²) memory is too much: check the last 300 steps only
        want = None
    h = linear_scan(a_log.exp()[..., None], x[..., None], chunk=chunk)[..., 0]
    if want is not None:
        torch.testing.assert_close(h, want, rtol=1e-10, atol=1e-10)
    else:
        h_loop, out = torch.zeros(3, dtype=torch.float64), []
        for t in range(L):
            h_loop = a_log[:, t].exp() * h_loop + x[:, t]
            out.append(h_loop)
        torch.testing.assert_close(h, torch.stack(out, -1), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("L", [1, 2, 7, 64, 1000, 4096])
def test_parallel_equals_loop_float32(L):
    inp = make_inputs(b=1, d=2, N=2, L=L, G=None, seed=L)
    args = [inp[k] for k in ("u", "delta", "A", "B", "C")]
    kw = dict(
        D=inp["D"], z=inp["z"], delta_bias=inp["delta_bias"], delta_softplus=True, return_last_state=True
    )
    y1, h1 = selective_scan_ref(*args, **kw)
    y2, h2 = selective_scan_parallel(*args, **kw)
    torch.testing.assert_close(y2, y1, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(h2, h1, rtol=1e-4, atol=1e-5)


def test_extreme_decays_stay_finite():
    """Huge Δ|A| (decay underflows to 0) and tiny Δ (decay 1) over a long sequence: no inf, no nan, same as
    the loop."""
    L = 3000
    inp = make_inputs(b=1, d=2, N=2, L=L)
    delta = torch.where(torch.rand(1, 2, L) < 0.5, torch.full((1, 2, L), 80.0), torch.full((1, 2, L), -80.0))
    args = (inp["u"], delta, inp["A"] * 10, inp["B"], inp["C"])
    y1 = selective_scan_ref(*args, delta_softplus=True)
    y2 = selective_scan_parallel(*args, delta_softplus=True)
    assert torch.isfinite(y2).all()
    torch.testing.assert_close(y2, y1, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("fn", [selective_scan_ref, selective_scan_parallel])
def test_gradcheck(fn):
    inp = make_inputs(b=1, d=2, N=2, L=5, G=2, dtype=torch.float64)
    args = [inp[k].requires_grad_() for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]

    def f(u, dl, A, B, C, D, z, bias):
        return fn(u, dl, A, B, C, D=D, z=z, delta_bias=bias, delta_softplus=True)

    assert torch.autograd.gradcheck(f, args)


def test_parallel_gradients_equal_loop():
    inp = make_inputs(b=2, d=4, N=3, L=77, G=2)
    names = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
    grads = []
    for fn in (selective_scan_ref, selective_scan_parallel):
        ts = [inp[k].clone().requires_grad_() for k in names]
        y = fn(*ts[:5], D=ts[5], z=ts[6], delta_bias=ts[7], delta_softplus=True)
        (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
        grads.append([t.grad for t in ts])
    for g1, g2 in zip(*grads):
        torch.testing.assert_close(g2, g1, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fn", [selective_scan_ref, selective_scan_parallel])
@pytest.mark.parametrize("G", [None, 2, "fixed"])
def test_low_precision_is_float32_rounded_once(fn, G):
    """bf16/fp16 activations beside float32 weights: output and every gradient equal the float32 run's,
    rounded once."""
    inp = make_inputs(G=G, L=37)
    names = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
    for low in (torch.bfloat16, torch.float16):
        lo = {
            k: (
                v.to(low) if k in ("u", "delta", "z") or (k in ("B", "C") and G != "fixed") else v.clone()
            ).requires_grad_()
            for k, v in inp.items()
        }
        hi = {k: v.detach().float().requires_grad_() for k, v in lo.items()}
        y_lo, y_hi = fn(**lo, delta_softplus=True), fn(**hi, delta_softplus=True)
        assert y_lo.dtype == low and torch.equal(y_lo, y_hi.to(low))
        g = torch.randn(y_lo.shape).to(low)
        y_lo.backward(g)
        y_hi.backward(g.float())
        for k in names:
            assert lo[k].grad.dtype == lo[k].dtype and torch.equal(lo[k].grad, hi[k].grad.to(lo[k].dtype)), k


@pytest.mark.parametrize(
    "bad,msg",
    [
        (dict(u=torch.randn(2, 4)), "u must be"),
        (dict(delta=torch.randn(2, 4, 5)), "delta must be"),
        (dict(A=torch.randn(5, 3)), "A must be"),
        (dict(B=torch.randn(2, 3, 5)), "B must be"),
        (dict(C=torch.randn(2, 3, 3, 6)), "G=3"),
        (dict(D=torch.randn(3)), "D must be"),
        (dict(z=torch.randn(2, 4, 5)), "z must be"),
        (dict(delta_bias=torch.randn(4, 1)), "delta_bias must be"),
    ],
)
@pytest.mark.parametrize("fn", [selective_scan_ref, selective_scan_parallel])
def test_bad_shapes_raise(fn, bad, msg):
    inp = make_inputs()
    inp.update(bad)
    with pytest.raises(ValueError, match=msg):
        fn(
            inp["u"],
            inp["delta"],
            inp["A"],
            inp["B"],
            inp["C"],
            D=inp["D"],
            z=inp["z"],
            delta_bias=inp["delta_bias"],
        )


MUST = "must be a floating-point torch.Tensor (float16, bfloat16, float32 or float64), got"


@pytest.mark.parametrize(
    "bad,got",
    [
        (dict(u=torch.ones(2, 4, 6, dtype=torch.int64)), "u {} torch.int64"),
        (dict(A=torch.randn(4, 3, dtype=torch.complex64)), "A {} torch.complex64"),
        (dict(B=torch.randn(2, 3, 6).numpy()), "B {} numpy.ndarray"),
        (dict(C=[[0.0]]), "C {} list"),
        (dict(D=torch.ones(4, dtype=torch.int32)), "D {} torch.int32"),
        (dict(delta_bias=torch.ones(4, dtype=torch.bool)), "delta_bias {} torch.bool"),
    ],
)
@pytest.mark.parametrize("fn", [selective_scan_ref, selective_scan_parallel])
def test_non_float_inputs_raise_one_message(fn, bad, got):
    inp = make_inputs()
    inp.update(bad)
    with pytest.raises(TypeError) as e:
        fn(
            inp["u"],
            inp["delta"],
            inp["A"],
            inp["B"],
            inp["C"],
            D=inp["D"],
            z=inp["z"],
            delta_bias=inp["delta_bias"],
        )
    assert str(e.value) == f"{fn.__name__}: " + got.format(MUST)


# ---- cross-scan -------------------------------------------------------------------------------

SIZES = [(1, 1), (1, 5), (5, 1), (2, 2), (3, 5), (4, 3), (7, 7)]


def route_index(H, W):
    "Where each route reads from, as flat row-major pixel indices, built by walking the grid by hand."
    rows = [i * W + j for i in range(H) for j in range(W)]
    cols = [i * W + j for j in range(W) for i in range(H)]
    return [rows, cols, rows[::-1], cols[::-1]]


@pytest.mark.parametrize("H,W", SIZES)
def test_cross_scan_routes_are_the_hand_walked_permutations(H, W):
    x = torch.randn(2, 3, H, W)
    xs = cross_scan(x)
    assert xs.shape == (2, 4, 3, H * W)
    for k, idx in enumerate(route_index(H, W)):
        assert sorted(idx) == list(range(H * W))  # a permutation: every pixel exactly once
        torch.testing.assert_close(xs[:, k], x.flatten(2)[..., idx], rtol=0, atol=0)


@pytest.mark.parametrize("H,W", SIZES)
def test_cross_merge_is_adjoint(H, W):
    x, y = torch.randn(2, 3, H, W, dtype=torch.float64), torch.randn(2, 4, 3, H * W, dtype=torch.float64)
    torch.testing.assert_close((cross_scan(x) * y).sum(), (x * cross_merge(y, H, W)).sum())
    xr = x.requires_grad_()
    (cross_scan(xr) * y).sum().backward()
    torch.testing.assert_close(xr.grad, cross_merge(y, H, W))


def naive_cross_selective_scan(x, delta, A, B, C, D, bias):
    "Direction by direction, with explicit index lists and one 1-D scan each (float64 naive scan)."
    Bt, Dm, H, W = x.shape
    y = torch.zeros(Bt, Dm, H * W, dtype=torch.float64)
    for k, idx in enumerate(route_index(H, W)):

        def seq(t):
            return t.flatten(-2)[..., idx]

        yk, _ = naive_scan(
            seq(x),
            seq(delta[:, k]),
            A[k],
            seq(B[:, k]),
            seq(C[:, k]),
            D=D[k],
            delta_bias=bias[k],
            delta_softplus=True,
        )
        y[..., idx] += yk  # scatter back to the pixels it was read from
    return y.view(Bt, Dm, H, W)


@pytest.mark.parametrize("H,W", [(1, 1), (3, 5), (4, 1), (2, 3)])
@pytest.mark.parametrize("scan_fn", [None, selective_scan_parallel])
def test_cross_selective_scan_matches_naive(H, W, scan_fn):
    g = torch.Generator().manual_seed(H * 10 + W)
    Bt, Dm, N = 2, 3, 2

    def r(*s):
        return torch.randn(*s, generator=g)

    x, delta, A = r(Bt, Dm, H, W), r(Bt, 4, Dm, H, W), -torch.rand(4, Dm, N, generator=g)
    B, C, D, bias = r(Bt, 4, N, H, W), r(Bt, 4, N, H, W), r(4, Dm), r(4, Dm)
    y = cross_selective_scan_ref(x, delta, A, B, C, D=D, delta_bias=bias, scan_fn=scan_fn)
    assert y.shape == (Bt, Dm, H, W) and y.dtype == x.dtype
    torch.testing.assert_close(
        y.double(), naive_cross_selective_scan(x, delta, A, B, C, D, bias), rtol=1e-5, atol=1e-5
    )


def test_cross_selective_scan_gradcheck():
    g = torch.Generator().manual_seed(0)
    Bt, Dm, N, H, W = 1, 2, 2, 2, 3

    def r(*s):
        return torch.randn(*s, generator=g, dtype=torch.float64).requires_grad_()

    args = (
        r(Bt, Dm, H, W),
        r(Bt, 4, Dm, H, W),
        (-torch.rand(4, Dm, N, generator=g, dtype=torch.float64)).requires_grad_(),
        r(Bt, 4, N, H, W),
        r(Bt, 4, N, H, W),
        r(4, Dm),
        r(4, Dm),
    )
    for fn in (None, selective_scan_parallel):

        def f(x, dl, A, B, C, D, bias):
            return cross_selective_scan_ref(x, dl, A, B, C, D=D, delta_bias=bias, scan_fn=fn)

        assert torch.autograd.gradcheck(f, args)


@pytest.mark.parametrize("scan_fn", [None, selective_scan_parallel])
def test_cross_selective_scan_bf16_against_float64(scan_fn):
    """bf16 image inputs (float32 A, D, bias), L = 12·31 = 372: output and gradients within Mamba's bf16
    tolerances of float64."""
    g = torch.Generator().manual_seed(0)
    Bt, Dm, N, H, W = 2, 4, 8, 12, 31
    ins = dict(
        x=torch.randn(Bt, Dm, H, W, generator=g).bfloat16(),
        delta=(0.5 * torch.rand(Bt, 4, Dm, H, W, generator=g)).bfloat16(),
        A=-0.5 * torch.rand(4, Dm, N, generator=g),
        B=torch.randn(Bt, 4, N, H, W, generator=g).bfloat16(),
        C=torch.randn(Bt, 4, N, H, W, generator=g).bfloat16(),
        D=torch.randn(4, Dm, generator=g),
        delta_bias=0.5 * torch.rand(4, Dm, generator=g),
    )
    ins = {k: v.requires_grad_() for k, v in ins.items()}
    ref = {k: v.detach().double().requires_grad_() for k, v in ins.items()}
    y, y_ref = (
        cross_selective_scan_ref(**ins, scan_fn=scan_fn),
        cross_selective_scan_ref(**ref, scan_fn=scan_fn),
    )
    assert y.dtype == torch.bfloat16 and y_ref.dtype == torch.float64
    grad_out = torch.randn(y.shape, generator=g).bfloat16()
    y.backward(grad_out)
    y_ref.backward(grad_out.double())
    rtol, atol, w = 3e-2, 5e-2, 1e-3  # Mamba's bf16 tolerances; w for float32 weights
    tol = dict(
        x=(2 * rtol, 2 * atol),
        delta=(5 * rtol, 10 * atol),
        A=(w, 5 * w),
        B=(rtol, atol),
        C=(rtol, atol),
        D=(w, w),
        delta_bias=(w, w),
    )
    torch.testing.assert_close(y.double(), y_ref.detach(), rtol=rtol, atol=atol)
    for k, (r, a) in tol.items():
        torch.testing.assert_close(
            ins[k].grad.double(), ref[k].grad, rtol=r, atol=a, msg=lambda m: f"{k}: {m}"
        )


@pytest.mark.parametrize(
    "bad,msg",
    [
        (dict(x=torch.randn(2, 3, 4)), "x must be"),
        (dict(delta=torch.randn(2, 3, 3, 4, 5)), "delta must be"),
        (dict(A=torch.randn(3, 2)), "A must be"),
        (dict(B=torch.randn(2, 4, 2, 5, 4)), "B must be"),
        (dict(C=torch.randn(2, 4, 3, 4, 5)), "C must be"),
        (dict(D=torch.randn(3)), "D must be"),
        (dict(delta_bias=torch.randn(4, 2)), "delta_bias must be"),
    ],
)
def test_cross_selective_scan_bad_shapes(bad, msg):
    Bt, Dm, N, H, W = 2, 3, 2, 4, 5
    inp = dict(
        x=torch.randn(Bt, Dm, H, W),
        delta=torch.randn(Bt, 4, Dm, H, W),
        A=-torch.rand(4, Dm, N),
        B=torch.randn(Bt, 4, N, H, W),
        C=torch.randn(Bt, 4, N, H, W),
        D=torch.randn(4, Dm),
        delta_bias=torch.randn(4, Dm),
    )
    inp.update(bad)
    with pytest.raises(ValueError, match=msg):
        cross_selective_scan_ref(**inp)


@pytest.mark.parametrize("scan_fn", [None, selective_scan_parallel])
@pytest.mark.parametrize(
    "name,bad,got",
    [
        ("x", lambda t: t.long(), "torch.int64"),
        ("delta", lambda t: t.numpy(), "numpy.ndarray"),
        ("A", lambda t: t.int(), "torch.int32"),
        ("D", lambda t: t.to(torch.complex64), "torch.complex64"),
    ],
)
def test_cross_selective_scan_non_float_inputs(scan_fn, name, bad, got):
    Bt, Dm, N, H, W = 2, 3, 2, 4, 5
    inp = dict(
        x=torch.randn(Bt, Dm, H, W),
        delta=torch.randn(Bt, 4, Dm, H, W),
        A=-torch.rand(4, Dm, N),
        B=torch.randn(Bt, 4, N, H, W),
        C=torch.randn(Bt, 4, N, H, W),
        D=torch.randn(4, Dm),
        delta_bias=torch.randn(4, Dm),
    )
    inp[name] = bad(inp[name])
    with pytest.raises(TypeError) as e:
        cross_selective_scan_ref(**inp, scan_fn=scan_fn)
    assert str(e.value) == f"cross_selective_scan_ref: {name} {MUST} {got}"


def test_cross_merge_bad_shape():
    with pytest.raises(ValueError, match="H\\*W"):
        cross_merge(torch.randn(1, 4, 2, 12), 3, 5)


def _scan_inputs(b=2, d=3, N=4, L=64, seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g)

    A = -torch.rand(d, N, generator=g) - 0.1
    return dict(u=r(b, d, L), delta=r(b, d, L), A=A, B=r(b, N, L), C=r(b, N, L))


@pytest.mark.parametrize("scan", [selective_scan_ref, selective_scan_parallel])
@pytest.mark.parametrize("A_value,shown", [(30.0, "30"), (0.25, "0.25"), (float("inf"), "inf")])
def test_scans_refuse_positive_A(scan, A_value, shown):
    p = _scan_inputs()
    p["A"] = p["A"].clone()
    p["A"][1, 2] = A_value  # one bad entry among negative ones is enough
    with pytest.raises(ValueError) as e:
        scan(**p, delta_softplus=True)
    assert str(e.value) == f"{scan.__name__}: A must be negative (A = -exp(A_log)); got max(A) = {shown}"


@pytest.mark.parametrize("scan", [selective_scan_ref, selective_scan_parallel])
def test_nan_A_is_left_to_the_learner(scan):
    """NaN A means diverged weights: the scan returns NaN (the learner's non-finite-loss check names the
    divergence)."""
    p = _scan_inputs()
    p["A"] = p["A"].clone()
    p["A"][0, 0] = float("nan")
    assert scan(**p, delta_softplus=True).isnan().any()


def test_positive_A_would_be_nan_without_the_check():
    "What the check prevents: the same scan with the check bypassed returns non-finite outputs, silently."
    from unittest import mock

    import resvmamba.scan as S

    p = _scan_inputs(L=256)
    p["A"] = p["A"].abs() * 100
    with mock.patch.object(S, "require_negative_A", lambda *a: None):
        y = S.selective_scan_ref(**p, delta_softplus=True)
    assert not y.isfinite().all()


def test_zero_A_passes():
    p = _scan_inputs()
    p["A"] = torch.zeros_like(p["A"]) * -1.0  # -exp(A_log) rounds to -0.0 for A_log << 0
    torch.testing.assert_close(selective_scan_parallel(**p), selective_scan_ref(**p))


def test_cross_scan_refuses_positive_A():
    Bt, Dm, N, H, W = 2, 3, 2, 4, 5
    inp = dict(
        x=torch.randn(Bt, Dm, H, W),
        delta=torch.randn(Bt, 4, Dm, H, W),
        A=torch.rand(4, Dm, N) + 0.5,
        B=torch.randn(Bt, 4, N, H, W),
        C=torch.randn(Bt, 4, N, H, W),
    )
    want = r"^cross_selective_scan_ref: A must be negative \(A = -exp\(A_log\)\); got max\(A\) = 1\.\d"
    with pytest.raises(ValueError, match=want):
        cross_selective_scan_ref(**inp)


def test_sign_check_makes_no_graph_break_when_compiled():
    "Under torch.compile the check is skipped (max(A) would break the graph): fullgraph tracing runs."
    p = _scan_inputs(L=9)
    compiled = torch.compile(selective_scan_parallel, backend="eager", fullgraph=True)
    want = selective_scan_ref(**p, delta_softplus=True)
    torch.testing.assert_close(compiled(**p, delta_softplus=True), want)
