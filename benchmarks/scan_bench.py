"""Benchmark and GPU check of the fused cross-scan selective scan (chapter 04).

    PYTHONPATH=. python benchmarks/scan_bench.py --check --bench --json benchmarks/scan_bench.json

--check  compares the kernel with chapter 03's reference on the GPU at the four stage shapes (small batch:
         the PyTorch references materialise (B, 4*Dm, L, N) tensors), outputs and all seven gradients,
         float32 and bfloat16 (and float16), checks that every output element is written and that two runs
         agree bitwise.
--sweep  times a few tile shapes (BLOCK_D, T, num_warps) for the forward and the backward.
--bench  times, for the four stage shapes of VMamba-S at 224^2 and batch 128 (N=16), forward and
         forward+backward in float32 and bfloat16, the kernel with both route layouts side by side (column
         routes through transposed copies, `CONTIG=True`, and walking the image, `CONTIG=False`), interleaved
         twice; the backward alone at two tiles; rows {Dm, H, W, dtype, pass, ms, official_ms, ...} go to
         --json, with official_ms from ../shared/ANCHORS.md for the GPU it ran on. --unfused also times the
         unfused PyTorch path cross_scan -> selective_scan_parallel -> cross_merge at the largest batch that
         fits, scaled to 128.
Times are medians of triton.testing.do_bench (CUDA events); bandwidth is for the fused operation's minimum
bytes (each input read once, each output written once) against a measured device-to-device copy.
"""

import argparse
import json
import subprocess
import sys
import time

import torch
import triton
from triton.testing import do_bench

import resvmamba.triton_scan as ts
from resvmamba.cross_scan import cross_selective_scan_ref
from resvmamba.scan import selective_scan_parallel
from resvmamba.triton_scan import cross_selective_scan_triton

STAGES = [(192, 56), (384, 28), (768, 14), (1536, 7)]  # (Dm, H=W) of VMamba-S's four stages at 224^2
BATCH, N = 128, 16


def inputs(Bsz, Dm, H, W, N, dtype, device="cuda", seed=0, param_dtype=torch.float32):
    "Random inputs in the model's ranges: Δ before softplus around -4..0, A = -exp(.), B, C ~ N(0,1)."
    g = torch.Generator(device=device).manual_seed(seed)

    def r(*s):
        return torch.randn(*s, device=device, generator=g)

    x = r(Bsz, Dm, H, W).to(dtype)
    delta = (r(Bsz, 4, Dm, H, W) - 2).to(dtype)
    A = -torch.exp(r(4, Dm, N) * 0.5).to(param_dtype)
    B, C = r(Bsz, 4, N, H, W).to(dtype), r(Bsz, 4, N, H, W).to(dtype)
    D, bias = r(4, Dm).to(param_dtype), (r(4, Dm) * 0.5).to(param_dtype)
    return [x, delta, A, B, C, D, bias]


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def grads(y, ins, dy):
    "Gradients of <y, dy>; zeros for inputs the graph never used (A on a 1x1 image)."
    gs = torch.autograd.grad(y, ins, dy, allow_unused=True)
    return [torch.zeros_like(t) if g is None else g for g, t in zip(gs, ins)]


