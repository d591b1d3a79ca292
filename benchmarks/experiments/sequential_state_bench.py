"Checks the kernels of sequential_state.py against the float64 reference on the GPU, then times them beside resvmamba.triton_scan at the stage shapes (writes $OUT/trial.json)."
import os, sys, json, torch, triton, triton.language as tl
sys.path.insert(0, os.path.dirname(__file__)); sys.path.insert(0, os.getcwd())
from sequential_state import _fwd_seq, _bwd_seq
from resvmamba.triton_scan import _scan_fwd, _scan_bwd
from resvmamba.cross_scan import cross_selective_scan_ref
from triton.testing import do_bench
OUT = os.environ.get("OUT", "/tmp")
T, TS = 16, 4

def new_fwd(x, dl, A, Bm, Cm, D, bias, nsplit=2, nw=1, save=True):
    Bsz, Dm, H, W = x.shape; N = A.shape[-1]; L = H * W; nc = triton.cdiv(L, T); BD = 32 * nw // nsplit
    y = torch.empty(Bsz, Dm, H, W, device=x.device, dtype=torch.float32)
    hs = torch.empty(Bsz, 4, nc, Dm, N, device=x.device, dtype=torch.float32) if save else y
    _fwd_seq[(triton.cdiv(Dm, BD), Bsz)](x, dl, A, Bm, Cm, D, bias, y, hs, Dm, H, W, L, nc, N=N, NSPLIT=nsplit, BLOCK_D=BD, T=T,
        HAS_D=True, HAS_BIAS=True, SOFTPLUS=True, SAVE=save, ACC=tl.float32, num_warps=nw)
    return y, hs

def new_bwd(dy, hs, x, dl, A, Bm, Cm, D, bias, nsplit=2, nw=1):
    Bsz, Dm, H, W = x.shape; N = A.shape[-1]; L = H * W; nc = triton.cdiv(L, T); BD = 32 * nw // nsplit; nb = triton.cdiv(Dm, BD)
    e = lambda *s: torch.empty(*s, device=x.device, dtype=torch.float32)
    dx, ddt, dA, dB, dC, dD, db = e(Bsz, Dm, H, W), e(Bsz, 4, Dm, H, W), e(Bsz, 4, Dm, N), e(nb, Bsz, 4, N, H, W), e(nb, Bsz, 4, N, H, W), e(Bsz, 4, Dm), e(Bsz, 4, Dm)
    ent = e(Bsz * nb * (T // TS) * BD * N)
    _bwd_seq[(nb, Bsz)](x, dl, A, Bm, Cm, D, bias, hs, dy, ent, dx, ddt, dA, dB, dC, dD, db, Bsz, Dm, H, W, L, nc,
        N=N, NSPLIT=nsplit, BLOCK_D=BD, T=T, TS=TS, HAS_D=True, HAS_BIAS=True, SOFTPLUS=True, ACC=tl.float32, num_warps=nw)
    return dx, ddt, dA.sum(0), dB.sum(0), dC.sum(0), dD.sum(0), db.sum(0)

def inputs(Bsz, Dm, H, W, N=16, dtype=torch.float32):
    g = torch.Generator(device="cuda").manual_seed(0)
    r = lambda *s: torch.randn(*s, device="cuda", generator=g)
    ins = [r(Bsz, Dm, H, W), r(Bsz, 4, Dm, H, W) * 0.5 - 1, -torch.rand(4, Dm, N, device="cuda", generator=g) * 4,
           r(Bsz, 4, N, H, W), r(Bsz, 4, N, H, W), r(4, Dm), r(4, Dm) * 0.3]
    return [t.to(dtype) if i not in (2, 5, 6) else t for i, t in enumerate(ins)]

if __name__ == '__main__':
    print(torch.__version__, triton.__version__, torch.cuda.get_device_name(), flush=True)
    res = {"checks": [], "times": []}
    # 1. correctness against the float64 reference, forward and all seven gradients
    for (Bsz, Dm, H, W, dtype) in ([] if os.environ.get('NOCHECK') else [(2, 48, 14, 14, torch.float32), (2, 40, 7, 9, torch.float32), (2, 48, 14, 14, torch.bfloat16)]):
        ins = inputs(Bsz, Dm, H, W, dtype=dtype)
        for nsplit in (2, 1):
            y, hs = new_fwd(*ins, nsplit=nsplit)
            dy = torch.randn_like(y)
            grads = new_bwd(dy.contiguous(), hs, *ins)
            ref_in = [t.double().requires_grad_() for t in ins]
            ref = cross_selective_scan_ref(*ref_in, True); ref.backward(dy.double())
            errs = [((y.double() - ref).abs().max() / ref.abs().max()).item()] + [((gg.double() - r.grad).abs().max() / r.grad.abs().max()).item() for gg, r in zip(grads, ref_in)]
            rec = dict(shape=[Bsz, Dm, H, W], dtype=str(dtype), nsplit=nsplit, errs=errs)
            print("check", rec, flush=True); res["checks"].append(rec)
            if nsplit == 1 and dtype != torch.float32: break
    # 2. times at batch 128, the four stage shapes
    for dtype in (torch.float32, torch.bfloat16):
        for Dm, S in ((192, 56), (384, 28), (768, 14), (1536, 7)):
            ins = inputs(128, Dm, S, S, dtype=dtype)
            row = dict(dtype=str(dtype), Dm=Dm, S=S)
            y, hs = new_fwd(*ins)
            dy = torch.randn_like(y).to(dtype)
            for nsplit, nw in ((2, 1), (2, 2), (1, 1)):
                if nsplit == 1 and dtype != torch.float32: continue
                row[f"fwd_seq_{nsplit}_{nw}"] = do_bench(lambda: new_fwd(*ins, nsplit=nsplit, nw=nw), warmup=10, rep=60)
            row["bwd_seq"] = do_bench(lambda: new_bwd(dy, hs, *ins), warmup=3, rep=30)
            if dtype == torch.float32:
                row["fwd_old"] = do_bench(lambda: _scan_fwd(*ins, True, True), warmup=5, rep=30)
                _, hs_old = _scan_fwd(*ins, True, True)
                row["bwd_old"] = do_bench(lambda: _scan_bwd(dy, hs_old, *ins, True), warmup=2, rep=10)
            print("time", {k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
            res["times"].append(row)
            json.dump(res, open(os.path.join(OUT, "trial.json"), "w"), indent=1)
            del ins, y, hs, dy; torch.cuda.empty_cache()
