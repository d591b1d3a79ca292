"""Forward and forward+backward of the library's default choices (route layout per pass and length, one-warp backward
tiles), timed at the four VMamba-S stages, batch 128, N = 16; prints one line per row (ms, medians of do_bench)."""
import sys, time, torch
from triton.testing import do_bench
sys.path.insert(0, "benchmarks")
from scan_bench import inputs, STAGES, BATCH, N, OFFICIAL_H200
import resvmamba.triton_scan as ts

print(torch.cuda.get_device_name(), torch.__version__, __import__("triton").__version__, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), flush=True)
for dtype in (torch.bfloat16, torch.float32):
    for Dm, H in STAGES:
        ins = [t.requires_grad_() for t in inputs(BATCH, Dm, H, H, N, dtype)]
        with torch.no_grad(): fwd = do_bench(lambda: ts.cross_selective_scan_triton(*ins), warmup=5, rep=40, return_mode="median")
        dy = torch.randn(BATCH, Dm, H, H, device="cuda", dtype=dtype)
        fb = do_bench(lambda: torch.autograd.grad(ts.cross_selective_scan_triton(*ins), ins, dy), warmup=5, rep=60, return_mode="median")
        torch.cuda.reset_peak_memory_stats(); y = ts.cross_selective_scan_triton(*ins); g = torch.autograd.grad(y, ins, dy)
        peak = torch.cuda.max_memory_allocated() / 2**30
        off = OFFICIAL_H200[(Dm, str(dtype)[6:])]
        print(f"{str(dtype)[6:]:8s} {Dm:4d} {H:2d}^2 fwd {fwd:7.2f} ({off[0] / fwd:.2f}x official) fwd+bwd {fb:7.2f} ({off[1] / fb:.2f}x official) "
              f"peak {peak:.1f} GiB layouts fwd/bwd {ts._contiguous(H * H, False)}/{ts._contiguous(H * H, True)}", flush=True)
        del ins, y, g; torch.cuda.empty_cache()