def check(log, quick=False):
    "Kernel vs reference on the GPU, outputs and gradients; returns True when every check passes."
    ok = True
    ts.POISON = True
    cases = [
        (2, 192, 56, 56),
        (2, 384, 28, 28),
        (2, 768, 14, 14),
        (2, 1536, 7, 7),
        (3, 40, 75, 13),
        (2, 33, 1, 1),
        (1, 24, 9, 15),
    ]
    if quick:
        cases = [(1, 192, 56, 56), (3, 40, 75, 13), (2, 33, 1, 1), (2, 40, 75, 13)]
    for Ns in (16,) if quick else (16, 4, 1):
        for Bsz, Dm, H, W in cases if Ns == 16 else cases[4:]:
            base = inputs(Bsz, Dm, H, W, Ns, torch.float32, seed=Bsz * Dm + H + Ns)
            ref_in = [t.double().requires_grad_() for t in base]
            yr = cross_selective_scan_ref(*ref_in, scan_fn=selective_scan_parallel)
            dy = torch.randn_like(yr)
            gr = grads(yr, ref_in, dy)
            for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 1e-2), (torch.float16, 1e-2)):
                if dtype == torch.float16 and Ns != 16:
                    continue
                ins = [t.to(dtype) if i in (0, 1, 3, 4) else t.clone() for i, t in enumerate(base)]
                ins = [t.requires_grad_() for t in ins]
                y = cross_selective_scan_triton(*ins)
                g = torch.autograd.grad(y, ins, dy.to(dtype))
                # for half inputs the reference sees the same rounded inputs, in float64
                if dtype != torch.float32:
                    rin = [t.detach().double().requires_grad_() for t in ins]
                    yr2 = cross_selective_scan_ref(*rin, scan_fn=selective_scan_parallel)
                    gr2 = grads(yr2, rin, dy.to(dtype).double())
                else:
                    yr2, gr2 = yr, gr
                errs = [rel(y, yr2)] + [rel(a, b) for a, b in zip(g, gr2)]
                finite = bool(torch.isfinite(y).all()) and all(bool(torch.isfinite(a).all()) for a in g)
                y2 = cross_selective_scan_triton(*ins)
                g2 = torch.autograd.grad(y2, ins, dy.to(dtype))
                same = torch.equal(y, y2) and all(torch.equal(a, b) for a, b in zip(g, g2))
                # A's gradient is 0 on 1x1 images (h_{t-1} = 0): skip its relative error there
                good = (
                    finite
                    and same
                    and all(e < tol for i, e in enumerate(errs) if not (H * W == 1 and i == 3))
                )
                ok &= good
                log(
                    f"check N={Ns:2d} B={Bsz} Dm={Dm:4d} {H}x{W} {str(dtype)[6:]:8s} y {errs[0]:.1e} grads "
                    + " ".join(
                        f"{n}={e:.1e}" for n, e in zip(["x", "dt", "A", "B", "C", "D", "bias"], errs[1:])
                    )
                    + f" finite={finite} deterministic={same} {'PASS' if good else 'FAIL'}"
                )
    # an independent route: the sequential loop of chapter 02 on one stage-4 image
    base = inputs(1, 1536, 7, 7, 16, torch.float32, seed=7)
    e = rel(cross_selective_scan_triton(*base), cross_selective_scan_ref(*[t.double() for t in base]))
    ok &= e < 1e-5
    log(
        f"check vs sequential selective_scan_ref (1, 1536, 7x7, fp32): {e:.1e} "
        f"{'PASS' if e < 1e-5 else 'FAIL'}"
    )
    # torch.compile of a surrounding function, under autocast(bfloat16), forward and backward
    try:
        base = [t.requires_grad_() for t in inputs(2, 48, 9, 11, 16, torch.float32)]
        f = torch.compile(lambda *a: 2 * cross_selective_scan_triton(*a) + 1)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y = f(*base)
        y.float().sum().backward()
        e = rel((y - 1) / 2, cross_selective_scan_ref(*[t.detach().double() for t in base]))
        good = e < 1e-2 and all(t.grad is not None and bool(torch.isfinite(t.grad).all()) for t in base)
    except Exception as ex:
        good, e = False, repr(ex)[:300]
    ok &= good
    log(f"check torch.compile + autocast(bf16), fwd+bwd: rel err {e} {'PASS' if good else 'FAIL'}")
    ts.POISON = False
    return ok


def copy_bandwidth():
    "Device-to-device copy bandwidth in bytes/s (bytes read + bytes written), median of a 2 GiB copy."
    a = torch.empty(2**29, device="cuda")
    b = torch.empty_like(a)
    ms = do_bench(lambda: b.copy_(a), warmup=50, rep=300, return_mode="median")
    return 2 * a.numel() * 4 / (ms * 1e-3)


def sm_clock_hz():
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=clocks.max.sm", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
        ).stdout.split()[0]
        return float(out) * 1e6
    except Exception:
        return 1.98e9


