"""What autograd keeps for the backward of one VSS block (and of the whole model), counted by saved tensor.

`torch.autograd.graph.saved_tensors_hooks` sees every tensor a backward node saves; each is recorded once (by
storage and view) with the module that was running, its shape and dtype. Bytes are reported per element of the
block's scan input x (B, d, H, W), so the table holds at any size: multiply by B·d·H·W for one block.

Usage (CPU, Triton's interpreter): TRITON_INTERPRET=1 python benchmarks/memory_accounting.py [--json out.json]
On CUDA the same script measures the real scan (--size, --batch) and adds torch.cuda's peak per block.
"""

import argparse
import json
from collections import defaultdict

import torch


def saved_tensor_table(block, x, autocast_dtype=torch.bfloat16):
    """Run block(x) under autocast, record every tensor saved for backward; returns rows (module, shape,
    dtype, bytes)."""
    names, stack, seen, rows = {m: n for n, m in block.named_modules()}, [], set(), []
    hooks = [m.register_forward_pre_hook(lambda m, a: stack.append(names[m])) for m in block.modules()]
    hooks += [m.register_forward_hook(lambda m, a, o: stack.pop() and None) for m in block.modules()]

    def pack(t):
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()))
        if key not in seen and t.numel() > 0:
            seen.add(key)
            rows.append(
                dict(
                    module=stack[-1] if stack else "",
                    shape=tuple(t.shape),
                    dtype=str(t.dtype).replace("torch.", ""),
                    bytes=t.untyped_storage().nbytes() if t.is_contiguous() else t.numel() * t.element_size(),
                )
            )
        return t

    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            with torch.autocast(x.device.type, dtype=autocast_dtype):
                out = block(x)
    finally:
        for h in hooks:
            h.remove()
    return rows, out


def block_accounting(C=8, H=8, W=8, Bsz=2, N=16, device="cpu"):
    "Saved bytes of one VSSBlock per element of its scan input (B·d·H·W), grouped by module/shape/dtype."
    from resvmamba.vss import VSSBlock

    torch.manual_seed(0)
    block = VSSBlock(C, d_state=N, scan_backend="triton").to(device)
    x = torch.randn(Bsz, H, W, C, device=device, requires_grad=True)
    rows, out = saved_tensor_table(block, x)
    unit = Bsz * block.op.d_inner * H * W
    agg = defaultdict(int)
    for r in rows:
        agg[(r["module"], r["shape"], r["dtype"])] += r["bytes"]
    table = sorted(((k, v / unit) for k, v in agg.items()), key=lambda kv: -kv[1])
    return table, sum(v for _, v in table)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default=None)
    ap.add_argument("--size", type=int, default=8)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--C", type=int, default=8)
    a = ap.parse_args()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    table, total = block_accounting(a.C, a.size, a.size, a.batch, device=dev)
    print(
        f"saved for backward by one VSSBlock (C={a.C}, {a.size}x{a.size}, batch {a.batch}), "
        "bytes per scan-input element:"
    )
    for (mod, shape, dt), v in table:
        print(f"  {v:7.2f}  {mod or '(block)':22s} {dt:9s} {shape}")
    print(f"  {total:7.2f}  total")
    if a.json:
        json.dump(
            dict(
                C=a.C,
                size=a.size,
                batch=a.batch,
                device=dev,
                total_bytes_per_elem=total,
                rows=[dict(module=m, shape=list(s), dtype=d, bytes_per_elem=v) for (m, s, d), v in table],
            ),
            open(a.json, "w"),
            indent=1,
        )
