"""A/B in one run: the backward with two channel blocks per program (`_scan_bwd(pair=True)` in the library of commit
ab78222, not adopted) against the library as it is (identical to commit 9148f86, one block per program), and the paired
code with pair=False (one block per program, the same arithmetic through the `_bwd_chunk` helper). Forward+backward
through the public function and the backward launcher alone, every stage, bf16 and fp32, batch 128, N = 16; interleaved
twice; gradients compared; peak memory of one call. The paired module is read from git history (no copy is kept):
    PYTHONPATH=. python benchmarks/experiments/pair_ab.py [--json out.json]      (in a git checkout)"""
import sys, os, time, json, functools, importlib.util, re, subprocess, tempfile
sys.path.insert(0, os.path.dirname(__file__)); sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import torch, triton
from triton.testing import do_bench
import resvmamba.triton_scan as prev


def module_at(commit, name, ns):
    "resvmamba/triton_scan.py as of `commit`, imported as `name`, its custom ops renamed to `ns::...` beside the library's."
    src = subprocess.run(["git", "show", f"{commit}:resvmamba/triton_scan.py"], capture_output=True, text=True, check=True).stdout
    src = re.sub(r"^from \.(scan|cross_scan) ", r"from resvmamba.\1 ", src, flags=re.M).replace("resvmamba::cross_scan", f"{ns}::cross_scan")
    f = os.path.join(tempfile.mkdtemp(), f"{name}.py"); open(f, "w").write(src)
    spec = importlib.util.spec_from_file_location(name, f); mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod

ts = module_at("ab78222", "paired_bwd_triton_scan", "resvmamba_paired")
from scan_bench import inputs, rel, STAGES, BATCH, N

new_bwd = ts._scan_bwd
def use_pair(pair): ts._scan_bwd = functools.partial(new_bwd, pair=pair)   # the custom op looks the launcher up by name

def fb(mod, ins, dy): return do_bench(lambda: torch.autograd.grad(mod.cross_selective_scan_triton(*ins), ins, dy), warmup=25, rep=200, return_mode="median")
def bwd_alone(mod, ins, dy, hs, **kw): return do_bench(lambda: mod._scan_bwd(dy, hs, *ins, True, **kw), warmup=25, rep=200, return_mode="median")
def peak(mod, ins, dy):
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()
    g = torch.autograd.grad(mod.cross_selective_scan_triton(*ins), ins, dy); torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**30

print(torch.cuda.get_device_name(), torch.__version__, triton.__version__, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), flush=True)
rows = []
for dtype in (torch.bfloat16, torch.float32):
    for Dm, H in STAGES:
        ins = [t.requires_grad_() for t in inputs(BATCH, Dm, H, H, N, dtype)]
        dy = torch.randn(BATCH, Dm, H, H, device="cuda", dtype=dtype)
        use_pair(True)
        gn = torch.autograd.grad(ts.cross_selective_scan_triton(*ins), ins, dy)
        gn2 = torch.autograd.grad(ts.cross_selective_scan_triton(*ins), ins, dy)
        go = torch.autograd.grad(prev.cross_selective_scan_triton(*ins), ins, dy)
        diff, same = max(rel(a, b) for a, b in zip(gn, go)), all(torch.equal(a, b) for a, b in zip(gn, gn2))
        del gn, gn2, go
        t = dict(prev=[], pair=[], nopair=[])
        for rep in range(2):
            t["prev"].append(fb(prev, ins, dy)); use_pair(True); t["pair"].append(fb(ts, ins, dy))
            if Dm == 192: use_pair(False); t["nopair"].append(fb(ts, ins, dy))
        x = [a.detach() for a in ins]
        with torch.no_grad():
            _, hs = ts._scan_fwd(*x, True, True); dyc = dy.float()
            b_prev, b_pair = bwd_alone(prev, x, dyc, hs), bwd_alone(ts, x, dyc, hs, pair=True)
            b_nopair = bwd_alone(ts, x, dyc, hs, pair=False) if Dm == 192 else float("nan")
            del hs
        use_pair(True); pk_new = peak(ts, ins, dy); pk_prev = peak(prev, ins, dy)
        r = dict(dtype=str(dtype)[6:], Dm=Dm, H=H, fwd_bwd_prev=t["prev"], fwd_bwd_pair=t["pair"], fwd_bwd_nopair=t["nopair"],
                 bwd_alone_prev=b_prev, bwd_alone_pair=b_pair, bwd_alone_nopair=b_nopair, peak_gib_prev=pk_prev, peak_gib_pair=pk_new,
                 grad_rel_diff_vs_prev=diff, deterministic=same)
        rows.append(r)
        print(f"{r['dtype']:8s} {Dm:4d} {H:2d}^2 fwd+bwd prev {min(t['prev']):7.2f} ({'/'.join(f'{v:.2f}' for v in t['prev'])}) "
              f"pair {min(t['pair']):7.2f} ({'/'.join(f'{v:.2f}' for v in t['pair'])}) speed-up {min(t['prev']) / min(t['pair']):.3f}x"
              + (f" nopair {min(t['nopair']):.2f}" if t["nopair"] else "")
              + f" | bwd alone prev {b_prev:.2f} pair {b_pair:.2f} nopair {b_nopair:.2f} | peak {pk_prev:.1f}/{pk_new:.1f} GiB"
              f" | grads vs prev {diff:.1e} deterministic {same}", flush=True)
        del ins, dy, x; torch.cuda.empty_cache()
if len(sys.argv) > 2 and sys.argv[1] == "--json": json.dump(rows, open(sys.argv[2], "w"), indent=1)
