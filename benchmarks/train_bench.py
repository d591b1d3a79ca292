"""Training and inference throughput of resvmamba_small and others at 224², batch 128 per GPU, bf16 autocast.

(a) model only (default): synthetic tensors already on the GPU, torch AdamW (fused), gradient clipping 5, bf16
    autocast; eager, and with --compiled also `torch.compile(model)`; inference = forward under no_grad, eval
    mode. --gpus 2: the same step under DistributedDataParallel, one process per GPU (torch.multiprocessing,
    NCCL), batch 128 per GPU; images/s counts all GPUs' images.
(b) --e2e: `food_learner` on a generated dataset in CNFOOD-241's layout (JPEGs decoded, timm RandAugment etc.
    in loader workers; normalisation, random erasing and mixup/cutmix on the GPU; EMA, gradient clipping, the
    paper's schedule), images/s measured on steady-state training batches (needs fastai).

Usage:
    python benchmarks/train_bench.py [--models resvmamba_small] [--compiled] [--gpus 1,2] [--json out.json]
Writes a markdown section to --out and the numbers to --json:
{"gpu", "date", "versions",
 "models": {label: {"train_img_s", "infer_img_s", "peak_gib", "compiled", "gpus", ...}}}.
"""

import argparse
import datetime
import json
import os
import subprocess
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def _step_fn(model, opt, x, y):
    "One training step: bf16 autocast forward, backward, clipping at 5, fused AdamW."

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def _timed(fn, n):
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / n


def model_only(name, steps=20, warmup=5, bs=128, size=224, compiled=False, infer_steps=10, grad_ckpt=False):
    "Training and inference images/s and training peak GiB on synthetic tensors, one GPU."
    import torch._dynamo

    from resvmamba.models import create_model

    torch.manual_seed(0)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    model = create_model(name, num_classes=241).cuda().train()
    if grad_ckpt:  # each stage's blocks recomputed in the backward (timm's checkpoint_seq)
        model.set_grad_checkpointing(True)
    run = torch.compile(model) if compiled else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.999), weight_decay=0.05, fused=True)
    x = torch.randn(bs, 3, size, size, device="cuda")
    y = torch.randint(0, 241, (bs,), device="cuda")
    step = _step_fn(run, opt, x, y)
    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    warm_s = time.perf_counter() - t0
    torch.cuda.reset_peak_memory_stats()
    st = _timed(step, steps)
    peak = torch.cuda.max_memory_allocated() / 2**30
    c = torch._dynamo.utils.counters
    graphs, breaks = c["stats"]["unique_graphs"], sum(c["graph_break"].values())
    print(
        f"{name} (compiled={compiled}) training: {bs / st:.1f} img/s, {st * 1e3:.1f} ms/step, "
        f"peak {peak:.2f} GiB, "
        f"warm-up {warm_s:.1f} s, dynamo graphs {graphs}, graph breaks {breaks} {dict(c['graph_break'])}",
        flush=True,
    )
    if not infer_steps:  # training only: a compiled model's eval mode would compile a second graph
        infer_steps, it = None, float("nan")
    run.eval()

    def infer():
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            run(x)

    if infer_steps:
        for _ in range(3):
            infer()
        it = _timed(infer, infer_steps)
    out = dict(
        train_img_s=bs / st,
        infer_img_s=bs / it,
        peak_gib=peak,
        compiled=compiled,
        gpus=1,
        ms_step=st * 1e3,
        warmup_s=warm_s,
        dynamo_graphs=graphs,
        graph_breaks=breaks,
        batch_per_gpu=bs,
        size=size,
        grad_ckpt=grad_ckpt,
    )
    model = run = opt = step = None  # drop every reference (the closures' too), so the cache can be emptied
    torch.cuda.empty_cache()
    return out


