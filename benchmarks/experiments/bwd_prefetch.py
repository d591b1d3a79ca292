"""Experiment: the library's backward kernel with the next chunk's loads issued before this chunk computes.

The kernel is the library's `_bwd_kernel`, edited as text here: the chunk's raw loads move into `_raw_loads`, the loop
carries the next chunk's raw tiles, and the casts, bias and softplus run on the carried tiles.
"""
import importlib.util, inspect, tempfile
import triton, torch
import resvmamba.triton_scan as ts

RAW = '''
@triton.jit
def _raw_loads(c, k: tl.constexpr, x_ptr, dt_ptr, B_ptr, C_ptr, dy_ptr, hs_ptr, dx_ptr, img, dt_row, bc_row, bk, d, dm, n,
               H, W, L, Dm, n_chunks, N: tl.constexpr, T: tl.constexpr):
    "The raw tiles of chunk c (all masked off when c < 0)."
    tt = tl.arange(0, T)
    t = c * T + tt
    tm = (t < L) & (c >= 0)
    p = _pixel(t, k, H, W, L)[:, None]
    m = tm[:, None] & dm[None, :]
    xr = tl.load(x_ptr + img + p, mask=m, other=0.0)
    vr = tl.load(dt_ptr + dt_row + p, mask=m, other=0.0)
    Br = tl.load(B_ptr + bc_row + p, mask=tm[:, None], other=0.0)
    Cr = tl.load(C_ptr + bc_row + p, mask=tm[:, None], other=0.0)
    dyr = tl.load(dy_ptr + img + p, mask=m, other=0.0)
    h0 = tl.load(hs_ptr + ((bk * n_chunks + c) * Dm + d[:, None]) * N + n[None, :], mask=dm[:, None] & (c >= 0), other=0.0)
    dxr = tl.load(dx_ptr + img + p, mask=m & (k > 0), other=0.0)
    return xr, vr, Br, Cr, dyr, h0, dxr
'''


def _edit(src):
    src = src.replace("def _bwd_kernel(", "def _bwd_prefetch_kernel(")
    a = src.index("            t = c * T + tt\n")
    b = src.index("            a = tl.exp2(dt[:, :, None] * A2[None, :, :])")
    new_loads = '''            xr, vr, Br, Cr, dyr, h0, dxr = nxt
            nxt = _raw_loads(c - 1, k, x_ptr, dt_ptr, B_ptr, C_ptr, dy_ptr, hs_ptr, dx_ptr, img, dt_row, bc_row, bk, d, dm, n,
                             H, W, L, Dm, n_chunks, N, T)
            t = c * T + tt
            tm = t < L
            p = _pixel(t, k, H, W, L)[:, None]
            m = tm[:, None] & dm[None, :]
            u = _to_acc(xr, ACC, PTX)
            v = _to_acc(vr, ACC, PTX)
            if HAS_BIAS: v = v + bias[None, :]
            if SOFTPLUS: dt = tl.where(m, _softplus(v), 0.0)
            else: dt = tl.where(m, v, 0.0)
            Bt, Ct = Br.to(ACC), Cr.to(ACC)
            dy = _to_acc(dyr, ACC, PTX)
            dxp = dx_ptr + img + p
            dx_before = dxr
'''
    src = src[:a] + new_loads + src[b:]
    loop = "        for ci in range(n_chunks):\n"
    assert loop in src
    src = src.replace(loop, '''        nxt = _raw_loads(n_chunks - 1, k, x_ptr, dt_ptr, B_ptr, C_ptr, dy_ptr, hs_ptr, dx_ptr, img, dt_row, bc_row, bk, d, dm, n,
                         H, W, L, Dm, n_chunks, N, T)
''' + loop)
    return src


