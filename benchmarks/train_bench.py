"""Training throughput of resvmamba_small and vmamba_small at 224², batch 128, bf16, optimizer step included.

(a) model only: synthetic tensors already on the GPU, torch AdamW (fused), bf16 autocast;
(b) end to end: `food_learner` on a generated dataset in CNFOOD-241's layout (JPEGs decoded, timm
    RandAugment etc. in loader workers; normalisation, random erasing and mixup/cutmix on the GPU;
    EMA, gradient clipping, the paper's schedule), images/s measured on steady-state training batches.

Usage (one GPU): python benchmarks/train_bench.py [--out results.md] [--steps 20] [--workers 15]
Writes a markdown section (date, GPU, versions, table) to --out and prints it.
"""
import argparse, datetime, os, subprocess, sys, time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch, torch.nn.functional as F


def model_only(name, steps=20, warmup=5, bs=128, size=224):
    "Images/s and peak GiB of forward+backward+AdamW step on synthetic tensors."
    from resvmamba.models import create_model
    torch.manual_seed(0)
    model = create_model(name, num_classes=241).cuda().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.999), weight_decay=0.05, fused=True)
    x = torch.randn(bs, 3, size, size, device="cuda"); y = torch.randint(0, 241, (bs,), device="cuda")
    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16): loss = F.cross_entropy(model(x), y)
        loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step(); opt.zero_grad(set_to_none=True)
    for _ in range(warmup): step()
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    for _ in range(steps): step()
    torch.cuda.synchronize(); dt = time.perf_counter() - t
    peak = torch.cuda.max_memory_allocated() / 2**30
    del model, opt; torch.cuda.empty_cache()
    return bs * steps / dt, peak, dt / steps


def _draw(args):
    "Draw and save one generated dish (for the parallel dataset build)."
    from resvmamba.data import draw_dish
    path, c, size, seed = args
    draw_dish(c, size, np.random.default_rng(seed)).save(path, quality=90)


def make_bench_data(root, n_classes=8, per_class=40, n_test=4, size=512, repeat=12, workers=16):
    "A generated dataset in CNFOOD-241's layout whose training list names each image `repeat` times."
    root = Path(root); jobs, lists = [], {"train": [], "val": [], "test": []}
    for folder, n, part in (("train600x600", per_class, 0), ("val600x600", n_test, 1)):
        for c in range(n_classes):
            (root / folder / f"{c:03d}").mkdir(parents=True, exist_ok=True)
            for i in range(n):
                f = f"{c:03d}/{c:03d}{i:05d}.jpg"
                jobs.append((root / folder / f, c, size, hash((part, c, i)) % 2**32))
                lists["test" if part else ("val" if i < 2 else "train")].append(f"{f} {c}")
    with Pool(workers) as p: p.map(_draw, jobs)
    (root / "splits").mkdir(exist_ok=True)
    (root / "splits/train.txt").write_text("\n".join(lists["train"] * repeat) + "\n")  # the same files, read again: a long epoch
    for s in ("val", "test"): (root / "splits" / f"{s}.txt").write_text("\n".join(lists[s]) + "\n")
    return root, len(lists["train"]) * repeat


def end_to_end(name, data, workers=15, bs=128, size=224, skip=5):
    "Images/s (steady-state training batches) and peak GiB of one epoch of `food_learner(...).fit_paper`."
    from fastai.callback.core import Callback
    from fastai.callback.progress import ProgressCallback
    from resvmamba.learner import food_learner

    class Clock(Callback):
        order = 99
        def before_fit(self): self.ts = []
        def after_batch(self):
            if self.training: torch.cuda.synchronize(); self.ts.append(time.perf_counter())
        def before_validate(self): raise __import__("fastai").callback.core.CancelValidException  # training throughput only

    torch.manual_seed(0)
    learn = food_learner(data, arch=name, size=size, bs=bs, num_workers=workers, verify=False, cbs=[Clock()])
    learn.remove_cb(ProgressCallback)
    torch.cuda.reset_peak_memory_stats()
    learn.fit_paper(1, lr=1e-3, warmup=0)
    ts = learn.clock.ts
    n = len(ts) - 1 - skip
    ips = bs * n / (ts[-1] - ts[skip])
    peak = torch.cuda.max_memory_allocated() / 2**30
    amp = [type(c).__name__ for c in learn.cbs if type(c).__name__ == "MixedPrecision"]
    del learn; torch.cuda.empty_cache()
    return ips, peak, len(ts), bool(amp)


def versions():
    import triton, timm, fastai
    drv = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"], capture_output=True, text=True).stdout.strip()
    return (f"GPU: {drv}; torch {torch.__version__} (CUDA {torch.version.cuda}), triton {triton.__version__}, timm {timm.__version__}, "
            f"fastai {fastai.__version__}; {os.cpu_count()} CPU cores")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="train_bench.md"); ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--workers", type=int, default=15); ap.add_argument("--data", default="/tmp/bench_food")
    ap.add_argument("--models", default="resvmamba_small,vmamba_small"); ap.add_argument("--skip_e2e", action="store_true")
    a = ap.parse_args()
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    names = a.models.split(",")
    rows = []
    def attempt(f, *args):
        "Run one measurement; an error (out of memory, say) becomes a row instead of ending the run."
        try: return f(*args)
        except Exception as e:
            import traceback; traceback.print_exc(); torch.cuda.empty_cache(); return f"{type(e).__name__}: {str(e)[:120]}"
    for n in names:
        r = attempt(model_only, n, a.steps)
        if isinstance(r, str): rows.append((n, "model only, synthetic tensors", r, float("nan"))); continue
        ips, peak, st = r
        print(f"model only  {n}: {ips:.0f} img/s, {peak:.1f} GiB peak, {st * 1000:.0f} ms/step", flush=True)
        rows.append((n, f"model only, synthetic tensors ({st * 1000:.0f} ms/step)", ips, peak))
    if not a.skip_e2e:
        t = time.time(); data, n_train = make_bench_data(a.data)
        print(f"generated {data} ({n_train} training entries) in {time.time() - t:.0f} s", flush=True)
        for n in names:
            r = attempt(end_to_end, n, data, a.workers)
            if isinstance(r, str): rows.append((n, "end to end, food_learner", r, float("nan"))); continue
            ips, peak, nb, amp = r
            print(f"end to end  {n}: {ips:.0f} img/s, {peak:.1f} GiB peak ({nb} batches, bf16 autocast {amp})", flush=True)
            rows.append((n, f"end to end, food_learner, {a.workers} workers, {nb} batches", ips, peak))
    md = [f"## Training throughput (chapter 10, `benchmarks/train_bench.py`)", "",
          f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC. {versions()}.", "",
          "Batch 128, 224², bf16 autocast, optimizer step (AdamW) and gradient clipping included. End to end: generated 512-px JPEGs "
          "decoded and augmented (RandomResizedCrop bicubic, flip, RandAugment rand-m9-mstd0.5-inc1) in loader workers; normalisation, "
          "random erasing 0.25, mixup 0.8/cutmix 1.0 on the GPU; model EMA and the warm-up + cosine schedule on; validation skipped; "
          "images/s over steady-state batches (the first 5 of the epoch left out).", "",
          "| model | measured | images/s | peak GPU memory (GiB) |", "|---|---|---|---|"]
    md += [f"| {n} | {how} | {ips if isinstance(ips, str) else f'{ips:.0f}'} | {peak:.1f} |" for n, how, ips, peak in rows]
    text = "\n".join(md) + "\n"
    Path(a.out).write_text(text); print(text)