def floors(Bsz, Dm, H, W, N, dtype, bw, exp_rate, backward):
    "(exp floor ms, memory floor ms, minimum bytes) of forward or forward+backward."
    L, es = H * W, torch.tensor([], dtype=dtype).element_size()
    # x, Δ, B, C in; y out
    fwd_bytes = es * (Bsz * Dm * L + Bsz * 4 * Dm * L + 2 * Bsz * 4 * N * L + Bsz * Dm * L)
    exps = Bsz * 4 * Dm * L * N
    if backward:  # backward reads x, Δ, B, C, dy and writes dx, dΔ, dB, dC; the decays are needed again
        nbytes, exps = 2 * fwd_bytes + es * (2 * Bsz * 4 * N * L + Bsz * Dm * L), 2 * exps
    else:
        nbytes = fwd_bytes
    return exps / exp_rate * 1e3, nbytes / bw * 1e3, nbytes


def timed(fn, backward, ins):
    if backward:
        y0 = fn(*ins)
        dy = torch.randn_like(y0)
        del y0

        def run():
            return torch.autograd.grad(fn(*ins), ins, dy)
    else:

        def run():
            return fn(*ins)

    with torch.no_grad() if not backward else torch.enable_grad():
        return do_bench(run, warmup=25, rep=200, return_mode="median")


def unfused(x, delta, A, B, C, D, bias):
    return cross_selective_scan_ref(x, delta, A, B, C, D, bias, True, scan_fn=selective_scan_parallel)


def time_unfused(fn, Dm, H, dtype, backward, log):
    "Time at the largest batch that fits, scaled to BATCH; returns (ms at BATCH, batch used) or (nan, 0)."
    for b in (16, 8, 4, 2, 1):
        try:
            ins = [t.requires_grad_(backward) for t in inputs(b, Dm, H, H, N, dtype)]
            ms = timed(fn, backward, ins)
            del ins
            torch.cuda.empty_cache()
            return ms * BATCH / b, b
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
    return float("nan"), 0


def sweep(log, fwd_tiles, bwd_tiles):
    for Dm, H in (STAGES[0], STAGES[3]):
        ins = inputs(BATCH, Dm, H, H, N, torch.float32)
        for t in fwd_tiles:
            ms = do_bench(
                lambda: ts._scan_fwd(*ins, True, False, tiles=t), warmup=10, rep=50, return_mode="median"
            )
            log(f"sweep fwd Dm={Dm} {H}x{H} tiles={t}: {ms:.3f} ms")
        dy = torch.randn(BATCH, Dm, H, H, device="cuda")
        for t in bwd_tiles:
            _, hs = ts._scan_fwd(*ins, True, True, tiles=(4, t[1], 4))
            ms = do_bench(
                lambda: ts._scan_bwd(dy, hs, *ins, True, tiles=t), warmup=10, rep=50, return_mode="median"
            )
            log(f"sweep bwd Dm={Dm} {H}x{H} tiles={t}: {ms:.3f} ms")
            hs = None  # free the checkpoints before the next tile makes its own
        ins = None  # and the stage's inputs before the next stage's
        torch.cuda.empty_cache()


# ../shared/ANCHORS.md, H200 row: (fwd, fwd+bwd) ms of VMamba's official pipeline, batch 128, N = 16
OFFICIAL_H200 = {
    (192, "float32"): (14.83, 57.65),
    (192, "bfloat16"): (13.59, 58.64),
    (384, "float32"): (5.87, 22.92),
    (384, "bfloat16"): (5.85, 21.92),
    (768, "float32"): (3.17, 10.63),
    (768, "bfloat16"): (3.23, 12.19),
    (1536, "float32"): (3.89, 11.56),
    (1536, "bfloat16"): (3.87, 12.19),
}
# ../shared/ANCHORS.md, H100 row of 2026-12-07 (the official pipeline in the same run as the library)
OFFICIAL_H100 = {
    (192, "float32"): (15.59, 62.37),
    (192, "bfloat16"): (14.66, 63.72),
    (384, "float32"): (6.02, 24.47),
    (384, "bfloat16"): (6.00, 22.40),
    (768, "float32"): (3.21, 10.97),
    (768, "bfloat16"): (3.25, 12.36),
    (1536, "float32"): (3.92, 11.63),
    (1536, "bfloat16"): (3.88, 12.24),
}


