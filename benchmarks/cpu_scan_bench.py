"""CPU: the blocked PyTorch scan (chapter 02) beside its version at an earlier commit, in one run.

    PYTHONPATH=. python benchmarks/cpu_scan_bench.py [--before b52ebe8] [--json out.json]  # in a git checkout

Times, on this machine's CPU with PyTorch's default threads: (1) one training step (forward, backward, AdamW)
of the demo's model (`resvmamba_test` with ssm_ratio 1, 8 classes, batch 32 of 48-px images, the "parallel"
scan backend that the CPU uses), and (2) the four-route scan alone, forward+backward, at the four stage shapes
of that model. The earlier scan module is read from git history (no copy is kept) and swapped in for the
library's; best of 3 interleaved rounds."""

import argparse
import importlib.util
import json
import os
import platform
import re
import subprocess
import tempfile
import time

import torch

import resvmamba.triton_scan as ts
from resvmamba.cross_scan import cross_selective_scan_ref
from resvmamba.models import create_model
from resvmamba.scan import selective_scan_parallel


def scan_at(commit):
    "resvmamba/scan.py as of `commit`, imported beside the library's."
    src = subprocess.run(
        ["git", "show", f"{commit}:resvmamba/scan.py"], capture_output=True, text=True, check=True
    ).stdout
    f = os.path.join(tempfile.mkdtemp(), f"scan_{commit}.py")
    open(f, "w").write(re.sub(r"^from \.", "from resvmamba.", src, flags=re.M))
    spec = importlib.util.spec_from_file_location(f"scan_{commit}", f)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def best_ms(f, n=5, rounds=1):
    f()
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(n):
            f()
        best = min(best, (time.perf_counter() - t) / n * 1e3)
    return best


def train_step(scan_fn):
    "One demo training step with `scan_fn` as the parallel scan."
    ts.selective_scan_parallel = scan_fn  # the "parallel" backend looks it up here
    torch.manual_seed(0)
    m = create_model("resvmamba_test", num_classes=8, ssm_ratio=1.0)
    x, y = torch.randn(32, 3, 48, 48), torch.randint(0, 8, (32,))
    opt = torch.optim.AdamW(m.parameters(), 1e-3)

    def step():
        loss = torch.nn.functional.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def scan_call(scan_fn, b, d, H, N=4):
    g = torch.Generator().manual_seed(0)

    def r(*s):
        return torch.randn(*s, generator=g).requires_grad_()

    ins = [
        r(b, d, H, H),
        r(b, 4, d, H, H),
        (-torch.rand(4, d, N, generator=g) - 0.5).requires_grad_(),
        r(b, 4, N, H, H),
        r(b, 4, N, H, H),
        r(4, d),
        r(4, d),
    ]
    return lambda: cross_selective_scan_ref(*ins, delta_softplus=True, scan_fn=scan_fn).sum().backward()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", default="b52ebe8")
    ap.add_argument("--json")
    args = ap.parse_args()
    fns = {args.before: scan_at(args.before).selective_scan_parallel, "library": selective_scan_parallel}
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    print(
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; library at {head}",
        flush=True,
    )
    rows = {}
    for name, case in [("demo training step", lambda f: train_step(f))] + [
        (f"scan fwd+bwd b=32 d={d} {H}x{H}", (lambda d, H: lambda f: scan_call(f, 32, d, H))(d, H))
        for d, H in ((16, 12), (32, 6), (64, 3), (128, 2))
    ]:
        t = {k: float("inf") for k in fns}
        for _ in range(3):  # interleaved rounds: drifts hit both alike
            for k, f in fns.items():
                t[k] = min(t[k], best_ms(case(f)))
        rows[name] = t
        print(
            f"{name:34s} "
            + "  ".join(f"{k}: {v:7.1f} ms" for k, v in t.items())
            + f"  ({t[args.before] / t['library']:.2f}x)",
            flush=True,
        )
    ts.selective_scan_parallel = selective_scan_parallel
    if args.json:
        json.dump(
            dict(
                date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                torch=torch.__version__,
                threads=torch.get_num_threads(),
                before=args.before,
                library=head,
                ms=rows,
            ),
            open(args.json, "w"),
            indent=1,
        )


if __name__ == "__main__":
    main()
