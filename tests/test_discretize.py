"""Checks of `resvmamba.ssm` and `resvmamba.discretize` against independent references.

Each reference takes another route than the code under test: SciPy's `cont2discrete` and `expm`, closed forms,
an adaptive ODE integrator, NumPy matrix powers, and a change of basis between the dense and diagonal paths.
"""

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from scipy.integrate import solve_ivp
from scipy.signal import cont2discrete

from resvmamba.discretize import (
    causal_conv,
    discretize_bilinear,
    discretize_euler,
    discretize_mamba,
    discretize_zoh,
    ssm_conv_kernel,
    ssm_recurrent,
)
from resvmamba.ssm import impulse_response, ssm_solve_pwc, step_response

f64 = torch.float64


def random_system(n, seed, stable_shift=2.0):
    "A random dense SISO system in float64 whose eigenvalues lie left of the imaginary axis (for this seed)."
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, n, generator=g, dtype=f64) - stable_shift * torch.eye(n, dtype=f64)
    B, C = torch.randn(n, generator=g, dtype=f64), torch.randn(n, generator=g, dtype=f64)
    return A, B, C


def scipy_zoh(A, B, d):
    "ZOH by SciPy's block matrix exponential, written out: expm([[A, B], [0, 0]] d)."
    n = A.shape[0]
    M = np.zeros((n + 1, n + 1))
    M[:n, :n] = A * d
    M[:n, n] = B * d
    E = scipy.linalg.expm(M)
    return E[:n, :n], E[:n, n]


@pytest.mark.parametrize("n", [1, 3, 6])
@pytest.mark.parametrize("d", [1e-4, 0.05, 0.7, 3.0])
def test_zoh_matches_scipy_expm_and_cont2discrete(n, d):
    A, B, C = random_system(n, seed=n)
    Ab, Bb = discretize_zoh(A, B, d)
    Ad, Bd = scipy_zoh(A.numpy(), B.numpy(), d)
    Ad2, Bd2, *_ = cont2discrete(
        (A.numpy(), B.numpy()[:, None], C.numpy()[None], np.zeros((1, 1))), d, method="zoh"
    )
    for ref_A, ref_B in [(Ad, Bd), (Ad2, Bd2[:, 0])]:
        np.testing.assert_allclose(Ab.numpy(), ref_A, rtol=0, atol=1e-12)
        np.testing.assert_allclose(Bb.numpy(), ref_B, rtol=0, atol=1e-12)


def test_zoh_matches_inverse_formula_when_A_invertible():
    "The paper's Bb = (dA)^-1 (exp(dA) - I) dB, evaluated with NumPy, where it is well conditioned."
    A, B, _ = random_system(4, seed=7)
    d = 0.4
    An = A.numpy()
    ref = np.linalg.solve(d * An, (scipy.linalg.expm(d * An) - np.eye(4)) @ (d * B.numpy()))
    np.testing.assert_allclose(discretize_zoh(A, B, d)[1].numpy(), ref, rtol=0, atol=1e-12)


def test_diagonal_zoh_closed_form_and_zero_eigenvalue():
    lam = torch.tensor([-3.0, -1e-9, 0.0, 1e-7, 0.5], dtype=f64)
    B = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0], dtype=f64)
    d = 0.2
    Ab, Bb = discretize_zoh(lam, B, d)
    # reference: math.expm1 on Python floats (the C library's), and the limit d*B at lambda = 0
    ref = [
        b * (math.expm1(lam_k * d) / lam_k if lam_k != 0 else d) for lam_k, b in zip(lam.tolist(), B.tolist())
    ]
    np.testing.assert_allclose(Bb.numpy(), ref, rtol=1e-15, atol=0)
    np.testing.assert_allclose(Ab.numpy(), np.exp(lam.numpy() * d), rtol=1e-15)
    assert Bb[2].item() == 3.0 * d