def bwd_alone(ins, tiles, contig):
    "Backward kernel alone (ms) at the given tile, from checkpoints made for its chunk length."
    _, hs = ts._scan_fwd(
        *ins, True, True, tiles=(max(1, 128 // N), tiles[1], 4), t_save=tiles[1], contig=contig
    )
    dy = torch.randn_like(ins[0], dtype=torch.float32)
    ms = do_bench(
        lambda: ts._scan_bwd(dy, hs, *ins, True, tiles=tiles, contig=contig),
        warmup=10,
        rep=100,
        return_mode="median",
    )
    return ms


def layouts_agree(ins):
    """Largest relative difference between the two route layouts over y and the seven gradients (same inputs,
    same dy)."""
    outs = []
    for contig in (True, False):
        ts.CONTIG = contig
        xs = [t.detach().requires_grad_() for t in ins]
        y = cross_selective_scan_triton(*xs)
        dy = torch.randn(
            y.shape, device=y.device, generator=torch.Generator(device=y.device).manual_seed(1)
        ).to(y.dtype)
        outs.append([y] + list(torch.autograd.grad(y, xs, dy)))
    ts.CONTIG = None
    return max(rel(a, b) for a, b in zip(*outs))


def bench(log, compile_unfused, unfused_too=False, bwd_tiles=((8, 16, 4), (4, 8, 1))):
    "Kernel times, both route layouts side by side (contiguous copies / walking the image), and the floors."
    bw, clock = copy_bandwidth(), sm_clock_hz()
    props = torch.cuda.get_device_properties(0)
    exp_rate = 16 * props.multi_processor_count * clock
    official = OFFICIAL_H200 if "H200" in props.name else OFFICIAL_H100
    log(
        f"{props.name}: copy bandwidth {bw / 1e12:.2f} TB/s, "
        f"{props.multi_processor_count} SMs at {clock / 1e9:.2f} GHz: "
        f"{exp_rate / 1e12:.2f} T exp/s"
    )
    comp = torch.compile(unfused) if compile_unfused else None
    rows, default = [], ts.CONTIG
    for dtype in (torch.float32, torch.bfloat16):
        for Dm, H in STAGES:
            dname = str(dtype)[6:]
            ins = inputs(BATCH, Dm, H, H, N, dtype)
            bwd = {}
            for tiles in bwd_tiles:
                bwd[(True, tiles)] = bwd_alone(ins, tiles, True)
            agree = layouts_agree(ins)
            for backward in (False, True):
                for t in ins:
                    t.requires_grad_(backward)
                ms = {}
                for contig in (
                    True,
                    False,
                    None,
                    True,
                    False,
                    None,
                ):  # interleaved twice: the spread shows in the log
                    ts.CONTIG = contig
                    ms.setdefault(contig, []).append(timed(cross_selective_scan_triton, backward, ins))
                ts.CONTIG = default
                u_ms, u_b = (
                    time_unfused(unfused, Dm, H, dtype, backward, log) if unfused_too else (float("nan"), 0)
                )
                c_ms, c_b = time_unfused(comp, Dm, H, dtype, backward, log) if comp else (float("nan"), 0)
                fe, fm, nbytes = floors(BATCH, Dm, H, H, N, dtype, bw, exp_rate, backward)
                k_ms = min(ms[None])
                row = {
                    "Dm": Dm,
                    "H": H,
                    "W": H,
                    "dtype": dname,
                    "pass": "fwd+bwd" if backward else "fwd",
                    "ms": k_ms,
                    "official_ms": official[(Dm, dname)][1 if backward else 0],
                    "contiguous_ms": min(ms[True]),
                    "image_ms": min(ms[False]),
                    "all_ms": {str(k): v for k, v in ms.items()},
                    "unfused_ms": u_ms,
                    "unfused_batch": u_b,
                    "compiled_unfused_ms": c_ms,
                    "exp_floor_ms": fe,
                    "mem_floor_ms": fm,
                    "min_bytes": nbytes,
                }
                row["layouts_rel_diff"] = agree
                if backward:
                    row["bwd_alone_ms"] = {
                        f"{'contiguous' if c else 'image'} {t}": v for (c, t), v in bwd.items()
                    }
                rows.append(row)
                log(
                    f"{dname:8s} Dm={Dm:4d} {H:2d}^2 {row['pass']:7s} "
                    f"contiguous {ms[True][0]:7.3f}/{ms[True][1]:7.3f} | "
                    f"image {ms[False][0]:7.3f}/{ms[False][1]:7.3f} ms "
                    f"({min(ms[False]) / min(ms[True]):.2f}x) | "
                    f"official {row['official_ms']} ({row['official_ms'] / k_ms:.2f}x) | "
                    f"floor {max(fe, fm):.3f} | layouts differ by {agree:.1e}"
                    + (
                        " | bwd alone " + ", ".join(f"{k}: {v:.2f}" for k, v in row["bwd_alone_ms"].items())
                        if backward
                        else ""
                    )
                )
            del ins
            torch.cuda.empty_cache()
    return dict(
        gpu=props.name,
        driver=subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
        )
        .stdout.strip()
        .splitlines()[0],
        torch=torch.__version__,
        triton=triton.__version__,
        date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        copy_TBps=bw / 1e12,
        sm_clock_GHz=clock / 1e9,
        sms=props.multi_processor_count,
        contiguous={H: (ts._contiguous(H * H, False), ts._contiguous(H * H, True)) for _, H in STAGES},
        tiles_fwd={H: ts._tiles(N, H * H, interp=False) for _, H in STAGES},
        tiles_bwd={H: ts._tiles(N, H * H, True, interp=False) for _, H in STAGES},
        rows=rows,
    )


def table(res):
    "The short table printed last: ms per stage, both layouts, the official time and the ratio."
    out = [
        f"{res['gpu']} driver {res['driver']} torch {res['torch']} triton {res['triton']} {res['date']}",
        f"{'dtype':8s} {'stage':>9s} {'pass':7s} {'contig':>8s} {'image':>8s} "
        f"{'official':>8s} {'off/lib':>7s}",
    ]
    for r in res["rows"]:
        out.append(
            f"{r['dtype']:8s} {r['Dm']:4d} {r['H']:2d}^2 {r['pass']:7s} "
            f"{r['contiguous_ms']:8.2f} {r['image_ms']:8.2f} "
            f"{r['official_ms']:8.2f} {r['official_ms'] / r['ms']:7.2f}"
        )
    return "\n".join(out)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--check", action="store_true")
    p.add_argument("--sweep", action="store_true")
    p.add_argument("--bench", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--unfused", action="store_true", help="also time the unfused PyTorch path (minutes)")
    p.add_argument("--json", default=None)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--fwd-tiles", default="8,16,4;8,32,4;4,16,2;4,32,2;16,16,8;8,8,4;2,32,1;4,64,2")
    p.add_argument("--bwd-tiles", default="8,16,4;4,16,2;8,8,4;16,8,8;4,8,2;8,32,4;2,16,1")
    a = p.parse_args()

    def log(s):
        return print(s, flush=True)

    def tiles(s):
        return [tuple(int(v) for v in c.split(",")) for c in s.split(";")]

    if a.sweep:
        sweep(log, tiles(a.fwd_tiles), tiles(a.bwd_tiles))
    res = None
    if a.bench:  # timings first, checks after (the checks poison outputs with NaN fills, which cost time)
        res = bench(log, a.compile, a.unfused)
        if a.json:
            json.dump(res, open(a.json, "w"), indent=1)
    ok = True
    if a.check:
        for contig in (True,) if a.quick else (True, False):
            ts.CONTIG = contig
            log(f"-- checks with contiguous routes {contig}")
            ok &= check(log, a.quick)
        ts.CONTIG = None
    if res is not None:
        res["check_passed"] = ok if a.check else None
        if a.json:
            json.dump(res, open(a.json, "w"), indent=1)
        log(table(res))
    log(f"ALL CHECKS {'PASSED' if ok else 'FAILED'}")
    sys.exit(0 if ok else 1)
