"""Time the library's backward kernel at other tiles (BLOCK_D, T, num_warps) against its default, all stages.

    PYTHONPATH=. python benchmarks/experiments/bwd_tiles_bench.py --tiles "4,8,1;2,8,1"

One-warp tiles keep the sum over a program's channels (for dB, dC) inside a warp: no shared-memory scratch.
"""
import argparse, sys, os, time
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import torch, triton
from triton.testing import do_bench
import resvmamba.triton_scan as ts
from scan_bench import inputs, rel, STAGES, BATCH, N

ap = argparse.ArgumentParser(); ap.add_argument("--tiles", default="4,8,1;2,8,1")
variants = [tuple(int(v) for v in t.split(",")) for t in ap.parse_args().tiles.split(";")]
print(torch.cuda.get_device_name(), torch.__version__, triton.__version__, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), flush=True)
for dtype in (torch.float32, torch.bfloat16):
    for Dm, H in STAGES:
        if dtype == torch.bfloat16 and Dm not in (192, 768): continue
        ins = inputs(BATCH, Dm, H, H, N, dtype)
        dy = torch.randn(BATCH, Dm, H, H, device="cuda", dtype=dtype)
        _, hs = ts._scan_fwd(*ins, True, True)
        ref = ts._scan_bwd(dy, hs, *ins, True)
        t0 = do_bench(lambda: ts._scan_bwd(dy, hs, *ins, True), warmup=10, rep=60, return_mode="median")
        line = f"{str(dtype)[6:]:8s} {Dm:4d} {H:2d}^2 default {ts._tiles(N, H * H, True, interp=False)} {t0:7.2f} ms"
        for tiles in variants:
            hsv = ts._scan_fwd(*ins, True, True, t_save=tiles[1])[1]
            out = ts._scan_bwd(dy, hsv, *ins, True, tiles=tiles)
            err = max(rel(a, b) for a, b in zip(out, ref))
            t = do_bench(lambda: ts._scan_bwd(dy, hsv, *ins, True, tiles=tiles), warmup=10, rep=60, return_mode="median")
            line += f" | {tiles}: {t:7.2f} ({t0 / t:4.2f}x, err {err:.0e})"
            del hsv, out
        print(line, flush=True)
        del ins, hs, dy, ref; torch.cuda.empty_cache()
