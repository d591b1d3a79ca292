"""`resvmamba_train` with a clock: the console script itself, with one extra callback that prints, per epoch,
when the first training batch finished (compilation included), the steady training images/s (all processes),
the validation seconds, the peak GPU memory and dynamo's graph and graph-break counts. Used by
tools/compile_check.sh.

    python tools/compile_cli.py <resvmamba_train options>
    accelerate launch ... tools/compile_cli.py <resvmamba_train options>

Also: `python tools/compile_cli.py --make-data DEST` writes a generated dataset in CNFOOD-241's layout whose
files are copies of a few drawings (long epochs from few drawn JPEGs, drawn in parallel), with a partial last
validation batch at batch 128.
"""

import shutil
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np


def _draw(job):
    from resvmamba.data import draw_dish

    path, c, size, seed = job
    draw_dish(c, size, np.random.default_rng(seed)).save(path, quality=90)


def make_data(
    root, n_classes=8, per_class=40, n_test=4, size=256, train_repeat=8, val_repeat=120, workers=16
):
    """Train: 8 × 38 drawings, each in 8 files (2,432 images); val: 8 × 2 in 120 files plus 13 (1,933: the
    last batch of 128 is partial)."""
    root, jobs, lists = Path(root), [], {"train": [], "val": [], "test": []}
    for folder, n, part in (("train600x600", per_class, 0), ("val600x600", n_test, 1)):
        for c in range(n_classes):
            (root / folder / f"{c:03d}").mkdir(parents=True, exist_ok=True)
            for i in range(n):
                f = f"{c:03d}/{c:03d}{i:05d}.jpg"
                jobs.append((root / folder / f, c, size, 1000 * part + 100 * c + i))
                lists["test" if part else ("val" if i < 2 else "train")].append((f, c))
    with Pool(workers) as p:
        p.map(_draw, jobs)

    def copies(rows, k, extra=0):  # the split lists refuse a file named twice: copies under new names
        out = []
        for r in range(k + 1):
            for f, c in rows if r < k else rows[:extra]:
                g = f if r == 0 else f.replace(".jpg", f"_{r}.jpg")
                if r:
                    shutil.copyfile(root / "train600x600" / f, root / "train600x600" / g)
                out.append(f"{g} {c}")
        return out

    rows = dict(
        train=copies(lists["train"], train_repeat),
        val=copies(lists["val"], val_repeat, 13),
        test=[f"{f} {c}" for f, c in lists["test"]],
    )
    (root / "splits").mkdir(exist_ok=True)
    for name, r in rows.items():
        (root / "splits" / f"{name}.txt").write_text("\n".join(r) + "\n")
    print(
        f"data: {len(rows['train'])} training, {len(rows['val'])} validation, "
        f"{len(rows['test'])} test images in {root}"
    )


def clock_callback():
    import torch._dynamo
    from fastai.callback.core import Callback
    from fastai.torch_core import num_distrib

    class Clock(Callback):
        "Per-epoch timings of the fit it is part of (rank 0 prints)."

        order, skip = 99, 3  # after every other callback; the first `skip` batches of an epoch are warm-up

        def before_fit(self):
            if hasattr(self, "gather_preds"):
                self.run = False
                return
            self.t0, self.first, self.ts, self.val_s = (
                time.perf_counter(),
                None,
                [],
                0.0,
            )  # a resumed fit skips the first epochs' before_epoch
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()

        def before_epoch(self):
            self.ts, self.val_s = [], 0.0

        def after_batch(self):
            if not self.training:
                return
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.ts.append(time.perf_counter())
            if self.first is None:
                self.first = self.ts[-1] - self.t0
                print(
                    f"clock: first training batch done {self.first:.1f} s after the fit started", flush=True
                )

        def before_validate(self):
            self.tv = time.perf_counter()

        def after_validate(self):
            self.val_s = time.perf_counter() - self.tv

        def after_epoch(self):
            ts = self.ts[self.skip :]
            if len(ts) < 2:
                return  # a skipped (already checkpointed) epoch
            ips = self.dls.train.bs * max(num_distrib(), 1) * (len(ts) - 1) / (ts[-1] - ts[0])
            c = torch._dynamo.utils.counters
            peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0
            print(
                f"clock: epoch {self.epoch}: {len(self.ts)} training batches, "
                f"steady {ips:.1f} img/s (all processes), validation {self.val_s:.1f} s, "
                f"peak {peak:.2f} GiB, "
                f"dynamo graphs {c['stats']['unique_graphs']}, "
                f"graph breaks {sum(c['graph_break'].values())}",
                flush=True,
            )

    return Clock()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--make-data"]:
        make_data(sys.argv[2])
        sys.exit()
    import resvmamba.train as rt

    make = rt.food_learner

    def food_learner_with_clock(*args, **kw):
        learn = make(*args, **kw)
        learn.add_cb(clock_callback())
        print(f"clock: model compiled: {learn.model._compiled_call_impl is not None}", flush=True)
        return learn

    rt.food_learner = food_learner_with_clock
    rt.resvmamba_train()
