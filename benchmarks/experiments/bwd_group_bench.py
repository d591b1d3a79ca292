"""Time the library's backward at other tiles, and with channel-block groups, against its default tiles, all stages.

    PYTHONPATH=. python benchmarks/experiments/bwd_group_bench.py [--variants "4,8,1;2,16,1x4;8,16,4x4"]

A variant "BLOCK_D,T,num_warps" is the library kernel at those tiles (one-warp tiles keep the sum over a program's
channels for dB, dC inside a warp); "BLOCK_D,T,num_warps x n" is the grouped kernel of bwd_group.py with n channel
blocks per program. The forward's checkpoints are made for each variant's T.
"""
import argparse, sys, os, time
sys.path.insert(0, os.path.dirname(__file__)); sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import torch, triton
from triton.testing import do_bench
import resvmamba.triton_scan as ts
from scan_bench import inputs, rel, STAGES, BATCH, N
from bwd_group import scan_bwd_group

print(torch.cuda.get_device_name(), torch.__version__, triton.__version__, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
ap = argparse.ArgumentParser(); ap.add_argument("--variants", default="2,16,1x4;2,16,1x12;4,16,2x4;4,16,2x8;8,16,4x4")
variants = [(tuple(int(v) for v in t.split(",")), int(nb[0]) if nb else None)
            for t, *nb in (s.split("x") for s in ap.parse_args().variants.split(";"))]
for dtype in (torch.float32, torch.bfloat16):
    for Dm, H in STAGES:
        if dtype == torch.bfloat16 and Dm not in (192, 768): continue
        ins = inputs(BATCH, Dm, H, H, N, dtype)
        _, hs = ts._scan_fwd(*ins, True, True)
        dy = torch.randn(BATCH, Dm, H, H, device="cuda", dtype=dtype)
        ref = ts._scan_bwd(dy, hs, *ins, True)
        t0 = do_bench(lambda: ts._scan_bwd(dy, hs, *ins, True), warmup=10, rep=60, return_mode="median")
        line = f"{str(dtype)[6:]:8s} {Dm:4d} {H:2d}^2 library{ts._tiles(N, H * H, True, interp=False)} {t0:7.2f} ms |"
        for tiles, nb in variants:
            hsv = ts._scan_fwd(*ins, True, True, t_save=tiles[1])[1]
            run = ((lambda: ts._scan_bwd(dy, hsv, *ins, True, tiles=tiles)) if nb is None else
                   (lambda: scan_bwd_group(dy, hsv, *ins, True, tiles=tiles, n_blk=nb)))
            err = max(rel(a, b) for a, b in zip(run(), ref))
            t = do_bench(run, warmup=10, rep=60, return_mode="median")
            del hsv
            line += f" {tiles}{'' if nb is None else f'x{nb}'}: {t:6.2f} ({t0 / t:4.2f}x, err {err:.0e}) |"
        print(line, flush=True)
        del ins, hs, dy, ref; torch.cuda.empty_cache()
