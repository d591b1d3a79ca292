"""Registers, spills and instruction mix of the scan kernels compiled for the H100/H200 (sm_90a), anywhere.

The backward is latency-bound at the occupancy its registers allow (see RESULTS.md): 65,536 registers per SM
over 32·r per warp give the warps an SM can hold. Triton compiles for a named target without a GPU, so this
counts the registers of each tile shape before any GPU time is spent:

    TRITON_INTERPRET=0 PYTHONPATH=. python benchmarks/kernel_registers.py                 # the shipped tiles
    TRITON_INTERPRET=0 PYTHONPATH=. python benchmarks/kernel_registers.py --bwd 8:4,8,1 8:8,8,1 4:8,8,1

Each entry is N:BLOCK_D,T,warps, and a backward's may add channel blocks per program (bf16 inputs, float32
accumulation, column copies, D, bias, softplus).
"""

import argparse
import os
import re
import subprocess
import tempfile

os.environ["TRITON_INTERPRET"] = "0"  # compile, not interpret (the library interprets on a CPU by default)
import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

import resvmamba.triton_scan as ts  # noqa: E402

POINTERS = {"x", "dt", "B", "C", "dy", "xT", "dtT", "BT", "CT", "dyT", "hs"}  # bf16: inputs, copies, states
INTS = {"Bsz", "Dm", "H", "W", "L", "n_chunks", "n_save"}


def signature(fn, constexprs):
    "Triton types: the inputs bf16, the parameters, outputs and checkpoints as the launcher makes them."
    sig = {}
    for name in fn.arg_names:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name in INTS:
            sig[name] = "i32"
        elif name[:-4] in POINTERS:
            sig[name] = "*bf16"
        else:
            sig[name] = "*fp32"
    return sig


def compiled(fn, constexprs, num_warps):
    "PTX and ptxas's report (registers, spill stores/loads) of one kernel for sm_90a."
    src = ASTSource(fn, signature(fn, constexprs), constexprs)
    k = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=num_warps))
    ptx = k.asm["ptx"]
    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "k.ptx")
        open(p, "w").write(ptx)
        cmd = [ptxas, "-v", "--gpu-name", "sm_90a", p, "-o", os.path.join(d, "k.o")]
        rep = subprocess.run(cmd, capture_output=True, text=True).stderr
    regs = int(re.search(r"Used (\d+) registers", rep).group(1))
    spill = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", rep)
    mix = {op: len(re.findall(rf"^\s*{op}\.", ptx, re.M)) for op in ("ex2", "ld", "st", "shfl", "bar")}
    return regs, (int(spill.group(1)), int(spill.group(2))), len(re.findall(r";\s*$", ptx, re.M)), mix


def report(kind, N, tile):
    "One line: a kernel's registers, spills, the warps an SM can hold, and its PTX instruction mix."
    BD, T, nw, *J = tile  # the backward's optional fourth entry: channel blocks per program
    flags = dict(CONTIG=True, HAS_D=True, HAS_BIAS=True, SOFTPLUS=True, ACC=tl.float32, PTX=True)
    common = dict(N=N, BLOCK_D=BD, T=T) | flags
    if kind == "bwd":
        fn, cx = ts._bwd_kernel, common | dict(J=J[0] if J else 1)
    else:
        fn, cx = ts._fwd_kernel, common | dict(T_SAVE=8, SAVE=True)
    regs, spill, n_ins, mix = compiled(fn, cx, nw)
    warps = min(64, 65536 // (32 * regs) // nw * nw)  # an SM holds at most 64 warps
    print(
        f"{kind} N={N:2d} tile {tile}: {regs} registers, "
        f"spill {spill[0]}/{spill[1]} B, ≤ {warps} warps/SM, {BD * N} states a program, "
        f"{n_ins} PTX instructions {mix}",
        flush=True,
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bwd", nargs="*", default=["16:4,8,1"], help="N:BLOCK_D,T,warps[,blocks]")
    ap.add_argument("--fwd", nargs="*", default=["16:8,16,4"], help="N:BLOCK_D,T,warps")
    a = ap.parse_args()
    for kind, entries in (("fwd", a.fwd), ("bwd", a.bwd)):
        for e in entries:
            n, t = e.split(":")
            report(kind, int(n), tuple(int(v) for v in t.split(",")))


if __name__ == "__main__":
    main()
