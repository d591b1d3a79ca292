"""Cap ptxas' registers per thread (`maxnreg`) for the library's kernels at their default tiles.

Registers decide how many programs an SM holds: the one-warp backward tile takes 240 a thread (8 warps an SM), the
four-warp one 246 (2 programs, 8 warps), the stage-1 forward 168 (3 programs). Compiled here for sm_90 with triton 3.6,
ptxas fits the one-warp backward in 200 without a spill and the four-warp one in 184. This bench times each kernel at
its library tile with several caps, checks that every result is bit-identical to the uncapped kernel's (a cap changes
register allocation, not arithmetic), and picks per tile the cap that is fastest over its stages and dtypes, kept only
if that is at least 3 % faster in geometric mean and no case is more than 3 % slower. With --train it then times
resvmamba_small's training step (train_bench.model_only) with no caps and with the chosen ones, side by side;
forward+backward through autograd is compared the same way whenever a cap is chosen.

    PYTHONPATH=. python benchmarks/experiments/maxnreg_bench.py [--json caps.json] [--train]

The kernels are wrapped (`_Capped`), so the library carries no tuning hook for this. (The recorded run, 2026-11-24 in
RESULTS.md, read the caps from a table in the launchers instead: the same launch option, removed once no cap won.)
"""
import argparse, json, math, os, sys, time
sys.path.insert(0, os.path.dirname(__file__)); sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import torch, triton
from triton.testing import do_bench
import resvmamba.triton_scan as ts
from scan_bench import inputs, STAGES, BATCH, N, timed as timed_op

CAPS = {(False, 8, 32, 4): [128, 96], (False, 8, 16, 4): [80, 64],   # forward tiles (stage 1; stages 2-4)
        (True, 8, 16, 4): [168, 128], (True, 4, 8, 1): [200, 168, 128]}  # backward tiles (stages 1-2; stages 3-4)


def timed(fn): return do_bench(fn, warmup=25, rep=100, return_mode="median")


class _Capped:
    "A library kernel whose launches pass ptxas' register cap (launch option `maxnreg`) looked up by tile."
    def __init__(self, kernel, backward, caps): self.kernel, self.backward, self.caps = kernel, backward, caps
    def __getitem__(self, grid):
        def launch(*a, **k):
            cap = self.caps.get((self.backward, k["BLOCK_D"], k["T"], k["num_warps"]))
            return self.kernel[grid](*a, maxnreg=cap, **k)
        return launch


def with_caps(caps, fn):
    "Run fn with the library's kernels launched under `caps` ({(backward, BLOCK_D, T, num_warps): cap})."
    saved = ts._fwd_kernel, ts._bwd_kernel, ts._interpreting
    interpreting = ts._interpreting()          # it tells by the kernel's type, which the wrapper hides
    ts._fwd_kernel, ts._bwd_kernel = _Capped(saved[0], False, caps), _Capped(saved[1], True, caps)
    ts._interpreting = lambda: interpreting
    try: return fn()
    finally: ts._fwd_kernel, ts._bwd_kernel, ts._interpreting = saved


def bench_kernels(log):
    "{key: {cap: [time ratios uncapped/capped over stages and dtypes]}}; asserts bit-identical results."
    gains = {k: {c: [] for c in cs} for k, cs in CAPS.items()}
    for dtype in (torch.float32, torch.bfloat16):
        for Dm, H in STAGES:
            ins = inputs(BATCH, Dm, H, H, N, dtype)
            dy = torch.randn(BATCH, Dm, H, H, device="cuda", dtype=dtype)
            fkey = (False, *ts._tiles(N, H * H, interp=False))
            bkey = (True, *ts._tiles(N, H * H, True, interp=False))
            fwd = lambda: ts._scan_fwd(*ins, True, True)
            y0, hs0 = fwd()
            bwd = lambda: ts._scan_bwd(dy, hs0, *ins, True)
            g0 = bwd()
            for key, run, ref in ((fkey, fwd, (y0, hs0)), (bkey, bwd, g0)):
                t0 = timed(run)
                line = f"{str(dtype)[6:]:8s} {Dm:4d} {H:2d}^2 {'bwd' if key[0] else 'fwd'} tile{key[1:]} uncapped {t0:7.2f} ms |"
                for cap in CAPS[key]:
                    out = with_caps({key: cap}, run)
                    same = all(torch.equal(a, b) for a, b in zip(out, ref))
                    assert same, f"maxnreg={cap} changed the result of {key} at {Dm}, {H}^2, {dtype}"
                    t = with_caps({key: cap}, lambda: timed(run))
                    gains[key][cap].append(t0 / t)
                    line += f" {cap}: {t:7.2f} ({t0 / t:4.2f}x) |"
                t1 = timed(run)
                log(line + f" uncapped again {t1:7.2f}")
            del ins, dy, y0, hs0, g0; torch.cuda.empty_cache()
    return gains


def choose(gains, log):
    "Per tile, the cap with the best geometric-mean gain, kept if >= 1.03x and no case below 0.97x."
    chosen = {}
    for key, by_cap in gains.items():
        score = {c: math.exp(sum(map(math.log, r)) / len(r)) for c, r in by_cap.items() if r}
        if not score: continue
        cap = max(score, key=score.get)
        keep = score[cap] >= 1.03 and min(by_cap[cap]) >= 0.97
        log(f"tile {key}: geomean gain {', '.join(f'{c}: {s:.3f}x' for c, s in score.items())} -> "
            f"{cap if keep else 'no cap'} (worst case {min(by_cap[cap]):.2f}x)")
        if keep: chosen[key] = cap
    return chosen


def fwd_bwd_ab(chosen, log):
    "Forward+backward through autograd (scan_bench's timing), no caps against the chosen caps, at every stage."
    for dtype in (torch.float32, torch.bfloat16):
        for Dm, H in STAGES:
            ins = [t.requires_grad_(True) for t in inputs(BATCH, Dm, H, H, N, dtype)]
            ms = [with_caps(caps, lambda: timed_op(ts.cross_selective_scan_triton, True, ins)) for caps in ({}, chosen)]
            log(f"fwd+bwd {str(dtype)[6:]:8s} {Dm:4d} {H:2d}^2: no caps {ms[0]:7.2f} ms, chosen caps {ms[1]:7.2f} ms ({ms[0] / ms[1]:.2f}x)")
            del ins; torch.cuda.empty_cache()


def train_ab(chosen, log):
    "resvmamba_small training step, model only, with no caps and with the chosen caps, in one process."
    from train_bench import model_only
    for label, caps in (("no caps", {}), ("chosen caps", chosen), ("no caps again", {})):
        ips, peak, step = with_caps(caps, lambda: model_only("resvmamba_small", steps=15))
        log(f"resvmamba_small model-only, {label}: {ips:.1f} img/s, step {step * 1e3:.0f} ms, peak {peak:.1f} GiB")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(); ap.add_argument("--json", default=None); ap.add_argument("--train", action="store_true")
    a = ap.parse_args()
    log = lambda s: print(s, flush=True)
    log(f"{torch.cuda.get_device_name()} torch {torch.__version__} triton {triton.__version__} "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    chosen = choose(bench_kernels(log), log)
    log(f"chosen caps: {chosen}")
    if a.json: json.dump({str(k): v for k, v in chosen.items()}, open(a.json, "w"))
    if chosen: fwd_bwd_ab(chosen, log)
    if a.train and chosen: train_ab(chosen, log)
