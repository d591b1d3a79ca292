"""Upper bounds on two designs for the fused scan, measured by taking their traffic away (not adopted code).

What could folding the low-rank Δ projection into the kernel gain at most? It would stop reading Δ and writing dΔ at
full width (Dm channels per step). What could reducing dB, dC across channel blocks on chip gain at most? It would stop
writing one (B, 4, N, L) partial per channel block and summing them afterwards. This script builds variants of the
library's kernels, from the working tree's resvmamba/triton_scan.py, with that traffic removed but the arithmetic kept
(Δ becomes a constant; dΔ and the dB/dC partials are folded into a live sum instead of stored), and times
forward+backward against the library in one run. Their results are wrong by design: they are timings of what no
design that still moves those bytes can beat.

    PYTHONPATH=. python benchmarks/experiments/traffic_bounds.py [--json out.json]
"""
import sys, os, time, json, importlib.util, re, tempfile, argparse
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import torch, triton
from triton.testing import do_bench
import resvmamba.triton_scan as lib
from scan_bench import inputs, STAGES, BATCH, N

SRC = open(lib.__file__).read()

NO_DELTA = [  # Δ read as a constant (bias + 0.5 before softplus), dΔ never stored (kept live through dbias), no dΔ transposes
    ("v = _to_acc(tl.load(dt_ptrs, mask=m, other=0.0), ACC, PTX)", "v = tl.where(m, 0.5, 0.0).to(ACC)"),
    ("            tl.store(ddtk + dt_row + p, ddt, mask=m)\n", ""),
    ("        ddelta[:, 1::2] = ddT.transpose(-1, -2)\n", ""),
]
NO_PARTIALS = [  # the dB, dC channel sums computed and kept live, but no per-block partials stored or summed
    ("            tl.store(dB_ptr + part_row + p, tl.sum(g * dtu[:, :, None], 1), mask=tm[:, None])\n",
     "            dD += 0.0 * tl.sum(tl.sum(tl.sum(g * dtu[:, :, None], 1), 1), 0)\n"),
    ("            tl.store(dC_ptr + part_row + p, tl.sum(hh * dy[:, :, None], 1), mask=tm[:, None])\n",
     "            dD += 0.0 * tl.sum(tl.sum(tl.sum(hh * dy[:, :, None], 1), 1), 0)\n"),
    ("    dB, dC = (_empty((n_blocks, Bsz, 4, N, H, W), x, acc) for _ in range(2))", "    dB, dC = (_empty((1, Bsz, 4, N, H, W), x, acc) for _ in range(2))"),
    ("        for gr in (dB, dC): gr[:, 1::2] = gr[:, 1::2].reshape(Bsz, 2, N, W, H).transpose(-1, -2).clone()\n", ""),
]
VARIANTS = {"library": [], "no Δ traffic": NO_DELTA, "no dB/dC partials": NO_PARTIALS, "both": NO_DELTA + NO_PARTIALS}


def variant(name, patches):
    "The library's module with `patches` applied, imported under its own name with its own custom-op namespace."
    src = SRC
    for old, new in patches:
        if old not in src: raise SystemExit(f"{name}: the library changed, cannot find {old.strip()[:60]!r}")
        src = src.replace(old, new)
    tag = re.sub(r"[^a-z]", "_", name.replace("Δ", "delta").lower())
    src = re.sub(r"^from \.(scan|cross_scan) ", r"from resvmamba.\1 ", src, flags=re.M).replace("resvmamba::cross_scan", f"bound_{tag}::cross_scan")
    f = os.path.join(tempfile.mkdtemp(), f"bound_{tag}.py"); open(f, "w").write(src)
    spec = importlib.util.spec_from_file_location(f"bound_{tag}", f); mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod


def fwd_bwd(mod, ins, dy):
    return do_bench(lambda: torch.autograd.grad(mod.cross_selective_scan_triton(*ins), ins, dy), warmup=25, rep=200, return_mode="median")


def main():
    ap = argparse.ArgumentParser(); ap.add_argument("--json"); ap.add_argument("--dtypes", default="bfloat16,float32")
    args = ap.parse_args()
    print(torch.cuda.get_device_name(), torch.__version__, triton.__version__, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), flush=True)
    mods = {k: (lib if not p else variant(k, p)) for k, p in VARIANTS.items()}
    rows = []
    for dtype in [getattr(torch, d) for d in args.dtypes.split(",")]:
        for Dm, H in STAGES:
            ins = [t.requires_grad_() for t in inputs(BATCH, Dm, H, H, N, dtype)]
            dy = torch.randn(BATCH, Dm, H, H, device="cuda", dtype=dtype)
            t = {k: [] for k in mods}
            for rep in range(2):                                    # interleaved: drifts hit every variant alike
                for k, m in mods.items(): t[k].append(fwd_bwd(m, ins, dy))
            best = {k: min(v) for k, v in t.items()}
            r = dict(dtype=str(dtype)[6:], Dm=Dm, H=H, fwd_bwd_ms=best, runs=t)
            rows.append(r)
            print(f"{r['dtype']:8s} Dm={Dm:5d} H={H:2d}  " + "  ".join(f"{k}: {v:7.2f} ms ({best['library'] / v:4.2f}x)" for k, v in best.items()), flush=True)
            del ins, dy; torch.cuda.empty_cache()
    if args.json: json.dump(dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
                                 date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), batch=BATCH, N=N, rows=rows), open(args.json, "w"), indent=1)


if __name__ == "__main__": main()
