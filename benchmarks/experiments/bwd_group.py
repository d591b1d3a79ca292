"""Experiment (not adopted, see RESULTS.md): the library's backward kernel with channel-block groups.

One program walks `n_blk` channel blocks of one image in turn and adds its dB, dC into one partial row per group, so
blocks can be small (BLOCK_D = 2, one warp: the sum over channels stays inside a warp) without more partials. The kernel
is the library's `_bwd_kernel`, edited as text here (the edits below), so the two never drift apart.
"""
import importlib.util, inspect, sys, tempfile, textwrap
import triton, torch
import resvmamba.triton_scan as ts


def _edit(src):
    "The library kernel's source, turned into the grouped kernel."
    src = src.replace("def _bwd_kernel(", "def _bwd_group_kernel(").replace("Bsz, Dm, H, W, L, n_chunks,", "Bsz, Dm, H, W, L, n_chunks, n_blk,")
    head = src[src.index("    db, b = tl.program_id(0)"):src.index("    for k in tl.static_range(4):")]
    body = src[src.index("    for k in tl.static_range(4):"):]
    body = body.replace("((db * Bsz * 4 + bk) * N", "((grp * Bsz * 4 + bk) * N")
    for name, val in (("dB", "tl.sum(g * dtu[:, :, None], 1)"), ("dC", "tl.sum(hh * dy[:, :, None], 1)")):
        old = f"tl.store({name}_ptr + part_row + p, {val}, mask=tm[:, None])"
        assert old in body, old
        body = body.replace(old, f"tl.store({name}_ptr + part_row + p, {val} + tl.load({name}_ptr + part_row + p, "
                                 f"mask=tm[:, None] & (blk > 0), other=0.0), mask=tm[:, None])")
    new_head = ("    grp, b = tl.program_id(0), tl.program_id(1)   # a group of n_blk channel blocks of one image\n"
                "    n, tt = tl.arange(0, N), tl.arange(0, T)\n"
                "    for blk in range(n_blk):\n"
                "        db = grp * n_blk + blk\n"
                "        d = db * BLOCK_D + tl.arange(0, BLOCK_D)\n"
                "        dm = d < Dm\n"
                "        img = b.to(tl.int64) * Dm * L + d[None, :] * L\n")
    return src[:src.index(head)] + new_head + textwrap.indent(body, "    ")


def _load():
    "Write the edited kernel to a file (Triton's JIT reads a function's source from its file) and import it."
    src = inspect.getsource(ts._bwd_kernel.fn)
    mod_src = ("import triton, triton.language as tl\nfrom resvmamba.triton_scan import _pixel, _load_dt, _to_acc, _first_order, _adjoint\n\n"
               + _edit(src))
    path = tempfile.NamedTemporaryFile("w", suffix="_bwd_group_kernel.py", delete=False); path.write(mod_src); path.close()
    spec = importlib.util.spec_from_file_location("_bwd_group_kernel", path.name)
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod._bwd_group_kernel

_bwd_group_kernel = _load()


def scan_bwd_group(dy, hs, x, delta, A, B, C, D, delta_bias, delta_softplus, tiles=(2, 16, 1), n_blk=8):
    "Like `resvmamba.triton_scan._scan_bwd`, with `n_blk` channel blocks per program."
    Bsz, Dm, H, W = x.shape
    N, L = A.shape[-1], H * W
    BD, T, nw = tiles
    acc, n_chunks = ts._acc(x), triton.cdiv(L, T)
    n_blocks = triton.cdiv(Dm, BD); n_blk = min(n_blk, n_blocks); n_groups = triton.cdiv(n_blocks, n_blk)
    dx, ddelta = ts._empty((Bsz, Dm, H, W), x, acc), ts._empty((Bsz, 4, Dm, H, W), x, acc)
    dA = ts._empty((Bsz, 4, Dm, N), x, acc)
    dB, dC = (ts._empty((n_groups, Bsz, 4, N, H, W), x, acc) for _ in range(2))
    dD, dbias = (ts._empty((Bsz, 4, Dm), x, acc) for _ in range(2))
    _bwd_group_kernel[(n_groups, Bsz)](
        x, delta, A, B, C, x if D is None else D, x if delta_bias is None else delta_bias, hs, dy.contiguous(),
        dx, ddelta, dA, dB, dC, dD, dbias, Bsz, Dm, H, W, L, n_chunks, n_blk,
        N=N, BLOCK_D=BD, T=T, HAS_D=D is not None, HAS_BIAS=delta_bias is not None,
        SOFTPLUS=bool(delta_softplus), ACC=ts._tl_dtype(acc), PTX=not ts._interpreting(), num_warps=nw)
    return dx, ddelta, dA.sum(0), dB.sum(0), dC.sum(0), dD.sum(0), dbias.sum(0)


if __name__ == "__main__":   # check against the library's backward on small odd shapes (CPU: TRITON_INTERPRET=1)
    def rel(a, b): return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0); ts.POISON = True
    for (Bsz, Dm, H, W, N, tiles, nb) in [(2, 7, 3, 5, 4, (2, 8, 1), 2), (1, 5, 7, 2, 2, (2, 8, 1), 3), (2, 3, 1, 1, 1, (2, 8, 1), 4),
                                          (1, 9, 5, 3, 8, (4, 8, 2), 2)]:
        x = torch.randn(Bsz, Dm, H, W, device=dev); delta = torch.randn(Bsz, 4, Dm, H, W, device=dev) - 1
        A = -torch.exp(torch.randn(4, Dm, N, device=dev) * 0.5); B = torch.randn(Bsz, 4, N, H, W, device=dev); C = torch.randn_like(B)
        D = torch.randn(4, Dm, device=dev); bias = torch.randn(4, Dm, device=dev) * 0.5
        y, hs = ts._scan_fwd(x, delta, A, B, C, D, bias, True, True, tiles=(2, tiles[1], 1))
        dy = torch.randn_like(y)
        ref = ts._scan_bwd(dy, hs, x, delta, A, B, C, D, bias, True, tiles=tiles)
        new = scan_bwd_group(dy, hs, x, delta, A, B, C, D, bias, True, tiles=tiles, n_blk=nb)
        errs = [rel(a, b) for a, b in zip(new, ref)]
        print((Bsz, Dm, H, W, N), tiles, nb, "max rel err", f"{max(errs):.1e}", "PASS" if max(errs) < 1e-6 else "FAIL")
