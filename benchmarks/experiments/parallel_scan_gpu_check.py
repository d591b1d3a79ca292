"""The PyTorch blocked scan (chapter 02's `selective_scan_parallel`, hand-written backward) on a GPU against the float64
loop on the CPU: outputs and every gradient, at model-like shapes, float32; and the four-route "parallel" backend against
the Triton kernel's gradients.     PYTHONPATH=. python benchmarks/experiments/parallel_scan_gpu_check.py"""
import torch
from resvmamba.scan import selective_scan_ref, selective_scan_parallel
from resvmamba.cross_scan import cross_selective_scan_ref
from resvmamba.triton_scan import cross_selective_scan_triton

def rel(a, b): return ((a.double().cpu() - b.double().cpu()).norm() / b.double().cpu().norm().clamp_min(1e-30)).item()
names = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
worst = 0.
for (b, d, N, L, G) in [(4, 64, 16, 3136, 4), (8, 96, 4, 144, 1), (2, 8, 2, 1, 2), (3, 12, 8, 49, "fixed")]:
    g = torch.Generator().manual_seed(L)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)
    BC = (d, N) if G == "fixed" else (b, G, N, L)
    p = dict(u=r(b, d, L), delta=r(b, d, L) - 1, A=-torch.rand(d, N, generator=g, dtype=torch.float64) * 4, B=r(*BC), C=r(*BC), D=r(d), z=r(b, d, L), delta_bias=r(d) * 0.5)
    w = r(b, d, L)
    outs = []
    for fn, dev, dt in ((selective_scan_ref, "cpu", torch.float64), (selective_scan_parallel, "cuda", torch.float32)):
        ts = [p[k].to(dev, dt).clone().requires_grad_() for k in names]
        y, h = fn(*ts[:5], D=ts[5], z=ts[6], delta_bias=ts[7], delta_softplus=True, return_last_state=True)
        ((y * w.to(dev, dt)).sum() + h.square().sum()).backward()
        outs.append([y, h] + [t.grad for t in ts])
    errs = [rel(a, b_) for a, b_ in zip(outs[1], outs[0])]
    worst = max(worst, *errs)
    print((b, d, N, L, G), "max rel err (y, h, 8 grads):", f"{max(errs):.2e}", flush=True)
print("worst", f"{worst:.2e}", "PASS" if worst < 1e-5 else "FAIL")
# the four-route parallel backend against the kernel
x = torch.randn(2, 40, 13, 11, device="cuda"); ins = [x, torch.randn(2, 4, 40, 13, 11, device="cuda") - 1, -torch.rand(4, 40, 16, device="cuda") * 4,
      torch.randn(2, 4, 16, 13, 11, device="cuda"), torch.randn(2, 4, 16, 13, 11, device="cuda"), torch.randn(4, 40, device="cuda"), torch.randn(4, 40, device="cuda")]
ins = [t.requires_grad_() for t in ins]
dy = torch.randn(2, 40, 13, 11, device="cuda")
ga = torch.autograd.grad(cross_selective_scan_ref(*ins, scan_fn=selective_scan_parallel), ins, dy)
gb = torch.autograd.grad(cross_selective_scan_triton(*ins), ins, dy)
e = max(rel(a, b_) for a, b_ in zip(ga, gb))
print("parallel backend vs Triton kernel, 7 gradients: max rel", f"{e:.2e}", "PASS" if e < 1e-5 else "FAIL")
