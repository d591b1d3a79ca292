"""A/B in one run: the library's fused scan against an earlier version of it, forward and forward+backward, every stage.

    git show REV:resvmamba/triton_scan.py | sed 's/^from \.\(scan\|cross_scan\) /from resvmamba.\1 /' > benchmarks/experiments/_old_triton_scan.py
    PYTHONPATH=. python benchmarks/experiments/ab_previous.py

Commits compared: 168accd (before the PTX cast of half tiles and the flipped adjoint scan) and 09e0551 (before the one-warp backward tiles for L <= 256), both 2026-11-24.
"""
import sys, os, time
sys.path.insert(0, os.path.dirname(__file__)); sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import torch, triton
from triton.testing import do_bench
import resvmamba.triton_scan as ts
import _old_triton_scan as old
from scan_bench import inputs, rel, STAGES, BATCH, N, timed

print(torch.cuda.get_device_name(), torch.__version__, triton.__version__, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), flush=True)
for dtype in (torch.bfloat16, torch.float16, torch.float32):
    for Dm, H in STAGES:
        if dtype == torch.float16 and Dm != 768: continue
        line = f"{str(dtype)[6:]:8s} {Dm:4d} {H:2d}^2"
        for backward in (False, True):
            ins = [t.requires_grad_(backward) for t in inputs(BATCH, Dm, H, H, N, dtype)]
            tn = timed(ts.cross_selective_scan_triton, backward, ins)
            to = timed(old.cross_selective_scan_triton, backward, ins)
            if backward:
                dy = torch.randn(BATCH, Dm, H, H, device="cuda", dtype=dtype)
                gn = torch.autograd.grad(ts.cross_selective_scan_triton(*ins), ins, dy)
                go = torch.autograd.grad(old.cross_selective_scan_triton(*ins), ins, dy)
                err = max(rel(a, b) for a, b in zip(gn, go))
            else:
                with torch.no_grad(): err = rel(ts.cross_selective_scan_triton(*ins), old.cross_selective_scan_triton(*ins))
            line += f" | {'fwd+bwd' if backward else 'fwd'} new {tn:7.2f} old {to:7.2f} ms ({to / tn:4.2f}x) diff {err:.0e}"
            del ins; torch.cuda.empty_cache()
        print(line, flush=True)
