"""What compiling the model used for validation would buy: two passes over a validation loader (bf16 autocast, no_grad,
eval mode, a partial last batch), eager and then compiled; the first compiled pass includes compiling (and any
recompile for the partial batch). Used by tools/compile_check.sh.

    python benchmarks/experiments/compile_val.py DATA [--arch resvmamba_small] [--bs 128] [--workers 12]
"""
import argparse, copy, time

import torch
import torch._dynamo

from resvmamba.data import food_dls
from resvmamba.models import create_model


def one_pass(model, dl):
    "Seconds and images of one pass over `dl`."
    torch.cuda.synchronize(); t, n = time.perf_counter(), 0
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        for xb, _ in dl:
            model(xb.as_subclass(torch.Tensor)); n += len(xb)
    torch.cuda.synchronize()
    return time.perf_counter() - t, n


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("data"); ap.add_argument("--arch", default="resvmamba_small")
    ap.add_argument("--bs", type=int, default=128); ap.add_argument("--workers", type=int, default=12)
    a = ap.parse_args()
    dls = food_dls(a.data, size=224, bs=a.bs, num_workers=a.workers, device="cuda", verify=False)
    dl = dls.valid
    model = create_model(a.arch, num_classes=dls.c).cuda().eval()
    print(f"validation set: {len(dl.dataset)} images, batch {a.bs}, last batch {len(dl.dataset) % a.bs or a.bs}")
    one_pass(model, dl)  # loader workers and cuDNN warm
    for label, m in (("eager", model), ("compiled", None)):
        if m is None:
            m = copy.deepcopy(model); m.compile(); torch._dynamo.utils.counters.clear()
        for i in range(3):
            s, n = one_pass(m, dl)
            c = torch._dynamo.utils.counters
            print(f"{label} pass {i}: {s:.1f} s, {n / s:.1f} img/s; dynamo graphs {c['stats']['unique_graphs']}, "
                  f"graph breaks {sum(c['graph_break'].values())}", flush=True)