def _ddp_worker(rank, world, name, steps, warmup, bs, size, port, q):
    "One DDP process: its own GPU, batch `bs`; rank 0 reports images/s over all ranks."
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from resvmamba.models import create_model

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", rank=rank, world_size=world, device_id=torch.device("cuda", rank))
    try:
        torch.manual_seed(0)
        # conv weights channels-last, the layout their gradients come back in (as
        # resvmamba.train.match_grad_layout does; that module needs fastai, which this GPU image lacks): no
        # "grad strides do not match bucket view strides"
        model = DDP(
            create_model(name, num_classes=241).cuda().train().to(memory_format=torch.channels_last),
            device_ids=[rank],
        )
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05, fused=True)
        g = torch.Generator(device="cuda").manual_seed(rank)
        x = torch.randn(bs, 3, size, size, device="cuda", generator=g)
        y = torch.randint(0, 241, (bs,), device="cuda", generator=g)
        step = _step_fn(model, opt, x, y)
        for _ in range(warmup):
            step()
        dist.barrier()
        torch.cuda.reset_peak_memory_stats()
        st = _timed(step, steps)
        dist.barrier()
        if rank == 0:
            q.put(
                dict(
                    train_img_s=world * bs / st,
                    peak_gib=torch.cuda.max_memory_allocated() / 2**30,
                    compiled=False,
                    gpus=world,
                    ms_step=st * 1e3,
                    batch_per_gpu=bs,
                )
            )
    finally:
        dist.destroy_process_group()


def ddp(name, gpus, steps=20, warmup=5, bs=128, size=224):
    "Training images/s of `name` on `gpus` GPUs of this host under DistributedDataParallel."
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    mp.start_processes(
        _ddp_worker,
        args=(gpus, name, steps, warmup, bs, size, 29500 + os.getpid() % 1000, q),
        nprocs=gpus,
        join=True,
        start_method="spawn",
    )
    return q.get(timeout=60)


def _draw(args):
    "Draw and save one generated dish (for the parallel dataset build)."
    from resvmamba.data import draw_dish

    path, c, size, seed = args
    draw_dish(c, size, np.random.default_rng(seed)).save(path, quality=90)


def make_bench_data(root, n_classes=8, per_class=40, n_test=4, size=512, repeat=12, workers=16):
    "A generated dataset in CNFOOD-241's layout whose training list names each image `repeat` times."
    root = Path(root)
    jobs, lists = [], {"train": [], "val": [], "test": []}
    for folder, n, part in (("train600x600", per_class, 0), ("val600x600", n_test, 1)):
        for c in range(n_classes):
            (root / folder / f"{c:03d}").mkdir(parents=True, exist_ok=True)
            for i in range(n):
                f = f"{c:03d}/{c:03d}{i:05d}.jpg"
                jobs.append((root / folder / f, c, size, hash((part, c, i)) % 2**32))
                lists["test" if part else ("val" if i < 2 else "train")].append(f"{f} {c}")
    with Pool(workers) as p:
        p.map(_draw, jobs)
    (root / "splits").mkdir(exist_ok=True)
    # the same files, read again: a long epoch
    (root / "splits/train.txt").write_text("\n".join(lists["train"] * repeat) + "\n")
    for s in ("val", "test"):
        (root / "splits" / f"{s}.txt").write_text("\n".join(lists[s]) + "\n")
    return root, len(lists["train"]) * repeat


def end_to_end(name, data, workers=15, bs=128, size=224, skip=5):
    "Images/s (steady-state training batches) and peak GiB of one epoch of `food_learner(...).fit_paper`."
    from fastai.callback.core import Callback
    from fastai.callback.progress import ProgressCallback

    from resvmamba.learner import food_learner

    class Clock(Callback):
        order = 99

        def before_fit(self):
            self.ts = []

        def after_batch(self):
            if self.training:
                torch.cuda.synchronize()
                self.ts.append(time.perf_counter())

        def before_validate(self):
            raise __import__("fastai").callback.core.CancelValidException  # training throughput only

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
    del learn
    torch.cuda.empty_cache()
    return ips, peak, len(ts), bool(amp)


def versions():
    import fastai
    import timm
    import triton

    drv = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return (
        f"GPU: {drv}; torch {torch.__version__} (CUDA {torch.version.cuda}), triton {triton.__version__}, "
        f"timm {timm.__version__}, "
        f"fastai {fastai.__version__}; {os.cpu_count()} CPU cores"
    )


