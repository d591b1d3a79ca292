"""Fewer states, or more channel blocks, per program: two designs for the latency-bound backward, timed beside
the library.

*Fewer states.* The scan is separable in the state index n: y = Σ_n C_n h_n + D x, and every gradient is
either per-n (dA, dB, dC) or a sum over n (dx, dΔ, the Δ bias) plus the D terms. So running the library's
own kernels on N/G states at a time, with D in the first group only, and adding the groups' y, dx, dΔ and
bias gradients gives the same result as one launch on all N. A group's tile holds N/G states per channel, so
a thread carries fewer registers (the backward's one-warp tile holds 240 at N = 16) and an SM holds more
warps, or a tile holds more channels (fewer dB, dC partials).

*More channel blocks.* The backward's `blocks` argument lets one program walk J channel blocks one after
another, adding their dB, dC shares into one partial row: J times fewer partials written and summed, the
same registers.

    PYTHONPATH=. python benchmarks/state_split_bench.py --json OUT.json            # GPU: time and check
    TRITON_INTERPRET=1 PYTHONPATH=. python benchmarks/state_split_bench.py --check-only   # CPU: check only

Variants: (G, backward tile (BLOCK_D, T, warps), J) in VARIANTS; the forward keeps the library's tile for
N/G. Rows: stage, dtype, ms of forward+backward (and forward) of the library and of each variant, the
largest relative difference of y and the seven gradients from the library's.
"""

import argparse
import datetime
import json
import platform

import torch
from scan_bench import inputs, rel  # this folder is on the path when run as a script

import resvmamba.triton_scan as ts
from resvmamba.triton_scan import cross_selective_scan_triton

STAGES = [(192, 56), (384, 28), (768, 14), (1536, 7)]
BATCH, N = 128, 16
VARIANTS = [  # (groups, backward tile, channel blocks a program); the library is (1, (4, 8, 1), 1) at N = 16
    (2, (8, 8, 1), 1),  # as many states a thread as the library, twice the channels: half the dB, dC partials
    (2, (4, 8, 1), 1),  # half the states a thread
    (4, (8, 8, 1), 1),
    (4, (4, 8, 1), 1),  # a quarter
    (1, (8, 8, 2), 1),  # two warps, 8 channels: half the partials, the channel sums across warps
    (1, (4, 8, 1), 2),  # the library's tile, 2, 4 or 8 channel blocks a program: as many times fewer partials
    (1, (4, 8, 1), 4),
    (1, (4, 8, 1), 8),
    (2, (4, 8, 1), 4),
]


def state_group(A, B, C, D, g, n):
    "Group g's A, B, C (states g*n .. g*n+n-1) and D (the skip term belongs to the first group only)."
    s = slice(g * n, (g + 1) * n)
    return A[:, :, s].contiguous(), B[:, :, s].contiguous(), C[:, :, s].contiguous(), D if g == 0 else None


def split_scan(G, bwd_tiles, blocks=1):
    """The four-route scan as G launches of the library's kernels on N/G states each (an autograd Function),
    the backward's programs walking `blocks` channel blocks each."""

    class StateSplit(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, delta, A, B, C, D, bias):
            n = A.shape[-1] // G
            y, states = 0, []
            T = None if bwd_tiles is None else bwd_tiles[1]
            for g in range(G):
                yg, hs = ts._scan_fwd(x, delta, *state_group(A, B, C, D, g, n), bias, True, True, t_save=T)
                y = y + yg
                states.append(hs)
            ctx.save_for_backward(x, delta, A, B, C, D, bias, *states)
            return y.to(x.dtype)

        @staticmethod
        def backward(ctx, dy):
            x, delta, A, B, C, D, bias, *states = ctx.saved_tensors
            n = A.shape[-1] // G
            dx = ddelta = dbias = 0
            dA, dB, dC, dD = [], [], [], None
            for g in range(G):
                gx, gdelta, gA, gB, gC, gD, gbias = ts._scan_bwd(
                    dy,
                    states[g],
                    x,
                    delta,
                    *state_group(A, B, C, D, g, n),
                    bias,
                    True,
                    bwd_tiles,
                    blocks=blocks,
                )
                dx, ddelta, dbias = dx + gx, ddelta + gdelta, dbias + gbias
                dA.append(gA)
                dB.append(gB)
                dC.append(gC)
                if g == 0:
                    dD = gD  # D's gradient comes from the group that carries D
            grads = (dx, ddelta, torch.cat(dA, -1), torch.cat(dB, 2), torch.cat(dC, 2), dD, dbias)
            return tuple(gr.to(t.dtype) for gr, t in zip(grads, (x, delta, A, B, C, D, bias)))

    return lambda *ins: StateSplit.apply(*ins)