def test_zoh_gradients_finite_at_zero_eigenvalue():
    lam = torch.tensor([0.0, -1.0], dtype=f64, requires_grad=True)
    d = 0.3
    discretize_zoh(lam, torch.ones(2, dtype=f64), d)[1].sum().backward()
    # d/dlam (expm1(lam d)/lam) = d^2/2 at lam = 0; at lam = -1 it is (d e^{-d} + e^{-d} - 1)/1
    ref1 = (d * math.exp(-d) * -1 - math.expm1(-d)) / 1.0
    np.testing.assert_allclose(lam.grad.numpy(), [d * d / 2, ref1], rtol=1e-12)


def test_singular_dense_A_double_integrator():
    A = torch.tensor([[0.0, 1.0], [0.0, 0.0]], dtype=f64)
    B = torch.tensor([0.0, 1.0], dtype=f64)
    for d in [1e-3, 0.5, 10.0]:
        Ab, Bb = discretize_zoh(A, B, d)
        np.testing.assert_allclose(Ab.numpy(), [[1, d], [0, 1]], atol=1e-14 * max(1, d))
        np.testing.assert_allclose(Bb.numpy(), [d * d / 2, d], rtol=1e-14)
    # A = 0: Ab = I, Bb = d B
    Ab, Bb = discretize_zoh(torch.zeros(3, 3, dtype=f64), torch.ones(3, dtype=f64), 0.7)
    np.testing.assert_allclose(Ab.numpy(), np.eye(3), atol=0)
    np.testing.assert_allclose(Bb.numpy(), [0.7] * 3, rtol=1e-15)


@pytest.mark.parametrize("d", [1e-3, 0.1, 1.0, 4.0])
def test_zoh_recurrence_is_exact_for_piecewise_constant_input(d):
    "Recurrence with ZOH matrices equals the non-recursive continuous solution (superposed step responses)."
    A, B, C = random_system(3, seed=11)
    x = torch.randn(2, 30, dtype=f64, generator=torch.Generator().manual_seed(3))
    tk = d * torch.arange(1, 31, dtype=f64)
    h0 = torch.tensor([0.3, -0.2, 1.0], dtype=f64)
    y_rec = ssm_recurrent(*discretize_zoh(A, B, d), C, 0.4, x, h0=h0)
    y_cont = ssm_solve_pwc(A, B, C, 0.4, x, d, tk, h0=h0)[0]
    np.testing.assert_allclose(y_rec.numpy(), y_cont.numpy(), rtol=0, atol=1e-12)


def test_continuous_solver_matches_ode_integration():
    "ssm_solve_pwc against SciPy's DOP853 restarted at each knot, with tolerances near float64's limit."
    A, B, C = random_system(3, seed=5)
    L, d = 8, 0.6
    x = torch.randn(L, dtype=f64, generator=torch.Generator().manual_seed(9))
    tq = torch.linspace(0, L * d, 4 * L + 1, dtype=f64)
    _, h = ssm_solve_pwc(A, B, C, None, x, d, tq)
    An, Bn, t_np = A.numpy(), B.numpy(), tq.numpy()
    ref, state = [np.zeros(3)], np.zeros(3)
    for j in range(L):
        inside = t_np[(t_np > j * d) & (t_np <= (j + 1) * d)]
        sol = solve_ivp(
            lambda s, hh: An @ hh + Bn * x[j].item(),
            (j * d, (j + 1) * d),
            state,
            method="DOP853",
            t_eval=inside,
            rtol=1e-13,
            atol=1e-14,
        )
        ref += list(sol.y.T)
        state = sol.y[:, -1]
    np.testing.assert_allclose(h.numpy(), np.stack(ref), rtol=0, atol=1e-10)