def gpu_versions():
    import timm
    import triton

    drv = (
        subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
        )
        .stdout.strip()
        .splitlines()
    )
    return dict(
        gpu=drv[0].split(",")[0],
        gpus_present=len(drv),
        driver=drv[0].split(",")[1].strip(),
        torch=torch.__version__,
        cuda=torch.version.cuda,
        triton=triton.__version__,
        timm=timm.__version__,
        cpu_cores=os.cpu_count(),
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="train_bench.md")
    ap.add_argument("--json", default=None)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--infer-steps", type=int, default=10, help="0: training only (no inference timing)")
    ap.add_argument("--workers", type=int, default=15)
    ap.add_argument("--data", default="/tmp/bench_food")
    ap.add_argument("--models", default="resvmamba_small")
    ap.add_argument("--e2e", action="store_true")
    ap.add_argument("--compiled", action="store_true", help="also time torch.compile(model)")
    ap.add_argument("--eager", type=int, default=1, help="0: skip the eager one-GPU run")
    ap.add_argument(
        "--sizes", default="224/128", help="comma-separated image size/batch pairs, e.g. 224/128,384/64"
    )
    ap.add_argument("--grad-ckpt", action="store_true", help="also time set_grad_checkpointing(True) (eager)")
    ap.add_argument("--tag", default="", help="appended to every label (e.g. the library version timed)")
    ap.add_argument(
        "--gpus", default="1", help="comma-separated GPU counts for the training step, e.g. 1,2 (2+: DDP)"
    )
    a = ap.parse_args()
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    v = gpu_versions()
    res = dict(
        gpu=v["gpu"],
        date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        versions=v,
        models={},
    )

    def save():
        if a.json:
            Path(a.json).write_text(json.dumps(res, indent=1))

    def attempt(label, f, *args, **kw):
        "Run one measurement; an error (out of memory, say) is recorded instead of ending the run."
        try:
            r = f(*args, **kw)
        except Exception as e:
            import traceback

            traceback.print_exc()
            torch.cuda.empty_cache()
            r = dict(error=f"{type(e).__name__}: {str(e)[:200]}")
        res["models"][label] = r
        save()
        print(
            f"{label}: "
            + ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items()),
            flush=True,
        )
        return r

    if a.json and Path(a.json).exists():
        res["models"] = json.loads(Path(a.json).read_text())["models"]  # add to a run
    sizes = [tuple(int(v) for v in sb.split("/")) for sb in a.sizes.split(",")]
    for n in a.models.split(","):
        for size, bs in sizes:
            lab = n if (size, bs) == (224, 128) and not a.tag else f"{n} {size}²/{bs}{a.tag}"
            for g in (int(x) for x in a.gpus.split(",")):
                if g == 1 and a.eager:
                    attempt(lab, model_only, n, a.steps, a.warmup, bs, size)
                if g > 1:
                    attempt(f"{lab} ({g} GPUs, DDP)", ddp, n, g, a.steps, a.warmup, bs, size)
            if a.grad_ckpt:
                attempt(
                    f"{lab} (grad checkpointing)", model_only, n, a.steps, a.warmup, bs, size, grad_ckpt=True
                )
            if a.compiled:
                attempt(
                    f"{lab} (torch.compile)",
                    model_only,
                    n,
                    a.steps,
                    a.warmup + 3,
                    bs,
                    size,
                    compiled=True,
                    infer_steps=a.infer_steps,
                )
    if a.e2e:
        t = time.time()
        data, n_train = make_bench_data(a.data)
        for n in a.models.split(","):
            attempt(
                f"{n} (end to end, food_learner)",
                lambda: dict(
                    zip(("train_img_s", "peak_gib", "batches", "bf16"), end_to_end(n, data, a.workers))
                ),
            )
    md = [
        "## Training throughput (`benchmarks/train_bench.py`)",
        "",
        f"{res['date']}. {v}.",
        "",
        "| model | GPUs | compiled | train img/s | infer img/s | peak GiB |",
        "|---|---|---|---|---|---|",
    ]
    for k, r in res["models"].items():
        md.append(
            f"| {k} | {r.get('gpus', '')} | {r.get('compiled', '')} | "
            f"{r.get('train_img_s', float('nan')):.1f} | "
            f"{r.get('infer_img_s', float('nan')):.1f} | {r.get('peak_gib', float('nan')):.1f} |"
        )
    text = "\n".join(md) + "\n"
    Path(a.out).write_text(text)
    print(text)
