"""Forward tiles after the contiguous column routes: the library's (128/N, 32, 4) against one- and two-warp programs,
forward alone (no gradient) at stages 1-2, bf16 and fp32, batch 128, N = 16; then forward+backward at stage 1 with the
best one-warp forward tile. PYTHONPATH=. python benchmarks/experiments/fwd_tiles.py"""
import sys, os, time
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import torch, triton
from triton.testing import do_bench
import resvmamba.triton_scan as ts
from scan_bench import inputs, rel, BATCH, N
STAGES12 = ((192, 56), (384, 28)) if torch.cuda.is_available() else ((192, 3),)

lib_tiles = ts._tiles
def fwd_tile(tile): ts._tiles = (lambda N_, L, backward=False, interp=None: lib_tiles(N_, L, backward, interp) if backward or tile is None else tile)
print(torch.cuda.get_device_name(), torch.__version__, triton.__version__, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), flush=True)
for dtype in (torch.bfloat16, torch.float32):
    for Dm, H in STAGES12:
        ins = inputs(BATCH, Dm, H, H, N, dtype)
        fwd_tile(None)
        with torch.no_grad(): y0 = ts.cross_selective_scan_triton(*ins)
        line = f"{str(dtype)[6:]:8s} {Dm:4d} {H:2d}^2 fwd"
        for tile in (None, (2, 32, 1), (4, 32, 2), (2, 16, 1), None):
            fwd_tile(tile)
            with torch.no_grad():
                ms = do_bench(lambda: ts.cross_selective_scan_triton(*ins), warmup=25, rep=200, return_mode="median")
                e = rel(ts.cross_selective_scan_triton(*ins), y0)
            line += f" | {tile or 'library'} {ms:6.2f} ({e:.0e})"
        print(line, flush=True)
        if Dm == 192:
            x = [t.requires_grad_() for t in ins]; dy = torch.randn_like(y0).to(dtype)
            line = f"{str(dtype)[6:]:8s} {Dm:4d} {H:2d}^2 fwd+bwd"
            for tile in (None, (2, 32, 1), None):
                fwd_tile(tile)
                ms = do_bench(lambda: torch.autograd.grad(ts.cross_selective_scan_triton(*x), x, dy), warmup=25, rep=200, return_mode="median")
                line += f" | {tile or 'library'} {ms:6.2f}"
            print(line, flush=True)
        fwd_tile(None); del ins; torch.cuda.empty_cache()