def test_impulse_and_step_responses_closed_forms():
    t = torch.linspace(0, 6, 61, dtype=f64)
    tn = t.numpy()
    s, w = -0.4, 1.7
    A = torch.tensor([[s, -w], [w, s]], dtype=f64)
    e = torch.tensor([1.0, 0.0], dtype=f64)
    np.testing.assert_allclose(
        impulse_response(A, e, e, t).numpy(), np.exp(s * tn) * np.cos(w * tn), atol=1e-13
    )
    S = (np.exp(s * tn) * (s * np.cos(w * tn) + w * np.sin(w * tn)) - s) / (s * s + w * w)
    np.testing.assert_allclose(step_response(A, e, e, t).numpy(), S, atol=1e-13)
    lam = -torch.arange(1, 5, dtype=f64)
    one = torch.ones(4, dtype=f64)
    np.testing.assert_allclose(
        impulse_response(lam, one, one, t).numpy(), sum(np.exp(-k * tn) for k in range(1, 5)), atol=1e-13
    )


def test_dense_and_diagonal_paths_agree_under_change_of_basis():
    g = torch.Generator().manual_seed(2)
    lam = -torch.tensor([0.3, 1.0, 2.5, 6.0], dtype=f64)
    V = torch.randn(4, 4, generator=g, dtype=f64) + 2 * torch.eye(4, dtype=f64)
    Vi = torch.linalg.inv(V)
    A = V @ torch.diag(lam) @ Vi
    B, C = torch.randn(4, generator=g, dtype=f64), torch.randn(4, generator=g, dtype=f64)
    x = torch.randn(40, generator=g, dtype=f64)
    for fn in [discretize_zoh, discretize_euler, discretize_bilinear, discretize_mamba]:
        for d in [0.01, 0.3]:
            Ab_d, Bb_d = fn(A, B, d)
            Ab_l, Bb_l = fn(lam, Vi @ B, d)
            np.testing.assert_allclose(Ab_d.numpy(), (V @ torch.diag(Ab_l) @ Vi).numpy(), atol=1e-12)
            np.testing.assert_allclose(Bb_d.numpy(), (V @ Bb_l).numpy(), atol=1e-12)
            y_d = ssm_recurrent(Ab_d, Bb_d, C, 0.0, x)
            y_l = ssm_recurrent(Ab_l, Bb_l, C @ V, 0.0, x)
            np.testing.assert_allclose(y_d.numpy(), y_l.numpy(), atol=1e-11)


@pytest.mark.parametrize("method", ["euler", "bilinear"])
def test_euler_and_bilinear_match_cont2discrete(method):
    A, B, C = random_system(5, seed=13)
    fn = dict(euler=discretize_euler, bilinear=discretize_bilinear)[method]
    for d in [0.01, 0.25, 2.0]:
        Ad, Bd, *_ = cont2discrete(
            (A.numpy(), B.numpy()[:, None], C.numpy()[None], np.zeros((1, 1))), d, method=method
        )
        Ab, Bb = fn(A, B, d)
        np.testing.assert_allclose(Ab.numpy(), Ad, atol=1e-12)
        np.testing.assert_allclose(Bb.numpy(), Bd[:, 0], atol=1e-12)


def test_mamba_B_error_falls_as_delta_squared():
    "log-log slope of |dB - Bb_zoh| (ZOH by SciPy's expm) is 2, and the leading term is d^2 A B / 2."
    A, B, _ = random_system(3, seed=17)
    ds = np.logspace(-4, -1.5, 10)
    errs = [
        np.linalg.norm(discretize_mamba(A, B, d)[1].numpy() - scipy_zoh(A.numpy(), B.numpy(), d)[1])
        for d in ds
    ]
    slope = np.polyfit(np.log(ds), np.log(errs), 1)[0]
    assert abs(slope - 2) < 0.05, slope
    d = 1e-4
    lead = d * d / 2 * (A @ B).numpy()
    np.testing.assert_allclose(
        scipy_zoh(A.numpy(), B.numpy(), d)[1] - discretize_mamba(A, B, d)[1].numpy(), lead, rtol=1e-3
    )