def _load():
    src = inspect.getsource(ts._bwd_kernel.fn)
    mod_src = ("import triton, triton.language as tl\nfrom resvmamba.triton_scan import _pixel, _softplus, _to_acc, _first_order, _adjoint\n"
               + RAW + "\n\n" + _edit(src))
    f = tempfile.NamedTemporaryFile("w", suffix="_bwd_prefetch_kernel.py", delete=False); f.write(mod_src); f.close()
    spec = importlib.util.spec_from_file_location("_bwd_prefetch_kernel", f.name)
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod._bwd_prefetch_kernel, mod_src

_bwd_prefetch_kernel, SOURCE = _load()


def scan_bwd_prefetch(*args, **kwargs):
    "The library's `_scan_bwd` (same arguments) with the prefetching kernel swapped in."
    library_kernel, ts._bwd_kernel = ts._bwd_kernel, _bwd_prefetch_kernel
    try: return ts._scan_bwd(*args, **kwargs)
    finally: ts._bwd_kernel = library_kernel


def bench():
    "Backward alone, library against prefetching kernel, all four stages, fp32 and bf16 (on the GPU)."
    import sys, os, time
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    from triton.testing import do_bench
    from scan_bench import inputs, rel, STAGES, BATCH, N
    print(torch.cuda.get_device_name(), torch.__version__, triton.__version__, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), flush=True)
    for dtype in (torch.float32, torch.bfloat16):
        for Dm, H in STAGES:
            ins = inputs(BATCH, Dm, H, H, N, dtype)
            dy = torch.randn(BATCH, Dm, H, H, device="cuda", dtype=dtype)
            _, hs = ts._scan_fwd(*ins, True, True)
            err = max(rel(a, b) for a, b in zip(scan_bwd_prefetch(dy, hs, *ins, True), ts._scan_bwd(dy, hs, *ins, True)))
            t0 = do_bench(lambda: ts._scan_bwd(dy, hs, *ins, True), warmup=10, rep=60, return_mode="median")
            t1 = do_bench(lambda: scan_bwd_prefetch(dy, hs, *ins, True), warmup=10, rep=60, return_mode="median")
            t0b = do_bench(lambda: ts._scan_bwd(dy, hs, *ins, True), warmup=10, rep=60, return_mode="median")
            print(f"{str(dtype)[6:]:8s} {Dm:4d} {H:2d}^2 tiles {ts._tiles(N, H * H, True, interp=False)} library {t0:7.2f} / {t0b:7.2f} ms"
                  f" | prefetch {t1:7.2f} ms ({min(t0, t0b) / t1:4.2f}x) | err {err:.0e}", flush=True)
            del ins, dy, hs; torch.cuda.empty_cache()


if __name__ == "__main__" and "--bench" in __import__("sys").argv: bench()
elif __name__ == "__main__":   # against the library's backward on small odd shapes (CPU: TRITON_INTERPRET=1)
    def rel(a, b): return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0); ts.POISON = True
    for (Bsz, Dm, H, W, N) in [(2, 7, 3, 5, 4), (1, 5, 7, 2, 2), (2, 3, 1, 1, 1), (1, 9, 5, 3, 8)]:
        x = torch.randn(Bsz, Dm, H, W, device=dev); delta = torch.randn(Bsz, 4, Dm, H, W, device=dev) - 1
        A = -torch.exp(torch.randn(4, Dm, N, device=dev) * 0.5); B = torch.randn(Bsz, 4, N, H, W, device=dev); C = torch.randn_like(B)
        D = torch.randn(4, Dm, device=dev); bias = torch.randn(4, Dm, device=dev) * 0.5
        y, hs = ts._scan_fwd(x, delta, A, B, C, D, bias, True, True)
        dy = torch.randn_like(y)
        errs = [rel(a, b) for a, b in zip(scan_bwd_prefetch(dy, hs, x, delta, A, B, C, D, bias, True),
                                          ts._scan_bwd(dy, hs, x, delta, A, B, C, D, bias, True))]
        print((Bsz, Dm, H, W, N), "max rel err", f"{max(errs):.1e}", "PASS" if max(errs) < 1e-6 else "FAIL")
