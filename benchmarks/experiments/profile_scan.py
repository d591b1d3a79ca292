"""Run the fused scan's forward and backward once at a VMamba-S stage shape, for a profiler (ncu) to read.

    ncu --clock-control none -k regex:_kernel --section SpeedOfLight ... python3 benchmarks/experiments/profile_scan.py --dm 768 --hw 14
"""
import argparse, sys, os
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import torch
from scan_bench import inputs
from resvmamba.triton_scan import cross_selective_scan_triton

p = argparse.ArgumentParser()
p.add_argument("--dm", type=int, default=768); p.add_argument("--hw", type=int, default=14)
p.add_argument("--batch", type=int, default=128); p.add_argument("--dtype", default="float32")
p.add_argument("--reps", type=int, default=2)
a = p.parse_args()
ins = [t.requires_grad_() for t in inputs(a.batch, a.dm, a.hw, a.hw, 16, getattr(torch, a.dtype))]
for _ in range(a.reps):                      # the first run compiles; the profiler skips it (--launch-skip)
    y = cross_selective_scan_triton(*ins)
    y.backward(torch.randn_like(y))
torch.cuda.synchronize()
print("done", a)