def test_euler_diverges_beyond_two_over_lambda_while_zoh_and_bilinear_decay():
    lam, one = torch.tensor([-10.0], dtype=f64), torch.ones(1, dtype=f64)
    imp = torch.zeros(60, dtype=f64)
    imp[0] = 1
    for d in [0.19, 0.21, 0.5]:
        y = ssm_recurrent(*discretize_euler(lam, one, d), one, None, imp)
        np.testing.assert_allclose(y.numpy(), d * (1 - 10 * d) ** np.arange(60), rtol=1e-12)  # closed form
        grows = abs(1 - 10 * d) > 1
        assert (y[-1].abs() > 10 * d) if grows else (y[-1].abs() < 0.1 * d), (d, y[-1])  # y_0 = d
    for d in [0.21, 0.5, 5.0, 50.0]:
        for fn in [discretize_zoh, discretize_bilinear, discretize_mamba]:
            y = ssm_recurrent(*fn(lam, one, d), one, None, imp)
            Ab = fn(lam, one, d)[0]
            assert Ab.abs().item() < 1, (fn.__name__, d)
            assert (y.abs()[1:] <= y.abs()[:-1]).all(), (
                fn.__name__,
                d,
            )  # |y_k| never grows (bilinear: slowly, -0.92^k at d = 5)


@pytest.mark.parametrize("diag", [False, True])
def test_convolution_equals_recurrence_and_direct_sum(diag):
    g = torch.Generator().manual_seed(21)
    n, L = 4, 33
    A = -torch.rand(n, generator=g, dtype=f64) * 3 if diag else random_system(n, seed=21)[0]
    B, C = torch.randn(n, generator=g, dtype=f64), torch.randn(n, generator=g, dtype=f64)
    x = torch.randn(3, L, generator=g, dtype=f64)
    Ab, Bb = discretize_zoh(A, B, 0.2)
    K = ssm_conv_kernel(Ab, Bb, C, L)
    Abn = np.diag(Ab.numpy()) if diag else Ab.numpy()
    # direct O(L^2) sum with NumPy matrix powers: y_k = sum_j C Ab^(k-j) Bb x_j + D x_k
    Kn = np.array([C.numpy() @ np.linalg.matrix_power(Abn, k) @ Bb.numpy() for k in range(L)])
    np.testing.assert_allclose(K.numpy(), Kn, atol=1e-13)
    y_direct = np.stack(
        [[sum(Kn[k - j] * xr[j] for j in range(k + 1)) + 0.5 * xr[k] for k in range(L)] for xr in x.numpy()]
    )
    np.testing.assert_allclose(causal_conv(x, K, 0.5).numpy(), y_direct, atol=1e-12)
    np.testing.assert_allclose(ssm_recurrent(Ab, Bb, C, 0.5, x).numpy(), y_direct, atol=1e-12)


def test_per_step_recurrence_matches_explicit_loop():
    "A selective (time-varying) run against a plain Python loop over NumPy arrays."
    g = torch.Generator().manual_seed(4)
    d_, L, N = 3, 12, 4
    A = -torch.arange(1, N + 1, dtype=f64).repeat(d_, 1)  # (d, N)
    delta = torch.rand(d_, L, generator=g, dtype=f64)  # (d, L)
    Bs, Cs = torch.randn(L, N, generator=g, dtype=f64), torch.randn(L, N, generator=g, dtype=f64)
    x = torch.randn(d_, L, generator=g, dtype=f64)
    Ab, Bb = discretize_mamba(A[:, None, :], Bs, delta, diag=True)  # (d, L, N)
    y = ssm_recurrent(Ab, Bb, Cs, None, x, diag=True, per_step=True)
    ref = np.zeros((d_, L))
    for c in range(d_):
        h = np.zeros(N)
        for k in range(L):
            h = (
                np.exp(delta[c, k].item() * A[c].numpy()) * h
                + delta[c, k].item() * Bs[k].numpy() * x[c, k].item()
            )
            ref[c, k] = Cs[k].numpy() @ h
    np.testing.assert_allclose(y.numpy(), ref, atol=1e-13)