def outputs(fn, ins, dy):
    xs = [t.detach().requires_grad_() for t in ins]
    y = fn(*xs)
    return [y] + list(torch.autograd.grad(y, xs, dy))


def max_rel(fn, ins):
    "Largest relative difference of y and the seven gradients from the library's, same inputs and dy."
    x = ins[0]
    dy = torch.randn(x.shape, generator=torch.Generator().manual_seed(1)).to(x.device, x.dtype)
    ref, got = outputs(cross_selective_scan_triton, ins, dy), outputs(fn, ins, dy)
    return max(rel(a, b) for a, b in zip(got, ref))


def check_only():
    "CPU (interpreter): the split equals the library on small odd shapes, float64 and float32."
    for dtype in (torch.float64, torch.float32):
        for Bsz, Dm, H, W in [(2, 6, 5, 7), (1, 3, 4, 4), (2, 5, 1, 9)]:
            ins = inputs(Bsz, Dm, H, W, N, dtype, "cpu", param_dtype=dtype)
            for G, J in ((2, 1), (4, 1), (1, 2), (2, 3)):
                e = max_rel(split_scan(G, None, J), ins)
                print(
                    f"{str(dtype)[6:]} {(Bsz, Dm, H, W)} G={G} J={J}: max relative difference {e:.2e}",
                    flush=True,
                )
                tol = 1e-12 if dtype == torch.float64 else 2e-6
                assert e < tol, f"state split disagrees with the library: {e:.2e} > {tol:.0e}"
    print("check passed")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default=None)
    ap.add_argument("--check-only", action="store_true")
    ap.add_argument("--stages", default="2,1,0,3", help="0-based, in the order timed (stage 3 first)")
    a = ap.parse_args()
    if a.check_only:
        return check_only()
    from triton.testing import do_bench

    def timed(fn, ins, backward):
        for t in ins:
            t.requires_grad_(backward)
        if backward:
            dy = torch.randn_like(fn(*ins).float()).to(ins[0].dtype)

            def run():
                return torch.autograd.grad(fn(*ins), ins, dy)
        else:

            def run():
                with torch.no_grad():
                    return fn(*ins)

        return do_bench(run, warmup=25, rep=200, return_mode="median")

    props = torch.cuda.get_device_properties(0)
    import triton

    res = dict(
        date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        gpu=props.name,
        torch=torch.__version__,
        triton=triton.__version__,
        python=platform.python_version(),
        batch=BATCH,
        N=N,
        rows=[],
    )
    for dtype in (torch.bfloat16, torch.float32):
        for i in (int(s) for s in a.stages.split(",")):
            Dm, H = STAGES[i]
            ins = inputs(BATCH, Dm, H, H, N, dtype)
            fns = {"library": cross_selective_scan_triton} | {
                f"G={G} bwd {t} J={J}": split_scan(G, t, J) for G, t, J in VARIANTS
            }
            row = dict(stage=i + 1, Dm=Dm, H=H, dtype=str(dtype)[6:], fwd_bwd_ms={}, fwd_ms={}, max_rel={})
            for name, fn in fns.items():
                if name != "library":
                    row["max_rel"][name] = max_rel(fn, ins)
            for rnd in range(2):  # interleaved twice: the spread shows
                for name, fn in fns.items():
                    row["fwd_bwd_ms"].setdefault(name, []).append(timed(fn, ins, True))
                    if rnd == 0:
                        row["fwd_ms"][name] = timed(fn, ins, False)
            lib = min(row["fwd_bwd_ms"]["library"])
            line = " | ".join(f"{k} {min(v):.2f} ({lib / min(v):.2f}x)" for k, v in row["fwd_bwd_ms"].items())
            print(f"stage {i + 1} {row['dtype']}: fwd+bwd ms {line}", flush=True)
            print(f"   fwd ms {row['fwd_ms']}   max_rel {row['max_rel']}", flush=True)
            res["rows"].append(row)
            if a.json:
                open(a.json, "w").write(json.dumps(res, indent=1))
            del ins
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