def test_per_step_with_constant_coefficients_equals_time_invariant_run():
    "per_step=True with the same Ab, Bb, C at every step reproduces the LTI recurrence, dense and diagonal."
    A, B, C = random_system(3, seed=8)
    x = torch.randn(2, 9, dtype=f64, generator=torch.Generator().manual_seed(1))
    for AA in [A, torch.diagonal(A)]:
        Ab, Bb = discretize_zoh(AA, B, 0.3)
        per_step = [v.expand(9, *v.shape) for v in (Ab, Bb, C)]  # time axis of length L = 9 in front
        y = ssm_recurrent(*per_step, 0.2, x, per_step=True)
        np.testing.assert_allclose(y.numpy(), ssm_recurrent(Ab, Bb, C, 0.2, x).numpy(), atol=1e-14)


def test_delta_broadcasting_shapes():
    A = -torch.arange(1, 5, dtype=f64).repeat(3, 1)  # (d=3, N=4)
    delta = torch.rand(2, 3, 7, dtype=f64)  # (b, d, L)
    for fn in [discretize_zoh, discretize_euler, discretize_bilinear, discretize_mamba]:
        Ab, Bb = fn(A[:, None, :], torch.ones(4, dtype=f64), delta, diag=True)
        assert Ab.shape == (2, 3, 7, 4) and Bb.shape == (2, 3, 7, 4)
        Ab, Bb = fn(torch.eye(4, dtype=f64) * -1, torch.ones(4, dtype=f64), delta)  # one dense A, many steps
        assert Ab.shape == (2, 3, 7, 4, 4) and Bb.shape == (2, 3, 7, 4)


def test_float32_stays_float32_and_python_delta_is_not_rounded():
    A, B = -torch.ones(3), torch.ones(3)
    for fn in [discretize_zoh, discretize_euler, discretize_bilinear, discretize_mamba]:
        assert all(t.dtype == torch.float32 for t in fn(A, B, 0.1))
    Bb = discretize_euler(A.double(), B.double(), 0.1)[1]
    assert Bb[0].item() == 0.1  # 0.1 reached float64 without a float32 detour


@pytest.mark.parametrize(
    "call, msg",
    [
        (
            lambda: discretize_zoh(torch.zeros(3, 4), torch.zeros(4), 0.1),
            "dense A must have shape (..., n, n)",
        ),
        (
            lambda: discretize_zoh(torch.zeros(3, 3), torch.zeros(4), 0.1),
            "B must have shape (..., n) with n=3",
        ),
        (
            lambda: discretize_euler(torch.zeros(3), torch.zeros(2), 0.1),
            "B must have shape (..., n) with n=3",
        ),
        (
            lambda: discretize_bilinear(torch.zeros(5, 3), torch.zeros(3), torch.ones(4), diag=True),
            "do not broadcast",
        ),
        (
            lambda: discretize_mamba(torch.zeros(5, 3), torch.zeros(3), torch.ones(2, 5, 6), diag=True),
            "do not broadcast",
        ),
        (
            lambda: ssm_recurrent(torch.eye(3), torch.ones(3), torch.ones(2), None, torch.ones(5)),
            "C must have shape (..., n) with n=3",
        ),
        (
            lambda: ssm_recurrent(
                torch.ones(3), torch.ones(3), torch.ones(3), None, torch.ones(5), per_step=True, diag=True
            ),
            "needs a time axis of length L=5",
        ),
        (
            lambda: ssm_conv_kernel(torch.eye(2), torch.ones(3), torch.ones(2), 4),
            "Bb must have shape (..., n) with n=2",
        ),
        (lambda: causal_conv(torch.ones(6), torch.ones(4)), "K needs at least L=6 taps"),
        (
            lambda: ssm_solve_pwc(
                torch.ones(2, 3), torch.ones(3), torch.ones(3), None, torch.ones(4), 0.1, torch.zeros(2)
            ),
            "dense A must have shape (..., n, n)",
        ),
        (
            lambda: impulse_response(torch.ones(2), torch.ones(2), torch.ones(2), torch.zeros(2, 2)),
            "t must be a 1-d tensor",
        ),
    ],
)
def test_bad_shapes_raise_clear_errors(call, msg):
    with pytest.raises(ValueError) as e:
        call()
    assert msg in str(e.value), str(e.value)
